"""MegaDetector (and an optional species classifier) -> ``supervision.Detections``.

Models are PytorchWildlife's own classes; frames go through them in batches.
Detections per frame are sorted by confidence; class ids are MegaDetector's
(0 animal, 1 person, 2 vehicle). A classifier adds ``data["species"]`` and
``data["species_confidence"]`` for each animal box.
"""
from __future__ import annotations

import os

import numpy as np
import supervision as sv
import torch

from wildswarm.pipeline.models import Weights
from wildswarm.pipeline.safeload import check_weights_only, ultralytics_weights_only, verified_copy

Detections = sv.Detections
CLASS_NAMES = {0: "animal", 1: "person", 2: "vehicle"}
ANIMAL = 0


def animals(det: sv.Detections) -> sv.Detections:
    return det[det.class_id == ANIMAL] if len(det) else det


def _empty() -> sv.Detections:
    return sv.Detections.empty()


def _sorted(xyxy, conf, cls) -> sv.Detections:
    order = np.argsort(-conf, kind="stable")
    return sv.Detections(xyxy=np.asarray(xyxy, np.float32)[order].reshape(-1, 4),
                         confidence=np.asarray(conf, np.float32)[order],
                         class_id=np.asarray(cls, int)[order])


class Detector:
    """A MegaDetector through PytorchWildlife, batched over frames."""

    def __init__(self, weights: Weights, *, device: str, image_size: int, threshold: float):
        os.environ.setdefault("YOLO_OFFLINE", "1")
        self.weights = weights
        self.device = device
        self.image_size = image_size
        self.threshold = threshold
        family = weights.spec.family
        if family == "ultralytics":
            self._load_ultralytics()
        elif family == "yolov5":
            self._load_yolov5()
        else:
            raise ValueError(f"not a detector family: {family}")

    # --- loading -------------------------------------------------------------------------------
    def _load_ultralytics(self) -> None:
        # Weights-only: ultralytics' restricted loader (an allow-list of its own and torch's nn.Module
        # classes) unpickles a private copy of the checked file.
        from PytorchWildlife.models.detection import MegaDetectorV6
        threads = torch.get_num_threads()  # ultralytics' select_device lowers it to cores - 1
        with verified_copy(self.weights) as path, ultralytics_weights_only():
            md = MegaDetectorV6(weights=str(path), device=self.device, pretrained=False,
                                version=self.weights.spec.options["version"])
            predictor = md.predictor
            predictor.args.imgsz = self.image_size
            predictor.args.conf = self.threshold
            predictor.args.verbose = False
            # Letterbox to the smallest stride-aligned rectangle (640x384 for 16:9), as ultralytics'
            # own predict does, instead of PytorchWildlife's square padding: about 40% less compute.
            predictor.args.rect = True
            if str(predictor.device) != str(torch.device(self.device)):
                predictor.args.device = self.device  # PytorchWildlife leaves the choice to ultralytics
                predictor.setup_model(str(path))
        torch.set_num_threads(threads)
        self._md = md
        self._run = self._run_ultralytics

    def _load_yolov5(self) -> None:
        # MegaDetectorV5(weights=...) uses torch.load's weights-only default (torch>=2.6) and fails;
        # its pretrained route loads from torch hub's cache, so a private hub folder holds the file.
        # NOT weights-only, and it cannot be: yolov5 checkpoints pickle whole nn.Module objects
        # (models.yolo.Model & co), yolov5 has no restricted loader, and PytorchWildlife loads them
        # with torch.hub.load_state_dict_from_url(weights_only=False). What protects the worker is
        # require() matching the file to MegaDetector's published MD5 or to its lock entry before
        # this line, and the unpickled bytes being that checked file (verified_copy).
        from PytorchWildlife.models.detection import MegaDetectorV5
        previous = torch.hub.get_dir()
        with verified_copy(self.weights, subdir="checkpoints") as path:
            torch.hub.set_dir(str(path.parent.parent))
            try:
                md = MegaDetectorV5(device=self.device, pretrained=True, version=self.weights.spec.options["version"])
            finally:
                torch.hub.set_dir(previous)
        from PytorchWildlife.data import transforms as pw_trans
        md.transform = pw_trans.MegaDetector_v5_Transform(target_size=self.image_size, stride=md.STRIDE)
        self._md = md
        self._run = self._run_yolov5

    # --- inference ---------------------------------------------------------------------------
    def detect(self, frames: list[np.ndarray]) -> list[sv.Detections]:
        """Detections for each RGB frame of the batch."""
        if not frames:
            return []
        with torch.inference_mode():
            return self._run(frames)

    def _run_ultralytics(self, frames: list[np.ndarray]) -> list[sv.Detections]:
        predictor = self._md.predictor
        predictor.args.batch = len(frames)
        # ultralytics reads numpy images as BGR (OpenCV order); our frames are RGB
        out = []
        for res in predictor.stream_inference([np.ascontiguousarray(f[..., ::-1]) for f in frames]):
            b = res.boxes
            out.append(_sorted(b.xyxy.cpu().numpy(), b.conf.cpu().numpy(), b.cls.cpu().numpy()) if len(b) else _empty())
        return out

    def _run_yolov5(self, frames: list[np.ndarray]) -> list[sv.Detections]:
        from yolov5.utils.general import non_max_suppression, scale_boxes
        md = self._md
        batch = torch.stack([md.transform(f) for f in frames]).to(md.device)
        preds = md.model(batch)[0]
        out = []
        for f, p in zip(frames, non_max_suppression(prediction=preds, conf_thres=self.threshold)):
            p = p.cpu().numpy()
            if not len(p):
                out.append(_empty())
                continue
            p[:, :4] = scale_boxes([self.image_size] * 2, p[:, :4], f.shape).round()
            out.append(_sorted(p[:, :4], p[:, 4], p[:, 5]))
        return out


class Classifier:
    """A PytorchWildlife species classifier applied to each animal box."""

    def __init__(self, weights: Weights, *, device: str):
        import PytorchWildlife.models.classification as pw_cls
        cls = getattr(pw_cls, weights.spec.options["module"])
        self.weights = weights
        with verified_copy(weights) as path:
            check_weights_only(path)  # PytorchWildlife leaves weights_only to torch's default
            self.model = cls(weights=str(path), device=device, pretrained=False)
        self.device = device
        self.names = dict(self.model.CLASS_NAMES)

    def classify(self, frames: list[np.ndarray], detections: list[sv.Detections], max_animals: int) -> None:
        """Add ``species`` and ``species_confidence`` to each animal box, in place."""
        from PIL import Image
        crops, where = [], []
        for i, (frame, det) in enumerate(zip(frames, detections)):
            det.data["species"] = np.full(len(det), "", dtype=object)
            det.data["species_confidence"] = np.zeros(len(det), np.float32)
            for j in np.flatnonzero(det.class_id == ANIMAL)[:max_animals]:
                x1, y1, x2, y2 = det.xyxy[j].astype(int)
                crop = frame[max(y1, 0):max(y2, y1 + 1), max(x1, 0):max(x2, x1 + 1)]
                if crop.size == 0:
                    continue
                crops.append(self.model.transform(Image.fromarray(crop)))
                where.append((i, j))
        if not crops:
            return
        with torch.inference_mode():
            logits = self.model.forward(torch.stack(crops).to(self.device))
            probs = torch.softmax(logits, dim=1).cpu().numpy()
        for (i, j), p in zip(where, probs):
            k = int(p.argmax())
            detections[i].data["species"][j] = self.names.get(k, str(k))
            detections[i].data["species_confidence"][j] = float(p[k])
