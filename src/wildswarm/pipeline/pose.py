"""SuperAnimal pose, top-down on MegaDetector's animal boxes: keypoints per animal, and a skeleton
to draw them with. The model runs through its family's adapter (``families.superanimal``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wildswarm.errors import PipelineError
from wildswarm.pipeline import families
from wildswarm.pipeline.detections import Detections, animals
from wildswarm.pipeline.specs import Weights

# A skeleton for drawing, by body-part name (DeepLabCut ships the SuperAnimal
# configs with an empty one). Edges whose parts a model lacks are skipped.
_SKELETON = [
    ("nose", "upper_jaw"), ("upper_jaw", "lower_jaw"), ("nose", "right_eye"), ("nose", "left_eye"),
    ("right_eye", "right_earbase"), ("right_earbase", "right_earend"),
    ("left_eye", "left_earbase"), ("left_earbase", "left_earend"),
    ("right_antler_base", "right_antler_end"), ("left_antler_base", "left_antler_end"),
    ("neck_base", "neck_end"), ("neck_end", "back_base"), ("throat_base", "throat_end"),
    ("back_base", "back_middle"), ("back_middle", "back_end"), ("back_end", "tail_base"),
    ("tail_base", "tail_end"),
    ("neck_end", "front_left_thai"), ("front_left_thai", "front_left_knee"), ("front_left_knee", "front_left_paw"),
    ("neck_end", "front_right_thai"), ("front_right_thai", "front_right_knee"),
    ("front_right_knee", "front_right_paw"),
    ("back_end", "back_left_thai"), ("back_left_thai", "back_left_knee"), ("back_left_knee", "back_left_paw"),
    ("back_end", "back_right_thai"), ("back_right_thai", "back_right_knee"), ("back_right_knee", "back_right_paw"),
    # top-view mouse
    ("nose", "head_midpoint"), ("left_ear", "head_midpoint"), ("right_ear", "head_midpoint"),
    ("head_midpoint", "neck"), ("neck", "mid_back"), ("mid_back", "mouse_center"),
    ("mouse_center", "mid_backend"), ("mid_backend", "mid_backend2"), ("mid_backend2", "mid_backend3"),
    ("mid_backend3", "tail_base"), ("tail_base", "tail1"), ("tail1", "tail2"), ("tail2", "tail3"),
    ("tail3", "tail4"), ("tail4", "tail5"), ("tail5", "tail_end"),
    ("neck", "left_shoulder"), ("left_shoulder", "left_midside"), ("left_midside", "left_hip"),
    ("neck", "right_shoulder"), ("right_shoulder", "right_midside"), ("right_midside", "right_hip"),
]

# who cuts the crops (families/superanimal.py): "auto", wildswarm on a GPU and DeepLabCut's runner on
# a CPU; "device", wildswarm on the model's device; "deeplabcut", always the runner. wildswarm's crops
# are used only where they pass their check against the runner's at load.
CROPS = ("auto", "device", "deeplabcut")
MIN_BOX = 4.0  # pixels: degenerate boxes are widened to this


@dataclass
class KeyPoints:
    """Pose of the animals in one frame: ``xy`` (n, K, 2) pixels, ``confidence`` (n, K)."""

    xy: np.ndarray
    confidence: np.ndarray

    @classmethod
    def empty(cls, k: int) -> "KeyPoints":
        return cls(np.zeros((0, k, 2), np.float32), np.zeros((0, k), np.float32))

    def __len__(self) -> int:
        return len(self.xy)


class PoseEstimator:
    def __init__(self, weights: Weights, *, device: str = "cpu", max_animals: int = 5, batch_size: int = 8,
                 crops: str = "auto"):
        if crops not in CROPS:
            raise PipelineError(f"unknown pose_crops {crops!r}; choose one of: {', '.join(CROPS)}")
        self.weights = weights
        self.max_animals = max_animals
        self.model = families.adapter(weights.spec.family).load(weights, device=device, max_animals=max_animals,
                                                                batch_size=batch_size, crops=crops)
        self.bodyparts: list[str] = self.model.bodyparts
        index = {b: i for i, b in enumerate(self.bodyparts)}
        self.skeleton = [(index[a], index[b]) for a, b in _SKELETON if a in index and b in index]

    def estimate(self, frames: list[np.ndarray], detections: list[Detections]) -> list[KeyPoints]:
        """Pose of each animal box, frame by frame (frames are RGB)."""
        k = len(self.bodyparts)
        results: list[KeyPoints | None] = [None] * len(frames)
        todo, contexts = self._contexts(frames, detections)
        for i in set(range(len(frames))) - set(todo):
            results[i] = KeyPoints.empty(k)
        if contexts:
            for i, poses, (_, ctx) in zip(todo, self.model.poses(contexts), contexts):
                poses = poses[: len(ctx["bboxes"])]
                results[i] = KeyPoints(poses[..., :2].copy(), poses[..., 2].copy())
        return results  # type: ignore[return-value]

    def _contexts(self, frames: list[np.ndarray], detections: list[Detections]) -> tuple[list[int], list]:
        """The frames with animals, and DeepLabCut's context (image, xywh boxes) for each."""
        todo, contexts = [], []
        for i, (frame, det) in enumerate(zip(frames, detections)):
            boxes = _clip(animals(det).xyxy[: self.max_animals], frame.shape[1], frame.shape[0])
            if len(boxes) == 0:
                continue
            xywh = np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]).astype(np.float32)
            todo.append(i)
            contexts.append((frame, {"bboxes": xywh, "bbox_scores": np.ones(len(xywh), np.float32)}))
        return todo, contexts

    def calibration(self, frames: list[np.ndarray], detections: list[Detections], max_animals: int) -> np.ndarray:
        """The crops ``estimate`` gives the network for the animal boxes of ``detections`` (its own
        ``max_animals`` a frame, which the pipeline sets to the same), and the probe's (the middle of
        the frame) for frames without one: INT8 calibration."""
        todo, contexts = self._contexts(frames, detections)
        parts = [self.model.runner_crops(contexts)] if contexts else []
        rest = [f for i, f in enumerate(frames) if i not in set(todo)]
        if rest:
            parts.append(self.model.probe(rest))
        return np.concatenate(parts)


def _clip(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boxes inside the frame, each at least MIN_BOX wide and high (keeps one pose per box)."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = np.maximum((boxes[:, 2:] - boxes[:, :2]) / 2, MIN_BOX / 2)
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width - 1)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height - 1)
    return boxes
