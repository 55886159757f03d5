"""Drawing: boxes with labels, keypoints and skeletons on frames; the trajectory plot."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import supervision as sv

from wildswarm.pipeline.detections import CLASS_NAMES, ANIMAL
from wildswarm.pipeline.pose import KeyPoints

UNTRAINED_BANNER = "UNTRAINED WEIGHTS - results are meaningless"


def _shown_in_rgb(colour: sv.Color) -> sv.Color:
    """The colour that supervision, which hands OpenCV its colours in BGR order, draws into an RGB
    frame as ``colour``."""
    return sv.Color(r=colour.b, g=colour.g, b=colour.r)


DEFAULT_PALETTE = sv.ColorPalette([_shown_in_rgb(c) for c in sv.ColorPalette.DEFAULT.colors])
EDGE_COLOUR = sv.Color.from_hex("#00e5ff")
VERTEX_COLOUR = sv.Color.from_hex("#ff2d95")


class FrameRenderer:
    """Annotates RGB frames; built once per video (sizes scale with the frame).

    Boxes and labels are supervision's annotators, drawing straight into the RGB frame with their
    colours given in RGB order (flipping each frame to BGR and back cost ~1.6 ms). The skeleton is
    drawn with OpenCV directly: supervision's edge annotator tests both ends of every edge with
    ``np.allclose`` (4.5 ms of CPU a frame for three animals of 39 keypoints, where one
    ``cv2.polylines`` and the dots take 0.3 ms for the same pixels), and its vertex annotator drew
    every keypoint, the hidden ones too, as a dot in the top-left corner. A 640x360 frame with three
    animals now takes 0.6 ms to draw, 5.0 ms before. ``tests/pipeline/test_render.py`` holds the
    drawing to supervision's, pixel for pixel."""

    def __init__(self, width: int, height: int, skeleton: list[tuple[int, int]], *,
                 pose_threshold: float, untrained: bool, label_prefix: str = ""):
        self.label_prefix = label_prefix  # "3." in segment 3 of a long video: its ids are its own
        scale = max(width, height) / 640
        thickness = max(1, round(2 * scale))
        self.boxes = sv.BoxAnnotator(color=DEFAULT_PALETTE, thickness=thickness)
        self.labels = sv.LabelAnnotator(color=DEFAULT_PALETTE, text_scale=0.45 * scale,
                                        text_thickness=max(1, round(scale)), text_padding=max(2, round(4 * scale)))
        self.edges = np.array(skeleton, dtype=np.intp).reshape(-1, 2)
        self.thickness = thickness
        self.radius = max(2, round(3 * scale))
        self.pose_threshold = pose_threshold
        self.banner = sv.LabelAnnotator(text_scale=0.5 * scale, text_position=sv.Position.TOP_LEFT,
                                        color=_shown_in_rgb(sv.Color.RED)) if untrained else None
        self.size = (width, height)

    def render(self, image: np.ndarray, det: sv.Detections, pose: KeyPoints) -> np.ndarray:
        """The annotated copy of an RGB frame."""
        frame = image.copy()
        if len(det):
            frame = self.boxes.annotate(frame, det)
            frame = self.labels.annotate(frame, det, labels=labels(det, self.label_prefix))
        if len(pose):
            self._skeleton(frame, pose)
        if self.banner is not None:
            w, _ = self.size
            whole = sv.Detections(xyxy=np.array([[0, 0, w, 1]], np.float32), class_id=np.array([0]))
            frame = self.banner.annotate(frame, whole, labels=[UNTRAINED_BANNER])
        return frame

    def _skeleton(self, frame: np.ndarray, pose: KeyPoints) -> None:
        """Edges between shown keypoints, then a dot on each: keypoints at or above the threshold,
        finite, and not at (0, 0), which supervision reads as missing. Coordinates are truncated to
        pixels as supervision does."""
        import cv2
        xy = pose.xy
        shown = (pose.confidence >= self.pose_threshold) & np.isfinite(xy).all(axis=-1) & \
            ~(np.abs(xy) <= 1e-8).all(axis=-1)
        pixels = np.where(shown[..., None], xy, 0).astype(np.int32)
        if len(self.edges):
            a, b = self.edges[:, 0], self.edges[:, 1]
            joined = shown[:, a] & shown[:, b]                                  # (animals, edges)
            lines = np.stack([pixels[:, a], pixels[:, b]], axis=2)[joined]      # (lines, 2, 2)
            if len(lines):
                cv2.polylines(frame, list(lines), False, EDGE_COLOUR.as_rgb(), self.thickness)
        colour = VERTEX_COLOUR.as_rgb()
        for x, y in pixels[shown].tolist():
            cv2.circle(frame, (x, y), self.radius, colour, -1)


def labels(det: sv.Detections, prefix: str = "") -> list[str]:
    """``animal 3 0.87 | zebra 0.91``: the class, the track id where there is one, the confidences.
    In a segment of a long video the id is the segment's own, after ``prefix`` (``animal 2.3``)."""
    species = det.data.get("species")
    ids = det.tracker_id
    out = []
    for j in range(len(det)):
        name = CLASS_NAMES.get(int(det.class_id[j]), str(det.class_id[j]))
        if ids is not None and ids[j] > 0:
            name += f" {prefix}{int(ids[j])}"
        text = f"{name} {det.confidence[j]:.2f}"
        if species is not None and det.class_id[j] == ANIMAL and species[j]:
            text += f" | {species[j]} {det.data['species_confidence'][j]:.2f}"
        out.append(text)
    return out


def track_paths(poses: list[KeyPoints], ids: list[np.ndarray], pose_threshold: float) -> dict[int, np.ndarray]:
    """Per track, its path: (frames, 2) of the mean of its confident keypoints, NaN where it is unseen."""
    tracks = sorted({int(t) for frame_ids in ids for t in frame_ids if t > 0})
    paths = {t: np.full((len(poses), 2), np.nan) for t in tracks}
    for r, (pose, frame_ids) in enumerate(zip(poses, ids)):
        for j in range(len(pose)):
            t = int(frame_ids[j]) if j < len(frame_ids) else 0
            ok = pose.confidence[j] >= pose_threshold
            if t > 0 and ok.any():
                paths[t][r] = pose.xy[j][ok].mean(axis=0)
    return paths


def trajectory_plot(path: Path, poses: list[KeyPoints], ids: list[np.ndarray], *, width: int, height: int,
                    pose_threshold: float, title: str, untrained: bool) -> int:
    """One path per animal (the mean of its confident keypoints, frame by frame), a colour and a
    legend entry each; poses without a track are grey dots. Returns the points drawn.

    Drawn on a figure of its own with the Agg canvas, not through pyplot: a worker needs none of
    pyplot's global figure manager (which is not thread-safe, and keeps every figure not closed);
    the PNG is the same, byte for byte."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    paths = track_paths(poses, ids, pose_threshold)
    loose = [pose.xy[j][pose.confidence[j] >= pose_threshold].mean(axis=0)
             for pose, frame_ids in zip(poses, ids) for j in range(len(pose))
             if (j >= len(frame_ids) or frame_ids[j] <= 0) and (pose.confidence[j] >= pose_threshold).any()]
    drawn = 0
    fig = Figure(figsize=(8, 5.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = colormaps["tab10" if len(paths) <= 10 else "tab20"]
    for n, (tid, xy) in enumerate(paths.items()):
        seen = ~np.isnan(xy[:, 0])
        if not seen.any():
            continue
        colour = colours(n % colours.N)
        first, last = np.flatnonzero(seen)[[0, -1]]
        span = xy[first:last + 1]    # only the animal's span: a long video has many short tracks
        # a line where the animal was seen in consecutive analysed frames, a dot for every sighting
        ax.plot(span[:, 0], span[:, 1], "-", color=colour, linewidth=1.2, alpha=0.8)
        ax.plot(xy[seen, 0], xy[seen, 1], "o", color=colour, markersize=2.5, label=f"animal {tid}")
        ax.annotate(str(tid), xy[first], color=colour, fontsize=8, fontweight="bold")
        drawn += int(seen.sum())
    if loose:
        xy = np.asarray(loose)
        ax.plot(xy[:, 0], xy[:, 1], ".", color="0.6", markersize=3, label="untracked")
        drawn += len(xy)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)  # image coordinates: y grows downwards
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("X position in pixels")
    ax.set_ylabel("Y position in pixels")
    ax.set_title(title + ("\n" + UNTRAINED_BANNER if untrained else ""), fontsize=10,
                 color="red" if untrained else "black")
    if drawn:
        handles, names = ax.get_legend_handles_labels()
        if len(handles) > 20:  # many tracks: the first 20 named, the colours say the rest
            handles, names = handles[:20], names[:20]
        ax.legend(handles, names, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7, frameon=False)
    else:
        ax.text(width / 2, height / 2, "no keypoints above threshold", ha="center", va="center")
    fig.tight_layout()
    # tight_layout leaves a placeholder layout engine behind, for which savefig draws the whole
    # figure once more before drawing it for real; the layout is done, so none is needed
    fig.set_layout_engine(None)
    fig.savefig(path)
    return drawn
