"""Overlapped stages: order kept, memory bounded, failures raised where they belong, threads stopped."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from wildswarm.pipeline import stages


def test_ahead_keeps_order_and_stays_at_most_depth_items_ahead():
    made = []

    def source():
        for i in range(20):
            made.append(i)
            yield i

    ahead = stages.Ahead(source(), depth=2)
    it = iter(ahead)
    assert next(it) == 0
    time.sleep(0.3)                      # the thread runs ahead as far as the queue lets it
    assert len(made) <= 1 + 2 + 1        # the one taken, the queue, the one waiting to be put
    assert list(it) == list(range(1, 20))
    ahead.close()


def test_an_error_in_the_source_is_raised_to_the_consumer_after_the_good_items():
    def source():
        yield 1
        yield 2
        raise OSError("corrupt packet")

    got = []
    with pytest.raises(OSError, match="corrupt packet"):
        for x in stages.Ahead(source()):
            got.append(x)
    assert got == [1, 2]


def test_a_consumer_that_stops_early_stops_the_thread_and_closes_the_source():
    closed = threading.Event()

    def source():
        try:
            for i in range(10_000):
                yield i
        finally:
            closed.set()

    ahead = stages.Ahead(source(), depth=2)
    for x in ahead:
        if x == 3:
            break
    ahead.close()
    assert closed.wait(5) and not ahead._thread.is_alive()


def test_behind_runs_in_order_and_close_waits_for_all():
    done = []
    behind = stages.Behind(lambda x: (time.sleep(0.01), done.append(x)), depth=2)
    for i in range(10):
        behind.put(i)
    behind.close()
    assert done == list(range(10))


def test_an_error_behind_comes_back_from_the_next_put_or_close_and_later_items_are_skipped():
    done = []

    def fn(x):
        if x == 2:
            raise ValueError("disk full")
        done.append(x)

    behind = stages.Behind(fn, depth=1)
    with pytest.raises(ValueError, match="disk full"):
        for i in range(50):
            behind.put(i)
            time.sleep(0.01)
        behind.close()
    behind.abandon()
    assert done == [0, 1]


def test_behind_finishes_in_its_thread_while_the_producer_goes_on():
    """``end`` returns at once; the thread does what is queued, then ``last`` (closing the labeled
    video), while the producer writes the other results; ``close`` waits for both."""
    done, release = [], threading.Event()
    behind = stages.Behind(lambda x: (release.wait(5), done.append(x)), depth=4,
                           last=lambda: done.append("closed"))
    for i in range(3):
        behind.put(i)
    t = time.perf_counter()
    behind.end()
    assert time.perf_counter() - t < 0.5 and done == []      # nothing waited for
    release.set()
    behind.close()
    assert done == [0, 1, 2, "closed"]
    behind.close()                                            # again: nothing more to do


def test_a_failure_in_last_comes_back_from_close():
    def last():
        raise OSError(28, "No space left on device")
    behind = stages.Behind(lambda x: None, last=last)
    behind.put(1)
    behind.end()
    with pytest.raises(OSError, match="No space"):
        behind.close()


def test_last_is_skipped_after_an_error_or_when_abandoned():
    calls = []

    def fn(x):
        raise ValueError("bad frame")
    behind = stages.Behind(fn, last=lambda: calls.append("last"))
    behind.put(1)
    with pytest.raises(ValueError):
        behind.close()
    gate = threading.Event()
    abandoned = stages.Behind(lambda x: gate.wait(5), last=lambda: calls.append("last"))
    abandoned.put(1)
    abandoned.end()
    threading.Timer(0.1, gate.set).start()   # the item is still running when abandon() is called
    abandoned.abandon()
    assert calls == []


def test_overlap_auto_is_on_for_a_gpu_and_on_two_cores_or_more(monkeypatch):
    monkeypatch.setattr(stages, "usable_cpus", lambda: 2)
    assert stages.overlap_wanted("auto", "cuda")
    assert stages.overlap_wanted("auto", "cpu")          # even with every core for inference
    monkeypatch.setattr(stages, "usable_cpus", lambda: 1)
    assert not stages.overlap_wanted("auto", "cpu")      # one core: no gap to fill
    assert stages.overlap_wanted("auto", "cuda:0")
    assert stages.overlap_wanted("on", "cpu") and not stages.overlap_wanted("off", "cuda")
    with pytest.raises(ValueError):
        stages.overlap_wanted("sometimes", "cpu")


_ARENAS = r"""
import ctypes, os, sys, tempfile, threading
sys.path.insert(0, sys.argv[1])
from wildswarm.pipeline import stages
capped = stages.cap_malloc_arenas()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
together = threading.Barrier(6)
def work():
    blocks = [libc.malloc(4096) for _ in range(64)]   # C allocations, outside Python's own allocator
    # all six alive at once: a thread that ended hands its arena to the next one, so threads that
    # happened to run one after another (a busy machine) would share one arena even uncapped
    together.wait()
    for b in blocks:
        libc.free(b)
threads = [threading.Thread(target=work) for _ in range(6)]
for t in threads: t.start()
for t in threads: t.join()
fd, path = tempfile.mkstemp()
os.close(fd)
libc.fopen.restype = ctypes.c_void_p
f = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(f))
libc.fclose(ctypes.c_void_p(f))
print(capped, open(path).read().count("<heap nr="))
os.unlink(path)
"""


def _arenas(script: str, env: dict) -> tuple[str, int]:
    src = str(Path(stages.__file__).parents[2])
    base = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    out = subprocess.run([sys.executable, "-c", script, src], capture_output=True, text=True, check=True,
                         env={**base, **env}).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc arenas")
@pytest.mark.parametrize("env,capped,most", [({}, "True", 2), ({"MALLOC_ARENA_MAX": "3"}, "False", 3)])
def test_threads_share_at_most_two_malloc_arenas(env, capped, most):
    """Six threads allocating: at most two arenas with the cap; ``MALLOC_ARENA_MAX`` set by the
    operator wins over it. The same threads uncapped get an arena each (glibc allows 8 per core)."""
    was, arenas = _arenas(_ARENAS, env)
    assert was == capped
    assert 1 <= arenas <= most
    _, uncapped = _arenas(_ARENAS.replace("stages.cap_malloc_arenas()", "False"), {"MALLOC_ARENA_MAX": "64"})
    assert uncapped > most


def test_usable_cpus_is_at_least_one_and_at_most_the_affinity():
    assert 1 <= stages.usable_cpus() <= len(os.sched_getaffinity(0))


def test_the_codecs_run_in_one_thread_beside_cpu_inference(monkeypatch):
    """FFmpeg's and x264's own threads on a CPU node cost CPU time the models need (the decode and
    draw threads run beside inference, which has every core): one thread there, the codec's choice
    on a GPU node."""
    monkeypatch.setattr(stages, "usable_cpus", lambda: 8)
    assert stages.codec_threads("cpu") == 1
    assert stages.codec_threads("cuda") == 0 and stages.codec_threads("cuda:1") == 0
