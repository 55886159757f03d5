"""Who is who: one id per animal across the frames of a video.

supervision's ByteTrack (a Kalman filter on each box and two rounds of IoU
matching, high- then low-confidence boxes) follows MegaDetector's animal boxes
from frame to frame. :class:`Tracker` sets ``tracker_id`` on every row of each
frame's detections, so the pose, the table, the drawing and the plot all name
an animal the same way:

* ids are 1, 2, 3 ... in the order the animals first appear; ``0`` means "not
  an animal box" or "no track" (ByteTrack left it unmatched);
* an animal lost for up to ``lost_seconds`` (hidden behind a tree, one frame
  missed by the detector) keeps its id when it is found again; after that it
  comes back as a new one.

Two things differ from ``ByteTrack.update_with_detections``, both to lose
nothing:

* a box that starts a track gets that track's id in its first frame
  (supervision reports a new track only from its second frame on, which would
  leave the first keypoints of every animal unnamed);
* every box the detector kept counts as a confident one. ByteTrack matches a
  track to a box by IoU times the box's confidence, and starts tracks only
  from boxes 0.1 above its threshold: MegaDetector scores many real animals
  0.2-0.5 (and untrained weights ~0.004), which would make a slow-moving
  animal unmatchable and a new "animal" every frame. The detection threshold
  has already decided what is an animal, so the tracker is handed confidence
  1 for each kept box (the tables keep the real confidences), and matches on
  the Kalman-predicted overlap alone.
"""
from __future__ import annotations

import numpy as np
import supervision as sv
from supervision.detection.utils import box_iou_batch
from supervision.tracker.byte_tracker import matching

from wildswarm.pipeline.detections import ANIMAL

#: A track's box and a detection's box must overlap at least this much (IoU) to be the same animal
#: in the frame just tracked -- supervision's own rule for handing ids back to detections.
MATCH_IOU = 0.5


class Tracker:
    """ByteTrack over the animal boxes of one video, frame by frame; build one per video."""

    def __init__(self, *, fps: float, lost_seconds: float = 5.0, match_threshold: float = 0.8):
        lost_frames = max(1, round(lost_seconds * max(fps, 1e-6)))
        # frame_rate=30 makes ByteTrack's buffer exactly lost_frames (it scales the buffer by rate/30).
        self._bt = sv.ByteTrack(track_activation_threshold=0.5, lost_track_buffer=lost_frames,
                                minimum_matching_threshold=match_threshold, frame_rate=30,
                                minimum_consecutive_frames=1)
        self._names: dict[int, int] = {}  # ByteTrack's id -> ours (1, 2, ... by first appearance)

    def update(self, det: sv.Detections) -> sv.Detections:
        """Set ``det.tracker_id`` for every row (0 for non-animals and unmatched boxes); returns ``det``."""
        ids = np.zeros(len(det), dtype=int)
        rows = np.flatnonzero(det.class_id == ANIMAL) if len(det) else np.zeros(0, int)
        boxes = det.xyxy[rows].astype(np.float64) if len(rows) else np.zeros((0, 4))
        confident = np.ones(len(rows))  # see the module's docstring
        self._bt.update_with_tensors(np.column_stack([boxes, confident, np.zeros(len(rows))]).reshape(-1, 6))
        # The tracks this frame updated or started: every one got a box of this frame.
        live = [t for t in self._bt.tracked_tracks
                if t.frame_id == self._bt.frame_id and t.external_track_id > 0]
        if len(rows) and live:
            ious = box_iou_batch(boxes, np.asarray([t.tlbr for t in live]))
            matches, _, _ = matching.linear_assignment(1 - ious, 1 - MATCH_IOU)
            for i_det, i_track in matches:
                ids[rows[i_det]] = self._name(live[i_track].external_track_id)
        det.tracker_id = ids
        return det

    def _name(self, raw: int) -> int:
        return self._names.setdefault(raw, len(self._names) + 1)


def track_summary(meta: list[tuple[int, float]], dets: list[sv.Detections]) -> list[dict]:
    """Per track: its id and name, first and last source frame and time, how many analysed frames show
    it, its best detection confidence, and its species where a classifier ran: the one most of its
    boxes were given, with their mean probability (a track is one animal, so one species)."""
    seen: dict[int, dict] = {}
    for (index, t), det in zip(meta, dets):
        if det.tracker_id is None:
            continue
        species = det.data.get("species")
        for j, tid in enumerate(det.tracker_id):
            tid = int(tid)
            if tid <= 0:
                continue
            track = seen.setdefault(tid, {"frames": [], "times": [], "conf": 0.0, "votes": {}})
            if not track["frames"] or track["frames"][-1] != index:
                track["frames"].append(index)
                track["times"].append(t)
            track["conf"] = max(track["conf"], float(det.confidence[j]))
            if species is not None and species[j]:
                track["votes"].setdefault(str(species[j]), []).append(float(det.data["species_confidence"][j]))
    out = []
    for tid, track in sorted(seen.items()):
        row = {"id": tid, "name": track_name(tid), "first_frame": track["frames"][0],
               "last_frame": track["frames"][-1], "first_s": round(track["times"][0], 3),
               "last_s": round(track["times"][-1], 3), "frames": len(track["frames"]),
               "max_conf": round(track["conf"], 4)}
        if track["votes"]:
            name, probs = max(track["votes"].items(), key=lambda kv: (len(kv[1]), sum(kv[1])))
            row["species"], row["species_confidence"] = name, round(sum(probs) / len(probs), 4)
        out.append(row)
    return out


def track_name(tid: int) -> str:
    """The name a track goes by in the tables and the drawing (``individuals`` in DeepLabCut's)."""
    return f"animal{tid}" if tid > 0 else "untracked"
