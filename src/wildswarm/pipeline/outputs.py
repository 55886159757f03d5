"""Result files, in the formats people already read, committed atomically.

Everything is written into a hidden temporary folder beside the final one and
renamed into place at the end, so a reader (or a crash) never sees half a result.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import supervision as sv

from wildswarm.exporters import megadetector as md
from wildswarm.layout import remove_partial_results
from wildswarm.pipeline.detections import ANIMAL
from wildswarm.pipeline.files import (DETECTIONS, FILTERED_CSV, FILTERED_H5, KEYPOINTS_CSV, KEYPOINTS_H5,  # noqa: F401
                                      LABELED_VIDEO, POSTER, SUMMARY, TRACKS, TRAJECTORY, expected)
from wildswarm.pipeline.pose import KeyPoints
from wildswarm.pipeline.track import track_name

#: The files of every result folder (files.py names them; smoothing adds the filtered keypoints).
ALL_FILES = expected(smoothing=False)


@dataclass(frozen=True)
class Result:
    """A video's result as committed: ``output_dir`` holds ``files``; ``summary`` is its summary.json."""

    name: str
    output_dir: Path
    files: tuple[str, ...]
    frames_read: int
    frames_analysed: int
    animals: int
    untrained: bool
    timings: dict[str, float] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)


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
    """Remove what an attempt at ``name`` left when it died mid-write (:func:`~wildswarm.layout.partial_results`)."""
    remove_partial_results(Path(root), name)


def write_detections(path: Path, video_name: str, frames: list[tuple[int, float]], dets: list[sv.Detections],
                     size: tuple[int, int], *, frame_rate: float, classifier: dict[int, str] | None,
                     info: dict) -> None:
    """MegaDetector batch-output JSON (format 1.6): the video as one entry, every kept box with the
    source ``frame_number`` it was seen in; ``frame_rate`` is the source video's."""
    species_ids = {name: str(k) for k, name in classifier.items()} if classifier else {}
    boxes = []
    for (index, _), det in zip(frames, dets):
        species = det.data.get("species")
        for j in range(len(det)):
            named = species is not None and det.class_id[j] == ANIMAL and species[j]
            boxes.append(md.detection(det.class_id[j], det.confidence[j], det.xyxy[j], size, index, species=(
                species_ids[species[j]], det.data["species_confidence"][j]) if named else None))
    entry = md.video_entry(video_name, frame_rate, [i for i, _ in frames], boxes)
    names = {str(k): v for k, v in classifier.items()} if classifier else None
    md.write(path, md.document([entry], info, names))


def keypoint_table(frames: list[tuple[int, float]], poses: list[KeyPoints], ids: list[np.ndarray],
                   bodyparts: list[str], scorer: str):
    """A DeepLabCut-style table: rows are frame numbers, columns (scorer, individuals, bodyparts, coords).

    ``individuals`` are the tracks (``animal1``, ``animal2`` ... as :mod:`track` names them), so a
    column is one animal through the whole video; ``ids[r][j]`` is the track of ``poses[r][j]``.
    A pose the tracker could not name goes to ``untracked1``, ``untracked2`` ... of its frame.
    """
    import pandas as pd
    tracks = sorted({int(t) for frame_ids in ids for t in frame_ids if t > 0})
    spare = max((int(np.sum(np.asarray(frame_ids[: len(p)]) <= 0)) for frame_ids, p in zip(ids, poses)), default=0)
    individuals = [track_name(t) for t in tracks] + [f"untracked{i + 1}" for i in range(spare)]
    if not individuals:
        individuals = [track_name(1)]  # a valid (all-NaN) column set when nothing was found
    column = {t: i for i, t in enumerate(tracks)}
    columns = pd.MultiIndex.from_product([[scorer], individuals, bodyparts, ["x", "y", "likelihood"]],
                                         names=["scorer", "individuals", "bodyparts", "coords"])
    data = np.full((len(frames), len(individuals), len(bodyparts), 3), np.nan, dtype=np.float64)
    for r, (pose, frame_ids) in enumerate(zip(poses, ids)):
        free = len(tracks)
        for j in range(len(pose)):
            t = int(frame_ids[j]) if j < len(frame_ids) else 0
            if t > 0:
                c = column[t]
            else:
                c, free = free, free + 1
            data[r, c, :, :2] = pose.xy[j]
            data[r, c, :, 2] = pose.confidence[j]
    return pd.DataFrame(data.reshape(len(frames), -1), columns=columns,
                        index=pd.Index([i for i, _ in frames], name="frame"))


def write_keypoints(folder: Path, table, h5: str = KEYPOINTS_H5, csv: str = KEYPOINTS_CSV) -> None:
    """The table as DeepLabCut writes it (HDF5 key ``df_with_missing``) and as CSV.

    DeepLabCut writes HDF5 in pandas' "table" format; pandas keeps that format's column index in
    one HDF5 attribute (at most 64 KiB), which a video with many tracks outgrows. Those tables are
    written in the "fixed" format instead; ``pandas.read_hdf(path, "df_with_missing")`` reads both.
    """
    import tables
    path = folder / h5
    try:
        table.to_hdf(path, key="df_with_missing", format="table", mode="w")
    except (tables.HDF5ExtError, ValueError):
        path.unlink(missing_ok=True)
        table.to_hdf(path, key="df_with_missing", format="fixed", mode="w")
    write_csv(table, folder / csv)


def write_csv(table, path: Path) -> None:
    """``table.to_csv(path)``, byte for byte, without formatting the empty cells one by one.

    A long video's keypoint table is mostly empty: one column group per track, each track present in
    a short stretch of the video (one hour with 180 tracks: 18,000 rows of 2,160 columns, 99 % NaN).
    pandas formats every cell, NaN included, which made this CSV most of a merge's time (4.8 s of
    7.6 s); here only the numbers are formatted, in one numpy call, and each row is put together from
    them and runs of commas (23 times faster on that table, as fast on a dense one).
    """
    values = table.to_numpy()
    if values.dtype.kind != "f":
        table.to_csv(path)
        return
    header = io.StringIO()
    table.iloc[:0].to_csv(header)              # pandas' own header rows (scorer ... coords, frame)
    filled = ~np.isnan(values)
    text = values[filled].astype(str).tolist()     # as pandas formats them: shortest repr
    rows, cols = np.nonzero(filled)
    ends = np.searchsorted(rows, np.arange(len(values) + 1)).tolist()
    cols, width = cols.tolist(), values.shape[1]
    with open(path, "w", newline="") as f:
        f.write(header.getvalue())
        for r, index in enumerate(table.index.tolist()):
            line, prev = [str(index)], -1
            for k in range(ends[r], ends[r + 1]):
                line.append("," * (cols[k] - prev))
                line.append(text[k])
                prev = cols[k]
            line.append("," * (width - 1 - prev) + "\n")
            f.write("".join(line))


def write_tracks(path: Path, frames: list[tuple[int, float]], dets: list[sv.Detections]) -> int:
    """Every tracked animal box in MOTChallenge's CSV: ``frame,id,bb_left,bb_top,bb_width,bb_height,conf,-1,-1,-1``.

    ``frame`` is the source video's frame number, 1-based (MOTChallenge counts from 1); boxes are in
    pixels. No header, as MOT tools expect. Returns the number of rows.
    """
    rows = []
    for (index, _), det in zip(frames, dets):
        ids = det.tracker_id if det.tracker_id is not None else np.zeros(len(det), int)
        for j in np.flatnonzero(ids > 0):
            x1, y1, x2, y2 = (float(v) for v in det.xyxy[j])
            rows.append(f"{index + 1},{int(ids[j])},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},"
                        f"{float(det.confidence[j]):.4f},-1,-1,-1\n")
    path.write_text("".join(rows))
    return len(rows)


def write_poster(path: Path, image: np.ndarray, longest: int = 1280) -> None:
    """An annotated RGB frame as a JPEG (at most ``longest`` pixels on its longer side): the still that
    pages show for the video before it plays."""
    from PIL import Image
    still = Image.fromarray(np.ascontiguousarray(image))
    if max(still.size) > longest:
        still.thumbnail((longest, longest))
    still.save(path, "JPEG", quality=85, optimize=True)


def write_summary(path: Path, summary: dict) -> None:
    path.write_text(json.dumps(summary, indent=2, sort_keys=False))
