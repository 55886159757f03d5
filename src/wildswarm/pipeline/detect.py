"""MegaDetector (and an optional species classifier) -> ``supervision.Detections``.

The models are PytorchWildlife's own classes, run through their family's adapter
(``families``); frames go through them in batches. Detections per frame are sorted by
confidence; class ids are MegaDetector's (0 animal, 1 person, 2 vehicle). A classifier adds
``data["species"]`` and ``data["species_confidence"]`` for each animal box.
"""
from __future__ import annotations

import numpy as np
import supervision as sv
import torch

from wildswarm.pipeline import families
from wildswarm.pipeline.detections import ANIMAL, CLASS_NAMES, Detections, animals  # noqa: F401 (used from here)
from wildswarm.pipeline.specs import Weights


class Detector:
    """A MegaDetector, batched over frames."""

    def __init__(self, weights: Weights, *, device: str, image_size: int, threshold: float):
        family = families.adapter(weights.spec.family)
        if family.KIND != "detector":
            raise ValueError(f"not a detector family: {weights.spec.family}")
        self.weights = weights
        self.device = device
        self.image_size = image_size
        self.threshold = threshold
        self.model = family.load(weights, device=device, image_size=image_size, threshold=threshold)

    def detect(self, frames: list[np.ndarray]) -> list[sv.Detections]:
        """Detections for each RGB frame of the batch."""
        if not frames:
            return []
        with torch.inference_mode():
            return self.model.detect(frames)

    def calibration(self, frames: list[np.ndarray], detections: list[sv.Detections], max_animals: int) -> np.ndarray:
        """The network's input for ``frames`` (letterboxed as ``detect`` does): INT8 calibration."""
        return self.model.probe(frames)


class Classifier:
    """A species classifier applied to each animal box."""

    def __init__(self, weights: Weights, *, device: str):
        self.weights = weights
        self.device = device
        self.model = families.adapter(weights.spec.family).load(weights, device=device)
        self.names = self.model.names

    def classify(self, frames: list[np.ndarray], detections: list[sv.Detections], max_animals: int) -> None:
        """Add ``species`` and ``species_confidence`` to each animal box, in place."""
        self.model.classify(frames, detections, max_animals)

    def calibration(self, frames: list[np.ndarray], detections: list[sv.Detections], max_animals: int) -> np.ndarray:
        """The network's input for the first ``max_animals`` animal boxes of each frame's ``detections``
        (cropped as ``classify`` does), or for the middle of each frame where there is none: INT8
        calibration."""
        return self.model.calibration(frames, detections, max_animals)
