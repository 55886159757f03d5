"""MegaDetector batch-output JSON, format 1.6: what Timelapse, AddaxAI and MegaDetector's own tools read.

The format (https://lila.science/megadetector-output-format) keeps a video as **one entry**: its
``file``, the source video's ``frame_rate``, the ``frames_processed`` (source frame numbers) and a
list of ``detections``, each with the ``frame_number`` it was seen in; boxes are
``[x_min, y_min, width, height]`` relative to the frame. Categories are string-formatted ints.

The pipeline writes each video's ``detections.json`` with :func:`document` (one entry); the
``md-json`` exporter merges the entries of many jobs into one batch file, renumbering species
categories by name when jobs ran different classifiers. No torch here: the web app imports it.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Iterable

FORMAT_VERSION = "1.6"
DETECTION_CATEGORIES = {"1": "animal", "2": "person", "3": "vehicle"}   # MegaDetector's own ids


def completion_time() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def video_entry(file: str, frame_rate: float, frames: list[int], detections: list[dict]) -> dict:
    """One video: ``detections`` as :func:`detection` makes them, ``frames`` the source frame numbers
    analysed (the sampled ones, not every frame of the video)."""
    return {"file": file, "frame_rate": round(float(frame_rate), 6) if frame_rate else 0.0,
            "frames_processed": [int(i) for i in frames], "detections": detections}


def detection(category: int, conf: float, xyxy: Iterable[float], size: tuple[int, int], frame_number: int, *,
              species: tuple[str, float] | None = None) -> dict:
    """One box: ``category`` MegaDetector's class index (0 animal, 1 person, 2 vehicle), ``xyxy`` in
    pixels of a ``size`` (width, height) frame; ``species`` (category id, probability)."""
    w, h = size
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    out = {"category": str(int(category) + 1), "conf": round(float(conf), 4),
           "bbox": [round(x1 / w, 4), round(y1 / h, 4), round((x2 - x1) / w, 4), round((y2 - y1) / h, 4)],
           "frame_number": int(frame_number)}
    if species is not None:
        out["classifications"] = [[species[0], round(float(species[1]), 4)]]
    return out


def info(*, detector: str, image_size: int, threshold: float, untrained: bool, classifier: str | None = None,
         extra: dict | None = None) -> dict:
    """The ``info`` block: the detector and classifier that ran, and the threshold boxes were kept at
    (nothing below it is in the file, so it is both the typical and the conservative threshold)."""
    now = completion_time()
    out = {"format_version": FORMAT_VERSION, "detector": detector, "detection_completion_time": now,
           "detector_metadata": {"megadetector_version": detector, "image_size": int(image_size),
                                 "typical_detection_threshold": float(threshold),
                                 "conservative_detection_threshold": float(threshold)},
           "untrained_weights": bool(untrained)}
    if classifier:
        out["classifier"] = classifier
        out["classification_completion_time"] = now
    out.update(extra or {})
    return out


def document(entries: list[dict], info_block: dict, classification_categories: dict[str, str] | None = None) -> dict:
    doc = {"info": info_block, "detection_categories": dict(DETECTION_CATEGORIES)}
    if classification_categories:
        doc["classification_categories"] = dict(classification_categories)
    doc["images"] = entries
    return doc


def dumps(doc: dict) -> str:
    """Compact JSON: a long video has tens of thousands of detections (indented, the file is 3 times
    larger and 5 times slower to write, json's C encoder not taking indents)."""
    return json.dumps(doc, separators=(",", ":"))


def write(path, doc: dict) -> None:
    with open(path, "w") as f:
        f.write(dumps(doc))


def merge(docs: list[dict], files: list[str] | None = None) -> dict:
    """One batch file of many videos' documents. Species categories are renumbered by name (two jobs
    may have run different classifiers); ``info`` keeps the first document's, with each video's own
    detector, classifier and threshold under ``info["videos"]`` when they differ. ``files`` renames
    each document's entries (paths relative to where the videos are kept)."""
    species: dict[str, str] = {}          # name -> new id
    entries: list[dict] = []
    runs: list[dict] = []
    for n, doc in enumerate(docs):
        names = doc.get("classification_categories") or {}
        renumber = {}
        for old, name in names.items():
            renumber[old] = species.setdefault(name, str(len(species)))
        for entry in doc.get("images", []):
            entry = dict(entry)
            if files is not None:
                entry["file"] = files[n]
            entry["detections"] = [_renumbered(d, renumber) for d in entry.get("detections") or []]
            entries.append(entry)
        i = doc.get("info", {})
        runs.append({"file": files[n] if files is not None else None, "detector": i.get("detector"),
                     "classifier": i.get("classifier"), "detector_metadata": i.get("detector_metadata"),
                     "untrained_weights": i.get("untrained_weights", False)})
    first = dict(docs[0]["info"]) if docs else info(detector="", image_size=0, threshold=0.0, untrained=False)
    first["format_version"] = FORMAT_VERSION
    first["untrained_weights"] = any(r["untrained_weights"] for r in runs)
    if len({json.dumps({k: v for k, v in r.items() if k != "file"}, sort_keys=True) for r in runs}) > 1:
        first["videos"] = runs
    return document(entries, first, {k: name for name, k in species.items()} or None)


def _renumbered(det: dict, renumber: dict[str, str]) -> dict:
    if "classifications" not in det:
        return det
    det = dict(det)
    det["classifications"] = [[renumber.get(c, c), p] for c, p in det["classifications"]]
    return det

