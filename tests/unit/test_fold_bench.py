"""bench/fold.py, run small on the CPU: it must fold the real networks, time both on the same input
and write what it printed, so that a GPU lease's run of it cannot come back empty."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from kit.machine import left_behind

pytestmark = pytest.mark.slow

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench import fold  # noqa: E402


def test_the_fold_benchmark_times_folded_against_unfolded_networks(tmp_path, system_tmp):
    # no capsys: the libraries' loggers, first imported here, would keep its stream past the test
    results = fold.main(["--only", "AI4GSnapshotSerengeti", "--batch", "1", "--rounds", "2", "--out", str(tmp_path)])
    r = results["models"]["AI4GSnapshotSerengeti"]
    assert r["folded"] == 20 and len(r["rounds"]["unfolded"]) == len(r["rounds"]["folded"]) == 2
    assert 0 < r["max_difference"] <= 1e-4 and r["ratio"] > 0
    assert r["input"][0] == 1
    (written,) = tmp_path.glob("fold-*.json")
    assert json.loads(written.read_text())["models"]["AI4GSnapshotSerengeti"]["folded"] == 20
    assert not left_behind(system_tmp)      # the stand-in models removed
