"""Overlapped stages: order kept, memory bounded, failures raised where they belong, threads stopped."""
from __future__ import annotations

import threading
import time

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


def test_overlap_auto_is_on_for_a_gpu_and_where_cores_are_left(monkeypatch):
    monkeypatch.setattr(stages, "usable_cpus", lambda: 4)
    assert stages.overlap_wanted("auto", "cuda", 4)
    assert stages.overlap_wanted("auto", "cpu", 2)
    assert not stages.overlap_wanted("auto", "cpu", 4)
    assert stages.overlap_wanted("on", "cpu", 4) and not stages.overlap_wanted("off", "cuda", 1)
    with pytest.raises(ValueError):
        stages.overlap_wanted("sometimes", "cpu", 1)


def test_usable_cpus_is_at_least_one_and_at_most_the_affinity():
    import os
    assert 1 <= stages.usable_cpus() <= len(os.sched_getaffinity(0))
