"""What killed model downloads, exports, quantizations and atomic writes leave in models/ and the cache.

The producer (every ten minutes) and each pipeline as it loads remove those nobody touched for hours
(:func:`sweep_leftovers`): another node's growing download or running export is never taken.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
import time

log = logging.getLogger(__name__)


#: Temporary folders a killed ``wildswarm models fetch``, ONNX export (pipeline/onnx_exports.py) or int8
#: quantization (pipeline/quantize.py) leaves beside the models or in the backends' cache.
LEFTOVER_DIRS = (".fetch-", ".export-", ".int8-")
#: How long a leftover must be untouched before it is removed. Those writers keep their files growing
#: (a download) or finish in minutes (an export, a calibration); another node may run one on the same
#: shared folder meanwhile, so only what nobody touched for hours is taken for dead.
LEFTOVER_SECONDS = 6 * 3600.0


def _newest_mtime(path: str) -> float:
    newest = os.lstat(path).st_mtime
    for top, dirs, files in os.walk(path):
        for name in dirs + files:
            with contextlib.suppress(FileNotFoundError):
                newest = max(newest, os.lstat(os.path.join(top, name)).st_mtime)
    return newest


def _leftover_file(name: str) -> bool:
    """An atomic write's temporary file: ``.<file>.<random or pid>.tmp`` (models.py, weights_lock.py,
    runtime.py's compiled networks, :func:`~wildswarm.layout.atomic_write`) or ``.backends-<random>`` (the timings)."""
    return name.startswith(".") and (name.endswith(".tmp") or name.startswith(".backends-"))


def sweep_leftovers(folders, older_than: float = LEFTOVER_SECONDS) -> int:
    """Remove, in ``folders`` (models/ and the backends' cache) and below, the temporary folders and
    files of model downloads, exports and atomic writes that died midway and that nobody touched for
    ``older_than`` seconds; returns how many were removed. Symlinks are never followed nor removed;
    a folder that cannot be written (models/ is read-only to workers) is left as it is, quietly."""
    removed, now = 0, time.time()
    for folder in folders:
        for top, dirs, files in os.walk(folder):        # os.walk never descends through a symlink
            for name in [d for d in dirs if d.startswith(LEFTOVER_DIRS)]:
                dirs.remove(name)
                path = os.path.join(top, name)
                try:
                    if os.path.islink(path) or now - _newest_mtime(path) <= older_than:
                        continue
                    shutil.rmtree(path)
                    removed += 1
                except OSError as exc:
                    log.debug("leftover %s not removed: %s", path, exc)
            for name in filter(_leftover_file, files):
                path = os.path.join(top, name)
                try:
                    st = os.lstat(path)
                    if not stat.S_ISLNK(st.st_mode) and now - st.st_mtime > older_than:
                        os.unlink(path)
                        removed += 1
                except OSError as exc:
                    log.debug("leftover %s not removed: %s", path, exc)
    if removed:
        log.info("removed %d leftover(s) of model downloads, exports or writes that died midway from %s",
                 removed, ", ".join(str(f) for f in folders))
    return removed
