"""``models/weights.lock.json``: the SHA-256 of every weight file wildswarm accepted, and how.

One JSON file beside the weights, keyed by file name::

    {"format": "wildswarm-weights-lock/1",
     "files": {"MDV6b-yolov9-c.pt": {"model": "MDV6-yolov9-c", "sha256": "...", "size": 51597857,
                                     "source": "https://zenodo.org/...", "when": "2025-06-01T12:00:00Z",
                                     "how": "fetched"}}}

``how`` is ``fetched`` (downloaded by ``wildswarm models fetch``), ``untrained`` (random weights
built by wildswarm) or ``trusted-by-hand`` (a file someone copied in and vouched for with
``wildswarm models trust``).

Readers never lock: the file is only ever replaced whole (write a temporary file, fsync, rename),
so they see the old version or the new one. Writers take a mutex -- a file created with
``O_CREAT|O_EXCL`` beside the lock -- because the folder is on a shared filesystem where several
workers on several nodes may build untrained stand-ins at once. ``flock`` would be simpler, but
BeeGFS applies it only within one client node unless ``tuneUseGlobalFileLocks`` is set, while an
exclusive create is atomic on its metadata server. A mutex older than ``STALE_S`` (its holder
died; a write takes milliseconds) is broken.
"""
from __future__ import annotations

import json
import os
import socket
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from wildswarm.errors import ModelError

LOCK_NAME = "weights.lock.json"
MUTEX_NAME = ".weights.lock.json.mutex"
FORMAT = "wildswarm-weights-lock/1"
HOW = ("fetched", "untrained", "trusted-by-hand")
STALE_S = 60.0  # a mutex this old belongs to a writer that died
WAIT_S = 120.0  # give up waiting for a live writer after this long


@dataclass(frozen=True)
class Entry:
    file: str
    model: str
    sha256: str
    size: int
    source: str
    when: str
    how: str

    def describe(self) -> str:
        return f"sha256 {self.sha256}, {self.how} {self.when}"


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def lock_path(models_dir: Path | str) -> Path:
    return Path(models_dir) / LOCK_NAME


def read(models_dir: Path | str) -> dict[str, Entry]:
    """The recorded entries by file name; empty where there is no lock file yet."""
    path = lock_path(models_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ModelError(f"{path} cannot be read: {exc}") from None
    try:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, not {FORMAT!r}")
        files = data["files"]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"{path} cannot be read ({exc}); restore it from a backup, or move it away and "
                         f"record each file again (`wildswarm models fetch` or `trust`)") from None
    entries = {}
    for name, fields in files.items():
        try:
            entry = Entry(file=name, **fields)
            valid = (entry.how in HOW and len(entry.sha256) == 64 and isinstance(entry.size, int)
                     and int(entry.sha256, 16) >= 0)
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise ModelError(f"{path}: the entry for {name} is malformed; record that file again")
        entries[name] = entry
    return entries


def record(models_dir: Path | str, entry: Entry) -> None:
    with updating(models_dir) as entries:
        entries[entry.file] = entry


@contextmanager
def updating(models_dir: Path | str) -> Iterator[dict[str, Entry]]:
    """Hold the mutex and yield the entries to change; they are written back, atomically, on exit.

    Whatever the caller does inside (say, renaming the weight file into place) happens under the same
    mutex, so a weight file and its entry change together.
    """
    folder = Path(models_dir)
    with _mutex(folder):
        entries = read(folder)
        before = dict(entries)
        yield entries
        if entries != before:
            _write(folder, entries)


def _write(folder: Path, entries: dict[str, Entry]) -> None:
    data = {"format": FORMAT,
            "comment": "SHA-256 of each weight file wildswarm loads; written by `wildswarm models "
                       "fetch|trust|untrained`, see docs/models.md. Do not edit by hand.",
            "files": {name: {k: v for k, v in asdict(e).items() if k != "file"}
                      for name, e in sorted(entries.items())}}
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{LOCK_NAME}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, lock_path(folder))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable; not every filesystem lets a directory be fsynced
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


@contextmanager
def _mutex(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MUTEX_NAME
    me = f"{os.getpid()}@{socket.gethostname()}"
    deadline = time.monotonic() + WAIT_S
    delay = 0.005
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder, age = _holder(path)
            if age is not None and age > STALE_S:
                _break(path)
                continue
            if time.monotonic() > deadline:
                raise ModelError(f"{path} has been held by {holder or 'another process'} for {age or 0:.0f} s; "
                                 f"if no `wildswarm models` command or worker start is running, remove it") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(me + "\n")
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _holder(path: Path) -> tuple[str, float | None]:
    try:
        age = time.time() - path.stat().st_mtime
        return path.read_text().strip(), age
    except OSError:  # released meanwhile
        return "", None


def _break(path: Path) -> None:
    # Rename, then remove: of several processes that found it stale, exactly one rename succeeds.
    stale = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex}")
    try:
        os.rename(path, stale)
    except FileNotFoundError:
        return
    try:
        if time.time() - stale.stat().st_mtime <= STALE_S:
            # Another breaker got there first and a live writer made a fresh mutex, which we just
            # moved: put it back (link fails if yet another one exists, which then holds it).
            os.link(stale, path)
    except OSError:
        pass
    stale.unlink(missing_ok=True)
