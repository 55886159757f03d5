"""MegaDetector v5 (YOLOv5x6) through PytorchWildlife's ``MegaDetectorV5`` and the yolov5 package.

NOT weights-only, and it cannot be: yolov5 checkpoints pickle whole nn.Module objects
(models.yolo.Model & co), yolov5 has no restricted loader, and PytorchWildlife loads them with
torch.hub.load_state_dict_from_url(weights_only=False). What protects the worker is require()
matching the file to MegaDetector's published MD5 or to its lock entry before this, and the
unpickled bytes being that checked file (verified_copy).
"""
from __future__ import annotations

import os
import site
import sys
from pathlib import Path

import numpy as np
import torch

from wildswarm.pipeline.detections import sorted_detections
from wildswarm.pipeline.families import _onnx
from wildswarm.pipeline.families._lean import lean_import
from wildswarm.pipeline.safeload import verified_copy
from wildswarm.pipeline.specs import ModelSpec, Weights

KIND = "detector"


def untrained_checkpoint(s: ModelSpec) -> dict:
    sys.path.insert(0, os.path.join(site.getsitepackages()[0], "yolov5"))  # as PytorchWildlife does
    import yolov5
    from yolov5.models.yolo import Model
    model = Model(str(Path(yolov5.__file__).parent / "models" / "hub" / s.arch), nc=3)  # not relative to cwd
    model.names = ["animal", "person", "vehicle"]
    return {"model": model.half(), "epoch": -1, "untrained": True}


def load(weights: Weights, *, device: str, image_size: int, threshold: float, **_) -> "Detector":
    return Detector(weights, device=device, image_size=image_size, threshold=threshold)


class Detector:
    def __init__(self, weights: Weights, *, device: str, image_size: int, threshold: float):
        # MegaDetectorV5(weights=...) uses torch.load's weights-only default (torch>=2.6) and fails;
        # its pretrained route loads from torch hub's cache, so a private hub folder holds the file.
        pw_trans = lean_import("PytorchWildlife.data.transforms")
        MegaDetectorV5 = lean_import("PytorchWildlife.models.detection.ultralytics_based.megadetectorv5").MegaDetectorV5
        self.weights = weights
        self.image_size = image_size
        self.threshold = threshold
        previous = torch.hub.get_dir()
        with verified_copy(weights, subdir="checkpoints") as path:
            torch.hub.set_dir(str(path.parent.parent))
            try:
                md = MegaDetectorV5(device=device, pretrained=True, version=weights.spec.options["version"])
            finally:
                torch.hub.set_dir(previous)
        md.transform = pw_trans.MegaDetector_v5_Transform(target_size=image_size, stride=md.STRIDE)
        self._md = md
        self.runtime = None

    def probe(self, frames: list[np.ndarray]) -> np.ndarray:
        return torch.stack([self._md.transform(f) for f in frames]).numpy()

    def raw(self, x: np.ndarray, runtime=None) -> dict[str, np.ndarray]:
        """Boxes (xywh, pixels), objectness and class scores of every anchor, before non-maximum suppression."""
        if runtime is None:
            y = self._md.model(torch.from_numpy(x).to(self._md.device))[0].float().cpu().numpy()
        else:
            y = runtime(x)[0]
        return {"boxes": y[..., :4], "scores": y[..., 4:]}

    def detect(self, frames: list[np.ndarray]) -> list:
        from yolov5.utils.general import non_max_suppression, scale_boxes
        x = self.probe(frames)
        preds = torch.from_numpy(self.runtime(x)[0]) if self.runtime is not None else \
            self._md.model(torch.from_numpy(x).to(self._md.device))[0]
        out = []
        for f, p in zip(frames, non_max_suppression(prediction=preds, conf_thres=self.threshold)):
            p = p.cpu().numpy()
            if len(p):
                p[:, :4] = scale_boxes([self.image_size] * 2, p[:, :4], f.shape).round()
            out.append(sorted_detections(p[:, :4], p[:, 4], p[:, 5]))
        return out

    def export_onnx(self, dest: Path) -> None:
        net = self._md.model.float().eval()
        _onnx.export(net, torch.zeros(1, 3, self.image_size, self.image_size), dest, outputs=["predictions"],
                     pick=lambda y: (y[0],), dynamic_hw=True)

    def networks(self) -> list:
        return [self._md.model]

    def use(self, runtime) -> None:
        self.runtime = runtime
