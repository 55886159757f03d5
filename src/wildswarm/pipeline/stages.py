"""Overlapped stages: decode ahead and draw behind the models, in threads, with bounded queues.

PyAV decodes and encodes with the GIL released, and so does inference, so a decode thread
(``Ahead``) and a draw-and-encode thread (``Behind``) can run beside the models. The queues hold a
few batches at most, so memory stays bounded whatever the video's length.

On a CPU node the threads share the cores with inference. They still pay there: between forward
passes the main thread runs single-threaded Python (letterbox, NMS, crops, heatmap decoding, the
tracker) and leaves the other cores idle, which is when decode, draw and encode get done. Measured
on 2 cores with 2 inference threads (``python -m bench.pipeline --variants auto,default``, the
default profile overlapped against auto in turn): 4-6 % more frames/s in fp32 over two runs (2.65
against 2.56, 2.88 against 2.73), none in bf16 (4.52 against 4.52), never fewer. ``overlap_wanted``
therefore keeps it on wherever there are two cores or a GPU; one core has no gap to fill.
"""
from __future__ import annotations

import ctypes
import math
import os
import queue
import sys
import threading
from pathlib import Path
from typing import Callable, Iterator

_END = object()


class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


def usable_cpus() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota (a
    container's ``cpus`` limit), which the affinity does not show."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return n


MALLOC_ARENAS = 2
_M_ARENA_MAX = -8   # malloc.h


def cap_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for the threads to come (``mallopt(M_ARENA_MAX)``).

    glibc gives every new thread that allocates an arena of its own, up to 8 per core, and memory
    freed in one arena is not reused by another thread. With the decode and draw threads and the
    inference libraries' pools, a worker's resident memory settled ~300 MB higher than with two
    arenas, at the same speed (measured on 2 cores: 2.81 against 2.53 GB after four rounds of the seed
    videos). ``MALLOC_ARENA_MAX`` in the environment, which glibc reads itself, wins. Returns
    whether the cap was set here (not on other C libraries, or where the environment sets it)."""
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, int(arenas)))
    except (OSError, AttributeError):  # musl and others: no mallopt, no arenas to cap
        return False


def overlap_wanted(setting: str, device: str) -> bool:
    """``on``/``off`` as set; ``auto``: on a GPU node, and on a CPU node of two cores or more (see the
    module's doc for why it pays even where the inference threads take every core)."""
    if setting in ("on", "off"):
        return setting == "on"
    if setting != "auto":
        raise ValueError(f"overlap must be auto, on or off, not {setting!r}")
    return not device.startswith("cpu") or usable_cpus() >= 2


def codec_threads(device: str) -> int:
    """Threads for decoding the video and encoding the labeled one: one on a CPU node, the codec's
    own choice (0) on a GPU node.

    On a CPU node the decode and draw threads run beside inference, which has every core, so the
    codecs' own frame threads only add their synchronisation. Measured on 2 cores, the seed videos
    at 5 frames/s: decoding took 131 ms of CPU in one thread against 160 ms in FFmpeg's threads
    (the same frames); encoding 18 frames of 640x360 took 111 ms with one x264 thread against 172
    ms with its default, for the same file (177.9 against 178.7 kB). A GPU node has idle cores, and
    a fast pipeline there needs the codecs' parallelism."""
    return 1 if device.startswith("cpu") else 0


class Ahead:
    """Iterate ``source`` in a thread, at most ``depth`` items ahead of the consumer. An exception
    in the source is raised in the consumer, at the item where it happened."""

    def __init__(self, source: Iterator, depth: int = 2, name: str = "wildswarm-decode"):
        self._q: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(source,), name=name, daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, source: Iterator) -> None:
        try:
            for item in source:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as exc:  # handed to the consumer
            self._put(_Failed(exc))
        finally:
            close = getattr(source, "close", None)
            if close:
                close()

    def __iter__(self):
        while True:
            item = self._q.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item

    def close(self) -> None:
        """Stop the thread (the consumer may have stopped early) and wait for it."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._q.get(timeout=0.1)
            except queue.Empty:
                pass
        self._thread.join()


class Behind:
    """Call ``fn(*item)`` for each item ``put``, in order, in a thread, at most ``depth`` items behind,
    then ``last()`` (closing the labeled video) once every item is done. The first exception ``fn``
    or ``last`` raises comes back from the next ``put`` or from ``close``; after one, the remaining
    items and ``last`` are skipped. ``end`` lets the thread finish while the producer goes on."""

    def __init__(self, fn: Callable, depth: int = 2, name: str = "wildswarm-draw", last: Callable | None = None):
        self._fn, self._last = fn, last
        self._q: queue.Queue = queue.Queue(depth)
        self._error: BaseException | None = None
        self._abandoned = False
        self._ended = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is _END:
                break
            if self._error is not None or self._abandoned:
                continue
            try:
                self._fn(*item)
            except BaseException as exc:  # handed to the producer
                self._error = exc
        if self._last is not None and self._error is None and not self._abandoned:
            try:
                self._last()
            except BaseException as exc:
                self._error = exc

    def put(self, *item) -> None:
        if self._error is not None:
            raise self._error
        self._q.put(item)

    def end(self) -> None:
        """No more items: the thread finishes them and ``last`` on its own; returns at once."""
        if not self._ended:
            self._ended = True
            self._q.put(_END)

    def close(self) -> None:
        """Wait until every item and ``last`` are done; raise what ``fn`` or ``last`` raised."""
        self.end()
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """Drop what is still queued, skip ``last``, and stop (the producer failed)."""
        self._abandoned = True
        self.end()
        self._thread.join()
