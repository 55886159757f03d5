"""Where things live on the shared filesystem.

::

    input/          drop zone (scp, or where an upload lands once complete)
    input_done/     inputs whose job succeeded
    input_failed/   inputs whose job failed for good
    output/<name>/  one folder of results per video
    uploads/        web uploads and submitted copies while they arrive (service only)
    models/         model weights shared by all workers (read-only to them)
    logs/<node>.log per-node progress lines (the lines before its last LOG_KEEP_BYTES in <node>.log.1)
    jobs/<id>.json  job records of earlier versions (imported once into the job store)
    cache/          the workers' backend timings, exports and compiled networks (Settings.cache)

Every path built from user input goes through :func:`safe_name` and
:meth:`Layout.inside`, so nothing escapes the root.
"""
from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import re
import shutil
import stat
import threading
import time
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from wildswarm.errors import UnsafePathError

log = logging.getLogger(__name__)

MAX_NAME = 120
NAME_MAX = 255                    # bytes in one file name (ext4, XFS, BeeGFS): a dropped file's may be that long
PART_PREFIX = ".upload-"          # a web upload's part file in uploads/ while it arrives
STAGED_PREFIX = ".incoming-"      # a submitted copy in uploads/ while it is copied
#: errno values that mean "this filesystem has no hard links here": fall back to a rename.
NO_LINKS = (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK)
# Every character at which str.splitlines() (and so the logs page) starts a new line, written escaped
LINE_BREAKS = {ord(c): c.encode("unicode_escape").decode("ascii")
               for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}
_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str, *, max_len: int = MAX_NAME) -> str:
    """Turn a user-given file name into a safe base name.

    Directory parts are dropped (``../../x.mp4`` -> ``x.mp4``), control and
    shell-special characters become ``_``, the result never starts with a
    dot, and it is at most ``max_len`` characters with its extension kept.
    Raises :class:`UnsafePathError` if nothing usable is left.
    """
    name = unicodedata.normalize("NFKD", str(name)).replace("\\", "/").split("/")[-1]
    # the extension is split off before anything is dropped: a stem of no ASCII at all (猫.mp4) becomes
    # "video", not an extension-less "mp4"; a hidden name's only dot (.mp4) starts no extension
    stem, dot, ext = name.rpartition(".")
    if not stem.strip("."):
        stem, ext = name, ""
    stem, ext = (_BAD.sub("_", part.encode("ascii", "ignore").decode()) for part in (stem, ext))
    stem, ext = stem.strip("._-"), ext.rstrip("._-")[:10]
    if not stem and not ext:
        raise UnsafePathError("file name has no usable characters")
    room = max_len - (len(ext) + 1 if ext else 0)
    stem = stem[:room].rstrip("._-") or "video"
    return f"{stem}.{ext}" if ext else stem


#: ``output/.segments/<stem>/``: a long video's finished segments, until the whole video is recorded done.
SEGMENTS_DIR = ".segments"
#: A node log past this size starts afresh, the lines before kept in ``<node>.log.1`` (that one's earlier
#: lines dropped): a process that runs for months must not grow its log on the shared filesystem for as
#: long (a worker writes ~300 bytes a video; the logs page reads only the last 256 KiB).
LOG_KEEP_BYTES = 16 << 20


def stem_of(name: str) -> str:
    """The output-folder name for an input file name."""
    return Path(safe_name(name)).stem


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def input(self) -> Path:
        return self.root / "input"

    @property
    def input_done(self) -> Path:
        return self.root / "input_done"

    @property
    def input_failed(self) -> Path:
        return self.root / "input_failed"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def uploads(self) -> Path:
        return self.root / "uploads"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def ensure(self) -> "Layout":
        for d in (self.input, self.input_done, self.input_failed, self.output,
                  self.uploads, self.models, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        return self

    def inside(self, path: Path) -> Path:
        """``path`` resolved, or :class:`UnsafePathError` if it leaves the root."""
        root = self.root.resolve()
        resolved = (root / path).resolve()
        if resolved != root and root not in resolved.parents:
            raise UnsafePathError(f"{path} is outside the data root")
        return resolved

    def output_dir(self, name: str) -> Path:
        return self.inside(self.output / safe_name(name))

    def log_file(self, node: str) -> Path:
        return self.inside(self.logs / f"{safe_name(node)}.log")

    def unique_input(self, name: str, mine: Path | None = None) -> Path:
        """A fresh path in ``input/`` for ``name``: ``x.mp4``, ``x-1.mp4``, ... (see :meth:`name_taken`;
        ``mine``: the file being placed, which takes nothing from itself)."""
        clean = safe_name(name)
        stem, ext = Path(clean).stem, Path(clean).suffix
        for n in range(0, 10_000):
            candidate = f"{stem}{ext}" if n == 0 else f"{stem}-{n}{ext}"
            if not self.name_taken(candidate, mine):
                return self.input / candidate
        raise UnsafePathError(f"no free name for {clean}")

    def name_taken(self, name: str, mine: Path | None = None) -> bool:
        """Whether another video already owns ``name``'s result folder, ``output/<stem>/``: its results are
        there, a video of that stem waits in ``input/`` (``x.MP4`` beside ``x.mp4``), or one of that name
        (in any case) has moved on to ``input_done/`` or ``input_failed/`` (where a failed job waits for a
        retry). Two videos of one stem would write one folder, the second replacing the first's results."""
        stem, ext = Path(name).stem, Path(name).suffix
        if (self.output / stem).exists():
            return True
        variants = {stem + "".join(c) for c in itertools.product(*({ch.lower(), ch.upper()} for ch in ext))}
        moved_on = (d / v for d in (self.input_done, self.input_failed) for v in variants)
        return any(p != mine and p.exists() for p in moved_on) or self.stem_waiting(stem, mine=mine)

    def stem_waiting(self, stem: str, mine: Path | None = None) -> bool:
        """Whether a video of ``stem`` (other than ``mine``) waits in ``input/``: queued or being analysed."""
        with contextlib.suppress(FileNotFoundError):
            return any(p != mine and p.stem == stem and not p.name.startswith(".") and p.is_file()
                       for p in self.input.iterdir())
        return False

    def claim_input(self, src: Path, name: str, *, exact_first: bool = False) -> Path:
        """Move ``src`` into input/ under a free name for ``name``; never overwrites.

        A hard link then an unlink, so a name is claimed atomically even when
        several processes race for it; a rename where the filesystem has no
        hard links. With ``exact_first``, ``name`` itself is tried before
        :meth:`unique_input`'s variants.
        """
        for n in range(100):
            exact = exact_first and n == 0 and not self.name_taken(name, mine=src)
            dest = self.input / name if exact else self.unique_input(name, mine=src)
            try:
                if _take_name(src, dest):
                    return dest
            except FileNotFoundError:
                raise FileNotFoundError(errno.ENOENT, f"{src.name} is gone: it cannot be moved into input/") from None
        raise UnsafePathError(f"no free name for {name} in input/")

    def staging_path(self, name: str, prefix: str = STAGED_PREFIX) -> Path:
        """A fresh hidden path in uploads/ for a copy of ``name`` while it arrives."""
        return self.uploads / f"{prefix}{uuid.uuid4().hex[:16]}-{safe_name(name)}"

    def sweep_uploads(self, older_than: float) -> int:
        """Remove part files in uploads/ untouched for ``older_than`` seconds (their request or copy died)."""
        removed, now = 0, time.time()
        try:
            entries = list(os.scandir(self.uploads))
        except FileNotFoundError:
            return 0
        for entry in entries:
            if not entry.name.startswith((PART_PREFIX, STAGED_PREFIX)) or not entry.is_file(follow_symlinks=False):
                continue
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime > older_than:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        if removed:
            log.info("removed %d stale part file(s) from %s", removed, self.uploads)
        return removed

    def failed_input(self, job) -> Path | None:
        """Where the input of a failed job is: input_failed/ (perhaps renamed with its id), or still input/."""
        from wildswarm.jobs import job_id_for
        name = job.input_name
        ext, tag = Path(name).suffix, job.id[:8]
        stem = _tagged_stem(Path(name).stem, tag, ext)
        candidates = [self.input_failed / name, self.input_failed / f"{stem}-{tag}{ext}"]
        candidates += sorted(self.input_failed.glob(f"{stem}-{tag}-*{ext}"))
        for path in candidates:
            if path.is_file() and not path.is_symlink():
                return path
        here = self.input / name            # never moved (e.g. the worker stopped first): if it is this video
        if here.is_file() and not here.is_symlink() and job_id_for(here) == job.id:
            return here
        return None

    def log(self, node: str, line: str) -> bool:
        """Append one human-readable line to ``logs/<node>.log``; best effort (False if it could not).

        A node log is for people: a full or read-only filesystem must never turn
        writing it into a failure of the work it describes.
        """
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        line = line.translate(LINE_BREAKS)     # what it quotes (a dropped file's name) cannot forge a line
        try:
            path = self.log_file(node)
            path.parent.mkdir(parents=True, exist_ok=True)
            # errors="replace": a name it quotes may not be UTF-8 (a file name of Latin-1 bytes, read with
            # surrogates), and UnicodeEncodeError is no OSError
            with open(path, "a", encoding="utf-8", errors="replace") as fh:
                fh.write(f"{stamp} {node} {line}\n")
                fh.flush()
                written = os.fstat(fh.fileno())
        except (OSError, UnsafePathError) as exc:
            log.warning("node log not written (%s): %s", exc, line)
            return False
        if written.st_size >= LOG_KEEP_BYTES:
            _start_afresh(path, written)
        return True


def _start_afresh(path: Path, written: os.stat_result) -> None:
    """Move the full node log ``path`` (``written``: the file this process just wrote to) to ``<name>.1``, in
    place of the one before; the next line starts a new ``path``. Several processes write one node's log
    (the workers of a node, the web app's): only the file that is still ``path`` is moved, so a log another
    process has just started afresh is never moved over the lines kept before it. Best effort, as the line."""
    try:
        now = os.stat(path, follow_symlinks=False)
        if (now.st_dev, now.st_ino) == (written.st_dev, written.st_ino):
            os.replace(path, path.with_name(path.name + ".1"))
    except OSError as exc:
        log.warning("node log %s not started afresh: %s", path.name, exc)


def partial_results(root: Path, name: str) -> list[Path]:
    """What attempts at the result ``name`` in ``root`` left when they died mid-write: its own
    ``.tmp-<name>-XXXXXXXX`` folders (the result being written, pipeline/outputs.py) and
    ``.old-<name>-<pid>`` (the earlier result being replaced), never another name's: other workers may
    be writing their results beside them."""
    pattern = re.compile(rf"\.(tmp-{re.escape(name)}-[A-Za-z0-9_]{{8}}|old-{re.escape(name)}-\d+)")
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        return sorted(p for p in Path(root).iterdir() if pattern.fullmatch(p.name) and not p.is_symlink())
    return []


def remove_partial_results(root: Path, name: str) -> list[Path]:
    """Remove :func:`partial_results`; returns those removed."""
    removed = []
    for path in partial_results(root, name):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    return removed


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename; on failure nothing is left behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        with open(tmp, mode, **({} if isinstance(data, bytes) else {"encoding": "utf-8"})) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _take_name(src: Path, dest: Path) -> bool:
    """Move ``src`` to ``dest`` unless that name is taken (False): a hard link then an unlink, so a name is
    claimed atomically even when several processes race for it; a rename where the filesystem has no hard
    links. A link at ``src`` is moved as itself, never the file it points to (one swapped in)."""
    try:
        os.link(src, dest, follow_symlinks=False)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in NO_LINKS:
            raise
        if dest.exists():                 # no hard links on this filesystem
            return False
        os.rename(src, dest)
        return True
    src.unlink()
    return True


def readable(name: str) -> str:
    """``name`` as UTF-8 can hold it: a name of bytes in another encoding (Latin-1 from an old camera's
    software, CP437 from a zip) reads with surrogates (os.fsdecode), which the job store and the logs
    cannot take; each byte that is not UTF-8 becomes U+FFFD."""
    return os.fsencode(name).decode("utf-8", "replace")


def renamed_readable(path: Path) -> Path:
    """``path``, renamed in its own folder to its :func:`readable` name if its name is not UTF-8; never
    overwrites (``x-1``, ``x-2``, ... if that name is taken)."""
    name = readable(path.name)
    if name == path.name:
        return path
    stem, ext = Path(name).stem, Path(name).suffix
    for n in range(100):
        dest = path.with_name(name if n == 0 else f"{stem}-{n}{ext}")
        if _take_name(path, dest):
            return dest
    raise UnsafePathError(f"no free name for {name} in {path.parent}")


def _tagged_stem(stem: str, tag: str, ext: str) -> str:
    """``stem`` as far as it fits before ``-<tag>-99<ext>``: a dropped name near the limit gives way to the tag
    (move_into names a file so; Layout.failed_input finds it by the same)."""
    while stem and len(os.fsencode(f"{stem}-{tag}-99{ext}")) > NAME_MAX:
        stem = stem[:-1]
    return stem


def _moved_names(name: str, tag: str) -> list[str]:
    """The names :func:`move_into` tries for ``name``, in order."""
    ext = Path(name).suffix
    stem = _tagged_stem(Path(name).stem, tag, ext)
    return [name, f"{stem}-{tag}{ext}"] + [f"{stem}-{tag}-{n}{ext}" for n in range(1, 100)]


def free_name(dest_dir: Path, name: str, tag: str) -> str:
    """The name :func:`move_into` would give a file ``name`` in ``dest_dir`` now (to record it before it moves)."""
    for candidate in _moved_names(name, tag):
        if not os.path.lexists(dest_dir / candidate):
            return candidate
    raise OSError(f"no free name for {name} in {dest_dir}")


def move_into(src: Path, dest_dir: Path, tag: str) -> Path | None:
    """Move ``src`` into ``dest_dir`` without overwriting; None if ``src`` is already gone.

    A name taken there gets ``-<tag>`` (then ``-<tag>-1``, ...) before its extension.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    for candidate in _moved_names(src.name, tag):
        dest = dest_dir / candidate
        try:
            os.link(src, dest)          # fails if dest exists: never overwrites
        except FileExistsError:
            with contextlib.suppress(OSError):
                if os.path.samefile(src, dest):     # another process is moving it too
                    src.unlink(missing_ok=True)
                    return dest
            continue
        except FileNotFoundError:
            return None
        except OSError as exc:          # no hard links here: rename if the name is free
            if exc.errno not in NO_LINKS:
                raise
            if dest.exists():
                continue
            try:
                shutil.move(str(src), str(dest))
            except FileNotFoundError:
                return None
            return dest
        src.unlink(missing_ok=True)
        return dest
    raise OSError(f"no free name for {src.name} in {dest_dir}")
