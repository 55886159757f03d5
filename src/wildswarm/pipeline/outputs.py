"""Result files, in the formats people already read, committed atomically.

Everything is written into a hidden temporary folder beside the final one and
renamed into place at the end, so a reader (or a crash) never sees half a result.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import supervision as sv

from wildswarm.pipeline.detect import ANIMAL, CLASS_NAMES
from wildswarm.pipeline.pose import KeyPoints

# File names inside output/<name>/
LABELED_VIDEO = "labeled.mp4"
DETECTIONS = "detections.json"
KEYPOINTS_H5 = "keypoints.h5"
KEYPOINTS_CSV = "keypoints.csv"
TRAJECTORY = "trajectory.png"
SUMMARY = "summary.json"
ALL_FILES = (LABELED_VIDEO, DETECTIONS, KEYPOINTS_H5, KEYPOINTS_CSV, TRAJECTORY, SUMMARY)


class OutputFolder:
    """``with OutputFolder(root, name) as tmp: ...`` writes into ``tmp``; on success it becomes root/name."""

    def __init__(self, root: Path, name: str):
        self.root = Path(root)
        self.final = self.root / name
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=self.root, prefix=f".tmp-{self.final.name}-"))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.tmp is not None
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        os.chmod(self.tmp, 0o755)
        old = None
        if self.final.exists():  # a re-run replaces the earlier result as a whole
            old = self.root / f".old-{self.final.name}-{os.getpid()}"
            os.replace(self.final, old)
        os.replace(self.tmp, self.final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def clean_partial(root: Path, name: str) -> None:
    """Remove what an attempt at ``name`` left when it died mid-write.

    Only ``name``'s own ``.tmp-<name>-XXXXXXXX`` and ``.old-<name>-<pid>``
    folders: other workers may be writing other results beside them.
    """
    pattern = re.compile(rf"\.(tmp-{re.escape(name)}-[a-z0-9_]{{8}}|old-{re.escape(name)}-\d+)")
    if Path(root).is_dir():
        for p in Path(root).iterdir():
            if pattern.fullmatch(p.name):
                shutil.rmtree(p, ignore_errors=True)


def write_detections(path: Path, video_name: str, frames: list[tuple[int, float]], dets: list[sv.Detections],
                     size: tuple[int, int], *, detector: str, classifier: dict[int, str] | None,
                     frame_rate: float, untrained: bool) -> None:
    """MegaDetector batch-output JSON (format 1.4), one entry per analysed frame."""
    w, h = size
    species_ids: dict[str, str] = {}
    if classifier:
        species_ids = {name: str(k) for k, name in classifier.items()}
    images = []
    for (index, t), det in zip(frames, dets):
        entries = []
        for j in range(len(det)):
            x1, y1, x2, y2 = (float(v) for v in det.xyxy[j])
            entry = {"category": str(int(det.class_id[j]) + 1), "conf": round(float(det.confidence[j]), 4),
                     "bbox": [round(x1 / w, 4), round(y1 / h, 4), round((x2 - x1) / w, 4), round((y2 - y1) / h, 4)]}
            species = det.data.get("species")
            if species is not None and det.class_id[j] == ANIMAL and species[j]:
                entry["classifications"] = [[species_ids[species[j]], round(float(det.data["species_confidence"][j]), 4)]]
            entries.append(entry)
        images.append({"file": f"{video_name}/frame{index:06d}.jpg", "frame_number": index,
                       "time_s": round(t, 3), "max_detection_conf": max((e["conf"] for e in entries), default=0.0),
                       "detections": entries})
    doc = {
        "info": {"format_version": "1.4", "detector": detector, "untrained_weights": untrained,
                 "detection_completion_time": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
                 "video": video_name, "frame_rate": frame_rate},
        "detection_categories": {str(k + 1): v for k, v in CLASS_NAMES.items()},
        "images": images,
    }
    if classifier:
        doc["classification_categories"] = {str(k): v for k, v in classifier.items()}
    path.write_text(json.dumps(doc, indent=1))


def keypoint_table(frames: list[tuple[int, float]], poses: list[KeyPoints], bodyparts: list[str], scorer: str):
    """A DeepLabCut-style table: rows are frame numbers, columns (scorer, individuals, bodyparts, coords)."""
    import pandas as pd
    n = max((len(p) for p in poses), default=0)
    n = max(n, 1)  # keep a valid (all-NaN) column set when nothing was found
    individuals = [f"animal{i}" for i in range(n)]
    columns = pd.MultiIndex.from_product([[scorer], individuals, bodyparts, ["x", "y", "likelihood"]],
                                         names=["scorer", "individuals", "bodyparts", "coords"])
    data = np.full((len(frames), n, len(bodyparts), 3), np.nan, dtype=np.float64)
    for r, pose in enumerate(poses):
        m = len(pose)
        if m:
            data[r, :m, :, :2] = pose.xy
            data[r, :m, :, 2] = pose.confidence
    return pd.DataFrame(data.reshape(len(frames), -1), columns=columns,
                        index=pd.Index([i for i, _ in frames], name="frame"))


def write_keypoints(folder: Path, table) -> None:
    table.to_hdf(folder / KEYPOINTS_H5, key="df_with_missing", format="table", mode="w")
    table.to_csv(folder / KEYPOINTS_CSV)


def write_summary(path: Path, summary: dict) -> None:
    path.write_text(json.dumps(summary, indent=2, sort_keys=False))
