"""Drawing: boxes with labels, keypoints and skeletons on frames; the trajectory plot."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import supervision as sv

from wildswarm.pipeline.detect import CLASS_NAMES, ANIMAL
from wildswarm.pipeline.pose import KeyPoints

UNTRAINED_BANNER = "UNTRAINED WEIGHTS - results are meaningless"


class FrameRenderer:
    """Annotates RGB frames; built once per video (sizes scale with the frame)."""

    def __init__(self, width: int, height: int, skeleton: list[tuple[int, int]], *,
                 pose_threshold: float, untrained: bool):
        scale = max(width, height) / 640
        thickness = max(1, round(2 * scale))
        self.boxes = sv.BoxAnnotator(thickness=thickness)
        self.labels = sv.LabelAnnotator(text_scale=0.45 * scale, text_thickness=max(1, round(scale)),
                                        text_padding=max(2, round(4 * scale)))
        # supervision's edges are 1-based pairs
        self.edges = sv.EdgeAnnotator(color=sv.Color.from_hex("#00e5ff"), thickness=thickness,
                                      edges=[(a + 1, b + 1) for a, b in skeleton] or None)
        self.vertices = sv.VertexAnnotator(color=sv.Color.from_hex("#ff2d95"), radius=max(2, round(3 * scale)))
        self.pose_threshold = pose_threshold
        self.banner = sv.LabelAnnotator(text_scale=0.5 * scale, text_position=sv.Position.TOP_LEFT,
                                        color=sv.Color.RED) if untrained else None
        self.size = (width, height)

    def render(self, image: np.ndarray, det: sv.Detections, pose: KeyPoints) -> np.ndarray:
        """The annotated copy of an RGB frame (supervision draws in OpenCV's BGR order)."""
        frame = np.ascontiguousarray(image[..., ::-1])
        if len(det):
            frame = self.boxes.annotate(frame, det)
            frame = self.labels.annotate(frame, det, labels=labels(det))
        if len(pose):
            xy = pose.xy.copy()
            xy[pose.confidence < self.pose_threshold] = 0  # supervision skips (0, 0) points
            kp = sv.KeyPoints(xy=xy, confidence=pose.confidence)
            frame = self.edges.annotate(frame, kp)
            frame = self.vertices.annotate(frame, kp)
        if self.banner is not None:
            w, _ = self.size
            whole = sv.Detections(xyxy=np.array([[0, 0, w, 1]], np.float32), class_id=np.array([0]))
            frame = self.banner.annotate(frame, whole, labels=[UNTRAINED_BANNER])
        return frame[..., ::-1]


def labels(det: sv.Detections) -> list[str]:
    species = det.data.get("species")
    out = []
    for j in range(len(det)):
        name = CLASS_NAMES.get(int(det.class_id[j]), str(det.class_id[j]))
        text = f"{name} {det.confidence[j]:.2f}"
        if species is not None and det.class_id[j] == ANIMAL and species[j]:
            text += f" | {species[j]} {det.data['species_confidence'][j]:.2f}"
        out.append(text)
    return out


def trajectory_plot(path: Path, poses: list[KeyPoints], bodyparts: list[str], *, width: int, height: int,
                    pose_threshold: float, title: str, untrained: bool) -> int:
    """Scatter every confident keypoint over time, coloured by body part; returns points drawn."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, ys, cs = [], [], []
    for pose in poses:
        if not len(pose):
            continue
        ok = pose.confidence >= pose_threshold
        idx = np.broadcast_to(np.arange(len(bodyparts)), ok.shape)
        xs.append(pose.xy[..., 0][ok])
        ys.append(pose.xy[..., 1][ok])
        cs.append(idx[ok])
    x = np.concatenate(xs) if xs else np.zeros(0)
    y = np.concatenate(ys) if ys else np.zeros(0)
    c = np.concatenate(cs) if cs else np.zeros(0)

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=100)
    try:
        sc = ax.scatter(x, y, c=c, cmap="viridis", s=8, vmin=0, vmax=max(len(bodyparts) - 1, 1))
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)  # image coordinates: y grows downwards
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel("X position in pixels")
        ax.set_ylabel("Y position in pixels")
        ax.set_title(title + ("\n" + UNTRAINED_BANNER if untrained else ""), fontsize=10,
                     color="red" if untrained else "black")
        bar = fig.colorbar(sc, ax=ax, ticks=range(len(bodyparts)))
        bar.ax.set_yticklabels(bodyparts, fontsize=max(4, min(9, 300 // max(len(bodyparts), 1))))
        if not len(x):
            ax.text(width / 2, height / 2, "no keypoints above threshold", ha="center", va="center")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return int(len(x))
