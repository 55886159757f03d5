"""PytorchWildlife's ResNet species classifiers, applied to each animal box."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from wildswarm.pipeline.detections import ANIMAL
from wildswarm.pipeline.families import _onnx
from wildswarm.pipeline.families._lean import lean_import
from wildswarm.pipeline.safeload import check_weights_only, verified_copy
from wildswarm.pipeline.specs import ModelSpec, Weights

KIND = "classifier"
RESNETS = "PytorchWildlife.models.classification.resnet_base"   # its ResNet classifiers, and no more


def untrained_checkpoint(s: ModelSpec) -> dict:
    PlainResNetClassifier = lean_import(f"{RESNETS}.base_classifier").PlainResNetClassifier
    net = PlainResNetClassifier(num_cls=s.options["num_cls"], num_layers=s.options["num_layers"])
    return {"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}, "untrained": True}


def load(weights: Weights, *, device: str, **_) -> "Classifier":
    return Classifier(weights, device=device)


class Classifier:
    def __init__(self, weights: Weights, *, device: str):
        cls = getattr(lean_import(RESNETS), weights.spec.options["module"])
        self.weights = weights
        with verified_copy(weights) as path:
            check_weights_only(path)  # PytorchWildlife leaves weights_only to torch's default
            self.model = cls(weights=str(path), device=device, pretrained=False)
        self.device = device
        self.names = dict(self.model.CLASS_NAMES)
        self.runtime = None

    def _crops(self, frames, detections, max_animals: int, *, annotate: bool):
        from PIL import Image
        crops, where = [], []
        for i, (frame, det) in enumerate(zip(frames, detections)):
            if annotate:
                det.data["species"] = np.full(len(det), "", dtype=object)
                det.data["species_confidence"] = np.zeros(len(det), np.float32)
            for j in np.flatnonzero(det.class_id == ANIMAL)[:max_animals]:
                x1, y1, x2, y2 = det.xyxy[j].astype(int)
                crop = frame[max(y1, 0):max(y2, y1 + 1), max(x1, 0):max(x2, x1 + 1)]
                if crop.size == 0:
                    continue
                crops.append(self.model.transform(Image.fromarray(crop)))
                where.append((i, j))
        return crops, where

    def _logits(self, x: np.ndarray, runtime=None) -> np.ndarray:
        if runtime is None:
            with torch.inference_mode():
                return self.model.forward(torch.from_numpy(x).to(self.device)).float().cpu().numpy()
        return runtime(x)[0]

    def classify(self, frames: list[np.ndarray], detections: list, max_animals: int) -> None:
        """Add ``species`` and ``species_confidence`` to each animal box, in place."""
        crops, where = self._crops(frames, detections, max_animals, annotate=True)
        if not crops:
            return
        probs = _softmax(self._logits(torch.stack(crops).numpy(), self.runtime))
        for (i, j), p in zip(where, probs):
            k = int(p.argmax())
            detections[i].data["species"][j] = self.names.get(k, str(k))
            detections[i].data["species_confidence"][j] = float(p[k])

    # --- backends -------------------------------------------------------------------------------
    def probe(self, frames: list[np.ndarray]) -> np.ndarray:
        """Crops of the middle of each frame (the classifier's input does not depend on a detector)."""
        from PIL import Image
        crops = []
        for f in frames:
            h, w = f.shape[:2]
            crops.append(self.model.transform(Image.fromarray(f[h // 4: 3 * h // 4, w // 4: 3 * w // 4])))
        return torch.stack(crops).numpy()

    def calibration(self, frames: list[np.ndarray], detections: list, max_animals: int) -> np.ndarray:
        """The crops ``classify`` gives the network for the animal boxes of ``detections`` (``max_animals``
        a frame at most, as it does); the probe's where there is none (INT8 calibration, ``quantize``)."""
        crops, _ = self._crops(frames, detections, max_animals, annotate=False)
        return torch.stack(crops).numpy() if crops else self.probe(frames)

    def raw(self, x: np.ndarray, runtime=None) -> dict[str, np.ndarray]:
        return {"probabilities": _softmax(self._logits(x, runtime))}

    def export_onnx(self, dest: Path) -> None:
        _onnx.export(self.model.eval(), torch.zeros(1, 3, self.model.IMAGE_SIZE, self.model.IMAGE_SIZE), dest, outputs=["logits"], pick=lambda y: (y,))

    def networks(self) -> list:
        return [self.model]

    def use(self, runtime) -> None:
        self.runtime = runtime


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)
