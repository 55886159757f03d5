"""What the models found in a run of analysed frames: a whole video, or one segment of it."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from wildswarm.pipeline.detections import animals


@dataclass
class Frames:
    """What the models found in a run of analysed frames (a whole video, or one segment of it)."""

    meta: list[tuple[int, float]]      # (source frame index, seconds) of each analysed frame
    dets: list                         # supervision.Detections per frame, tracker_id set on every row
    poses: list                        # KeyPoints per frame: the pose of animals(det)[j] is poses[r][j]
    keypoints: int                     # body parts of the pose model
    decoded: int = 0                   # frames decoded, kept or not (a segment's seek and overlap decode some twice)
    read: int = 0                      # frames of the video these cover: the last one decoded + 1
    timings: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    # (animals, source frame, annotated RGB image) of the frame with the most animals (the first such);
    # after a merge the image is the best segment's file, already copied: None here
    poster: tuple[int, int, np.ndarray | None] | None = None

    def pose_ids(self) -> list[np.ndarray]:
        """The track of each pose, frame by frame."""
        return [animals(d).tracker_id[: len(p)] if len(d) else np.zeros(0, int)
                for d, p in zip(self.dets, self.poses)]
