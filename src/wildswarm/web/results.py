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
from wildswarm.jobs import Job
from wildswarm.layout import Layout, stem_of

from wildswarm.pipeline import files as result_files

#: Result files in the order and with the words the pages use (pipeline/files.py defines them).
LABELS = {f.name: f.label for f in result_files.RESULT_FILES}
VIDEO, PLOT, SUMMARY = result_files.LABELED_VIDEO, result_files.TRAJECTORY, result_files.SUMMARY
COMPRESSIBLE = (".json", ".csv", ".txt", ".log")
MAX_SUMMARY_BYTES = 1 << 20
CHUNK = 1 << 20


@dataclass(frozen=True)
class OutputFile:
    name: str
    size: int
    label: str


def plain_name(name: str) -> bool:
    """A single, visible path component without control characters."""
    return bool(name) and len(name) <= 255 and "/" not in name and "\\" not in name \
        and not name.startswith(".") and not any(ord(c) < 32 or ord(c) == 127 for c in name)


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
    """The visible regular files of a result folder (no links), known ones first."""
    if folder is None:
        return []
    found = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
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


def zip_stream(folder: Path, files: list[OutputFile], prefix: str) -> Iterator[bytes]:
    """The files as one zip archive, produced chunk by chunk (never whole in memory)."""
    sink = _Sink()
    # Deflate everything (fast level for videos and images): a streamed entry carries its sizes in a
    # trailing data descriptor, which some readers accept only for deflated entries.
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
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


def summary_rows(summary: dict | None, max_text: int = 400) -> list[tuple[str, str]]:
    """summary.json as (label, text) rows for a page: nested objects flattened one level."""
    rows: list[tuple[str, str]] = []
    for key, value in (summary or {}).items():
        if key in ("warning", "files", "bodyparts") or value is None:
            continue
        if key == "tracks" and isinstance(value, list):
            shown = [f"{t.get('name')}: frames {t.get('first_frame')}–{t.get('last_frame')} ({t.get('frames')} analysed)"
                     for t in value[:10] if isinstance(t, dict)]
            text = ", ".join(shown) + (f" … {len(value)} tracks in all" if len(value) > 10 else "") or "none"
        elif isinstance(value, dict):
            parts = []
            for k, v in value.items():
                if isinstance(v, dict):
                    v = ", ".join(f"{a} {b}" for a, b in v.items() if not isinstance(b, (dict, list))) or "–"
                elif isinstance(v, list):
                    v = ", ".join(map(str, v[:10])) or "–"
                parts.append(f"{k}: {v}")
            text = " · ".join(parts) or "–"
        elif isinstance(value, list):
            text = ", ".join(map(str, value[:20]))
        else:
            text = str(value)
        rows.append((str(key).replace("_", " "), text[:max_text]))
    return rows
