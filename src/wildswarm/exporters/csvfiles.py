"""``csv``: plain tables for spreadsheets, R and pandas, one row per thing, a zip of four files:

- ``videos.csv``: one row per video (frames, size, frame rate, animals, models);
- ``detections.csv``: one row per box: frame, time, category, confidence, box in pixels, species;
- ``animals.csv``: one row per tracked animal: its span, frames, best confidence, species;
- ``keypoints.csv``: one row per body part seen: frame, animal, body part, x, y, likelihood
  (the DeepLabCut table in long form; missing points are left out, not written as empty).
"""
from __future__ import annotations

from typing import BinaryIO

import numpy as np

from wildswarm.exporters import megadetector as md
from wildswarm.exporters.base import Exporter, ExportOptions, VideoResult, csv_text, zip_writer

VIDEOS = ["video", "job_id", "frames_analysed", "frame_rate", "width", "height", "duration_s", "animals_distinct",
          "animals_max_per_frame", "detector", "pose_model", "untrained_weights"]
DETECTIONS = ["video", "frame", "time_s", "category", "confidence", "x", "y", "width", "height", "species",
              "species_probability"]
ANIMALS = ["video", "animal", "first_frame", "last_frame", "first_s", "last_s", "frames", "max_confidence", "species",
           "species_probability"]
KEYPOINTS = ["video", "frame", "animal", "bodypart", "x", "y", "likelihood"]


class CSVTables(Exporter):
    name = "csv"
    label = "CSV tables: videos, detections, animals, keypoints"
    suffix = ".zip"
    mimetype = "application/zip"

    def write(self, results: list[VideoResult], out: BinaryIO, options: ExportOptions) -> None:
        videos, boxes, animals, points = [], [], [], []
        for r in results:
            s, entry = r.summary, r.entry
            i = s.get("input", {})
            w, h, fps = i.get("width") or 1, i.get("height") or 1, entry.get("frame_rate") or 0
            models = s.get("models", {})
            videos.append([r.video, r.job_id, s.get("frames", {}).get("analysed"), fps, i.get("width"),
                           i.get("height"), i.get("duration_s"), s.get("animals", {}).get("distinct"),
                           s.get("animals", {}).get("max_per_frame"), models.get("detector", {}).get("name"),
                           models.get("pose", {}).get("name"), s.get("untrained_weights", False)])
            species = r.detections.get("classification_categories") or {}
            for d in entry.get("detections", []):
                x, y, bw, bh = d["bbox"]
                sp = d.get("classifications") or [[None, None]]
                boxes.append([r.video, d["frame_number"], round(r.time_of(d["frame_number"], fps), 3) if fps else "",
                              md.DETECTION_CATEGORIES.get(d["category"], d["category"]), d["conf"],
                              round(x * w, 1), round(y * h, 1), round(bw * w, 1), round(bh * h, 1),
                              species.get(sp[0][0], "") if sp[0][0] is not None else "",
                              sp[0][1] if sp[0][1] is not None else ""])
            for t in s.get("tracks", []):
                animals.append([r.video, t["name"], t["first_frame"], t["last_frame"], t.get("first_s", ""),
                                t.get("last_s", ""), t["frames"], t.get("max_conf", ""), t.get("species", ""),
                                t.get("species_confidence", "")])
            points.extend(_long(r))
        with zip_writer(out) as z:
            z.writestr("videos.csv", csv_text(VIDEOS, videos))
            z.writestr("detections.csv", csv_text(DETECTIONS, boxes))
            z.writestr("animals.csv", csv_text(ANIMALS, animals))
            z.writestr("keypoints.csv", csv_text(KEYPOINTS, points))


def _long(r: VideoResult) -> list[list]:
    table = r.keypoints()
    if table is None or table.empty:
        return []
    values = table.to_numpy().reshape(len(table), -1, 3)       # (frame, individual x bodypart, xyl)
    pairs = [(c[1], c[2]) for c in table.columns[::3]]
    rows = []
    for frame, row in zip(table.index.tolist(), values):
        for k in np.flatnonzero(~np.isnan(row[:, 0])):
            x, y, p = row[k]
            rows.append([r.video, frame, pairs[k][0], pairs[k][1], round(float(x), 2), round(float(y), 2),
                         round(float(p), 4)])
    return rows
