"""MegaDetector v6 (YOLOv9/YOLOv10) through PytorchWildlife's ``MegaDetectorV6`` and ultralytics.

Detections come from ultralytics' own predictor (letterbox, inference, non-maximum suppression,
boxes back to the frame); an exported runtime replaces only its inference step, so pre- and
post-processing are the same code whichever backend runs the network.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from wildswarm.pipeline.detections import sorted_detections
from wildswarm.pipeline.families._lean import lean_import
from wildswarm.pipeline.safeload import ultralytics_weights_only, verified_copy
from wildswarm.pipeline.specs import ModelSpec, Weights

KIND = "detector"
NAMES = {0: "animal", 1: "person", 2: "vehicle"}


def untrained_checkpoint(s: ModelSpec) -> dict:
    from ultralytics.nn.tasks import DetectionModel
    model = DetectionModel(s.arch, nc=3, verbose=False)
    model.names = dict(NAMES)
    return {"model": model.half(), "train_args": {}, "epoch": -1, "untrained": True}


def load(weights: Weights, *, device: str, image_size: int, threshold: float, **_) -> "Detector":
    return Detector(weights, device=device, image_size=image_size, threshold=threshold)


class Detector:
    def __init__(self, weights: Weights, *, device: str, image_size: int, threshold: float):
        # Weights-only: ultralytics' restricted loader (an allow-list of its own and torch's nn.Module
        # classes) unpickles a private copy of the checked file.
        os.environ.setdefault("YOLO_OFFLINE", "1")
        MegaDetectorV6 = lean_import("PytorchWildlife.models.detection.ultralytics_based.megadetectorv6").MegaDetectorV6
        self.weights = weights
        self.device = device
        self.image_size = image_size
        threads = torch.get_num_threads()  # ultralytics' select_device lowers it to cores - 1
        with verified_copy(weights) as path, ultralytics_weights_only():
            md = MegaDetectorV6(weights=str(path), device=device, pretrained=False, version=weights.spec.options["version"])
            predictor = md.predictor
            predictor.args.imgsz = image_size
            predictor.args.conf = threshold
            predictor.args.verbose = False
            # Letterbox to the smallest stride-aligned rectangle (640x384 for 16:9), as ultralytics'
            # own predict does, instead of PytorchWildlife's square padding: about 40% less compute.
            predictor.args.rect = True
            if str(predictor.device) != str(torch.device(device)):
                predictor.args.device = device  # PytorchWildlife leaves the choice to ultralytics
                predictor.setup_model(str(path))
        torch.set_num_threads(threads)
        self._md = md
        self.predictor = predictor
        self.runtime = None
        self._captured: list[torch.Tensor] | None = None
        self._torch_inference = predictor.inference
        predictor.inference = self._inference

    # --- inference ------------------------------------------------------------------------------
    def _inference(self, im: torch.Tensor, *args, **kwargs):
        if self._captured is not None:
            self._captured.append(im)
            raise _Captured
        if self.runtime is None:
            return self._torch_inference(im, *args, **kwargs)
        return torch.from_numpy(self.runtime(im.cpu().numpy())[0])

    def detect(self, frames: list[np.ndarray]) -> list:
        predictor = self.predictor
        predictor.args.batch = len(frames)
        # ultralytics reads numpy images as BGR (OpenCV order); our frames are RGB
        out = []
        for res in predictor.stream_inference([np.ascontiguousarray(f[..., ::-1]) for f in frames]):
            b = res.boxes
            out.append(sorted_detections(b.xyxy.cpu().numpy(), b.conf.cpu().numpy(), b.cls.cpu().numpy()))
        return out

    # --- backends -------------------------------------------------------------------------------
    def probe(self, frames: list[np.ndarray]) -> np.ndarray:
        """The letterboxed batch the predictor feeds the network for ``frames``."""
        self._captured = []
        try:
            self.detect(frames)
        except _Captured:
            return self._captured[0].cpu().numpy()
        finally:
            self._captured = None
        raise AssertionError("the predictor never reached its inference step")

    def raw(self, x: np.ndarray, runtime=None) -> dict[str, np.ndarray]:
        """Boxes (xywh, pixels) and class scores of every anchor, before non-maximum suppression."""
        if runtime is None:
            y = self.predictor.model(torch.from_numpy(x).to(self.predictor.device))
            y = (y[0] if isinstance(y, (list, tuple)) else y).float().cpu().numpy()
        else:
            y = runtime(x)[0]
        return {"boxes": y[:, :4], "scores": y[:, 4:]}

    def export_onnx(self, dest: Path) -> None:
        """Through ultralytics' own exporter: batch and image size free, not simplified (onnxslim is
        not a dependency), fp32."""
        from ultralytics import YOLO
        from ultralytics.utils import LOGGER
        level = LOGGER.level
        LOGGER.setLevel(logging.WARNING)  # its exporter reports every step at INFO, verbose or not
        try:
            self._export(YOLO, dest)
        finally:
            LOGGER.setLevel(level)

    def _export(self, YOLO, dest: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="wildswarm-export-") as tmp, \
                verified_copy(self.weights) as path, ultralytics_weights_only():
            src = Path(tmp) / path.name
            shutil.copyfile(path, src)
            out = YOLO(str(src), task="detect").export(format="onnx", dynamic=True, simplify=False, imgsz=self.image_size,
                                                       device="cpu", verbose=False)
            shutil.move(out, dest)

    def networks(self) -> list:
        # AutoBackend keeps the DetectionModel in a plain attribute of its backend object, so its
        # parameters() do not reach it: name both.
        nets = [self.predictor.model]
        inner = getattr(getattr(self.predictor.model, "backend", None), "model", None)
        if isinstance(inner, torch.nn.Module):
            nets.append(inner)
        return nets

    def use(self, runtime) -> None:
        self.runtime = runtime
        self.predictor.done_warmup = runtime is not None or self.predictor.done_warmup


class _Captured(Exception):
    """Raised by the inference step under ``probe``: the batch is wanted, not the network's answer."""
