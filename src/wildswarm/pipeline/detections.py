"""Detections as the pipeline passes them around: ``supervision.Detections``, sorted by confidence,
with MegaDetector's class ids (0 animal, 1 person, 2 vehicle)."""
from __future__ import annotations

import numpy as np
import supervision as sv

Detections = sv.Detections
CLASS_NAMES = {0: "animal", 1: "person", 2: "vehicle"}
ANIMAL = 0


def animals(det: sv.Detections) -> sv.Detections:
    return det[det.class_id == ANIMAL] if len(det) else det


def empty() -> sv.Detections:
    return sv.Detections.empty()


def sorted_detections(xyxy, conf, cls) -> sv.Detections:
    """Detections from boxes, confidences and classes, most confident first (none: empty)."""
    conf = np.asarray(conf, np.float32).reshape(-1)
    if not len(conf):
        return empty()
    order = np.argsort(-conf, kind="stable")
    return sv.Detections(xyxy=np.asarray(xyxy, np.float32).reshape(-1, 4)[order],
                         confidence=conf[order], class_id=np.asarray(cls, int).reshape(-1)[order])
