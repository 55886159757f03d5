"""Real faults for tests: a tmpfs that can be turned read-only or filled (real EROFS / ENOSPC).

Mounting needs root (CI runs as root); elsewhere the tests that use it are skipped with the reason.
"""
from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest


class Tmpfs:
    """A small tmpfs mounted at ``path`` for one test."""

    def __init__(self, path: Path, size: str = "32m"):
        self.path, self.size = Path(path), size
        self.filler = self.path / ".filler"

    def _mount(self, *args: str) -> None:
        subprocess.run(["mount", *args], check=True, timeout=30, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def mount(self) -> "Tmpfs":
        self.path.mkdir(parents=True, exist_ok=True)
        self._mount("-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs", str(self.path))
        return self

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], timeout=30, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    def read_only(self) -> None:
        self._mount("-o", "remount,ro", str(self.path))

    def read_write(self) -> None:
        self._mount("-o", "remount,rw", str(self.path))

    def fill(self) -> None:
        """Write a file until the filesystem is full (ENOSPC); :meth:`unfill` frees it again."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 20, 65536, 4096, 512, 1):     # down to the last crumbs
                block = b"\0" * size
                while True:
                    try:
                        os.write(fd, block)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)

    def unfill(self) -> None:
        self.filler.unlink(missing_ok=True)


def can_mount() -> bool:
    return os.geteuid() == 0


def require_mount() -> None:
    if not can_mount():
        pytest.skip("mounting a tmpfs for a real read-only or full filesystem needs root (CI runs as root)")
