"""Reading what workers wrote: result folders, their files and summary, node logs; zips streamed.

Every path here is built from a name checked against what is really on disk
(a directory listing), then resolved and checked to stay inside the data root
(:meth:`Layout.inside`); symbolic links are never followed out of it.
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from wildswarm.errors import UnsafePathError
from wildswarm.jobs import Job, JobStatus
from wildswarm.layout import Layout, stem_of

from wildswarm.pipeline import files as result_files

#: Result files in the order and with the words the pages use (pipeline/files.py defines them).
LABELS = {f.name: f.label for f in result_files.RESULT_FILES}
VIDEO, PLOT, SUMMARY = result_files.LABELED_VIDEO, result_files.TRAJECTORY, result_files.SUMMARY
POSTER = result_files.POSTER
COMPRESSIBLE = (".json", ".csv", ".txt", ".log")
MAX_SUMMARY_BYTES = 1 << 20
CHUNK = 1 << 20


@dataclass(frozen=True)
class OutputFile:
    name: str
    size: int
    label: str


def plain_name(name: str) -> bool:
    """A single, visible path component without control characters, that UTF-8 can hold: a name on disk
    that is not UTF-8 (``caf\\xe9.csv`` from a Latin-1 system) reaches Python as lone surrogates, which
    no link, header or zip entry can carry."""
    return bool(name) and len(name) <= 255 and "/" not in name and "\\" not in name \
        and not name.startswith(".") and not any(ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) <= 0xDFFF
                                                 for c in name)


def output_name(job: Job) -> str:
    return job.output or stem_of(job.input_name)


def output_folder(layout: Layout, name: str) -> Path | None:
    """``output/<name>/`` if ``name`` is a plain name of an existing result folder, else None."""
    if not plain_name(name):
        return None
    try:
        folder = layout.inside(layout.output / name)
    except UnsafePathError:
        return None
    if folder.parent != layout.output.resolve() or not folder.is_dir():
        return None
    return folder


def job_folder(layout: Layout, job: Job) -> Path | None:
    try:
        return output_folder(layout, output_name(job))
    except (UnsafePathError, ValueError):
        return None


def list_files(folder: Path | None) -> list[OutputFile]:
    """The regular files of a result folder with plain names (no links), known ones first: only what
    :func:`find_file` serves, so that every file listed can be linked, downloaded and zipped."""
    if folder is None:
        return []
    found = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        if not plain_name(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        try:
            size = entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
        found.append(OutputFile(entry.name, size, LABELS.get(entry.name, entry.name)))
    order = list(LABELS)
    return sorted(found, key=lambda f: (order.index(f.name) if f.name in LABELS else len(order), f.name))


def find_file(folder: Path | None, name: str) -> Path | None:
    """``folder/name`` if ``name`` is one of the folder's listed files."""
    if folder is None or not plain_name(name):
        return None
    if name not in {f.name for f in list_files(folder)}:
        return None
    return folder / name


def has_poster(layout: Layout, job: Job) -> bool:
    """Whether a done job's result folder holds its poster frame (a plain file, not a link)."""
    if job.status is not JobStatus.DONE:
        return False
    path = find_file(job_folder(layout, job), POSTER)
    return path is not None and path.is_file() and not path.is_symlink()


def read_summary(folder: Path | None) -> dict | None:
    path = find_file(folder, SUMMARY)
    if path is None:
        return None
    try:
        if path.stat().st_size > MAX_SUMMARY_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class _Sink:
    """A write-only stream for :mod:`zipfile` that hands out what was written so far."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


def zip_many(entries: list[tuple[Path, list[OutputFile], str]], notes: dict[str, str] | None = None
             ) -> Iterator[bytes]:
    """Result folders (each under its prefix) as one zip archive, produced chunk by chunk (never whole
    in memory); ``notes``: small text files added at the top (name -> text)."""
    sink = _Sink()
    # Deflate everything (fast level for videos and images): a streamed entry carries its sizes in a
    # trailing data descriptor, which some readers accept only for deflated entries.
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, text in (notes or {}).items():
            archive.writestr(name, text)
            yield sink.take()
        for folder, files, prefix in entries:
            for f in files:
                info = zipfile.ZipInfo.from_file(folder / f.name, arcname=f"{prefix}/{f.name}")
                info.compress_type = zipfile.ZIP_DEFLATED
                info._compresslevel = 6 if f.name.endswith(COMPRESSIBLE) else 1
                with open(folder / f.name, "rb") as src, archive.open(info, "w", force_zip64=True) as dest:
                    while block := src.read(CHUNK):
                        dest.write(block)
                        yield sink.take()
                yield sink.take()
    yield sink.take()


@dataclass(frozen=True)
class NodeLog:
    node: str
    lines: list[str]
    size: int
    modified: float
    truncated: bool


def tail(path: Path, lines: int, max_bytes: int = 256 * 1024) -> tuple[list[str], bool]:
    """The last ``lines`` lines of ``path`` (reading at most ``max_bytes`` from its end)."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        start = max(0, size - max_bytes)
        fh.seek(start)
        data = fh.read()
    text = data.decode("utf-8", "replace").splitlines()
    if start > 0 and text:
        text = text[1:]          # the first line read is probably cut
    return text[-lines:] if lines > 0 else [], start > 0 or len(text) > lines


def node_logs(layout: Layout, lines: int, node: str | None = None) -> list[NodeLog]:
    """``logs/<node>.log`` of every node (or one), newest first, each with its tail."""
    if not layout.logs.is_dir():
        return []
    found = []
    for path in layout.logs.glob("*.log"):
        name = path.name[:-4]
        if not plain_name(path.name) or path.is_symlink() or not path.is_file() or (node and name != node):
            continue
        try:
            st = path.stat()
            text, truncated = tail(path, lines)
        except OSError:
            continue
        found.append(NodeLog(name, text, st.st_size, st.st_mtime, truncated))
    return sorted(found, key=lambda n: -n.modified)


def log_path(layout: Layout, node: str) -> Path | None:
    """``logs/<node>.log`` if it exists as a regular file (not a link)."""
    if not plain_name(node):
        return None
    path = layout.logs / f"{node}.log"
    try:
        layout.inside(path)
    except UnsafePathError:
        return None
    return path if path.is_file() and not path.is_symlink() else None


STAGES = ("decode", "detect", "classify", "track", "pose", "render", "write", "join")


def summary_card(summary: dict | None, size_bytes: int | None = None) -> dict | None:
    """summary.json as the job page shows it: what was found, how, how long, from what input."""
    if not summary:
        return None
    s = summary
    animals, settings, models = s.get("animals") or {}, s.get("settings") or {}, s.get("models") or {}
    frames, timings, inp = s.get("frames") or {}, s.get("timings_s") or {}, s.get("input") or {}
    tracks = [t for t in (s.get("tracks") or []) if isinstance(t, dict)]
    species: dict[str, int] = {}
    for t in tracks:
        if t.get("species"):
            species[t["species"]] = species.get(t["species"], 0) + 1
    staged = sum(float(v or 0) for k, v in timings.items() if k in STAGES)
    total = float(timings.get("total") or staged or 0)
    # Decode, draw and encode run in threads beside the models (overlapped stages), and a segmented
    # video's segments may run side by side: the stages can add up to more than the wall time, so
    # the bar shows each stage's share of the stages' time, and always fits.
    span = max(total, staged)
    stages, x = [], 0.0
    for name in STAGES:
        seconds = float(timings.get(name) or 0)
        if seconds > 0 and span > 0:
            width = 100 * seconds / span
            stages.append({"name": name, "seconds": seconds, "x": round(x, 2), "width": round(width, 2),
                           "share": round(width)})
            x += width
    analysed = int(frames.get("analysed") or 0)
    model = lambda kind: (models.get(kind) or {}).get("name")                    # noqa: E731
    return {
        "found": {"most": animals.get("max_per_frame"), "distinct": animals.get("distinct", len(tracks)),
                  "frames_with": animals.get("frames_with_animals"), "analysed": analysed,
                  "species": sorted(species.items(), key=lambda kv: (-kv[1], kv[0])),
                  "tracks": tracks[:50], "more_tracks": max(0, len(tracks) - 50)},
        "how": [(label, value) for label, value in (
            ("Profile", s.get("profile")), ("Detector", model("detector")), ("Classifier", model("classifier") or "none"),
            ("Pose", model("pose")), ("Sampled", f"{settings['fps']:g} frames/s" if settings.get("fps") else
                                      "every frame" if "fps" in settings else None),
            ("Detection threshold", settings.get("detection_threshold")),
            ("Detector image size", f"{settings['detector_image_size']} px" if settings.get("detector_image_size")
             else None),
            ("Most animals posed", settings.get("max_animals")), ("Smoothing", _smoothing(settings)),
            ("Device", settings.get("device")), ("wildswarm", s.get("wildswarm_version"))) if value is not None],
        "time": {"total": total, "stages": stages,
                 "rate": round(analysed / total, 2) if total and analysed else None,
                 "load": s.get("model_load_s"), "host": s.get("host")},
        "input": [(label, value) for label, value in (
            ("Frame size", f"{inp['width']} × {inp['height']}" if inp.get("width") else None),
            ("Frame rate", f"{inp['fps']:g} frames/s" if inp.get("fps") else None),
            ("Duration", f"{inp['duration_s']:g} s" if inp.get("duration_s") is not None else None),
            ("Frames", inp.get("frames")), ("Codec", inp.get("codec")),
            ("File size", size_bytes)) if value is not None],
    }


def _smoothing(settings: dict) -> str | None:
    if "smooth" not in settings:
        return None
    return "none" if settings["smooth"] == "none" else f"{settings['smooth']} over {settings.get('smooth_window')} frames"
