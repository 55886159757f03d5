"""Where things live on the shared filesystem.

::

    input/          drop zone (scp or web upload)
    input_done/     inputs whose job succeeded
    input_failed/   inputs whose job failed for good
    output/<name>/  one folder of results per video
    jobs/<id>.json  job records
    models/         model weights shared by all workers
    logs/<node>.log per-node progress lines

Every path built from user input goes through :func:`safe_name` and
:meth:`Layout.inside`, so nothing escapes the root.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import threading
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from wildswarm.errors import UnsafePathError

MAX_NAME = 120
_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str, *, max_len: int = MAX_NAME) -> str:
    """Turn a user-given file name into a safe base name.

    Directory parts are dropped (``../../x.mp4`` -> ``x.mp4``), control and
    shell-special characters become ``_``, the result never starts with a
    dot, and it is at most ``max_len`` characters with its extension kept.
    Raises :class:`UnsafePathError` if nothing usable is left.
    """
    name = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()
    name = name.replace("\\", "/").split("/")[-1]
    name = _BAD.sub("_", name).strip("._-")
    if not name or set(name) <= {"_", "."}:
        raise UnsafePathError("file name has no usable characters")
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    ext = ext[:10]
    room = max_len - (len(ext) + 1 if ext else 0)
    stem = stem[:room].rstrip("._-") or "video"
    return f"{stem}.{ext}" if ext else stem


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
                  self.jobs, self.models, self.logs):
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

    def job_file(self, job_id: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{8,64}", job_id):
            raise UnsafePathError(f"not a job id: {job_id!r}")
        return self.jobs / f"{job_id}.json"

    def log_file(self, node: str) -> Path:
        return self.inside(self.logs / f"{safe_name(node)}.log")

    def unique_input(self, name: str) -> Path:
        """A fresh path in ``input/`` for ``name``: ``x.mp4``, ``x-1.mp4``, ...

        A name is taken if it exists in any input folder or already names an
        output folder, so results of two different uploads never collide.
        """
        clean = safe_name(name)
        stem, ext = Path(clean).stem, Path(clean).suffix
        for n in range(0, 10_000):
            candidate = f"{stem}{ext}" if n == 0 else f"{stem}-{n}{ext}"
            cstem = Path(candidate).stem
            if not any((d / candidate).exists() for d in (self.input, self.input_done, self.input_failed)) \
                    and not (self.output / cstem).exists():
                return self.input / candidate
        raise UnsafePathError(f"no free name for {clean}")

    def claim_input(self, src: Path, name: str, *, exact_first: bool = False) -> Path:
        """Move ``src`` into input/ under a free name for ``name``; never overwrites.

        A hard link then an unlink, so a name is claimed atomically even when
        several processes race for it; a rename where the filesystem has no
        hard links. With ``exact_first``, ``name`` itself is tried before
        :meth:`unique_input`'s variants.
        """
        for n in range(100):
            dest = self.input / name if exact_first and n == 0 else self.unique_input(name)
            try:
                os.link(src, dest)
            except FileExistsError:
                continue
            except OSError:                       # no hard links on this filesystem
                if dest.exists():
                    continue
                os.rename(src, dest)
                return dest
            src.unlink()
            return dest
        raise UnsafePathError(f"no free name for {name} in input/")

    def log(self, node: str, line: str) -> None:
        """Append one human-readable line to ``logs/<node>.log``."""
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        path = self.log_file(node)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{stamp} {node} {line}\n")


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(tmp, mode, **({} if isinstance(data, bytes) else {"encoding": "utf-8"})) as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def move_into(src: Path, dest_dir: Path, tag: str) -> Path | None:
    """Move ``src`` into ``dest_dir`` without overwriting; None if ``src`` is already gone.

    A name taken there gets ``-<tag>`` (then ``-<tag>-1``, ...) before its extension.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    stem, ext = src.stem, src.suffix
    candidates = [src.name, f"{stem}-{tag}{ext}"] + [f"{stem}-{tag}-{n}{ext}" for n in range(1, 100)]
    for candidate in candidates:
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
            if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EMLINK):
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
