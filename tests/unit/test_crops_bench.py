"""bench/crops.py, run small on the CPU: it must time both ways of cutting pose crops on the same
frames and network, with the real network and the stand-in, and write what it printed."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from kit.machine import left_behind

pytestmark = pytest.mark.slow

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench import crops  # noqa: E402


def test_the_crops_benchmark_times_both_ways_with_both_networks(tmp_path, system_tmp):
    # no capsys: the libraries' loggers, first imported here, would keep its stream past the test
    results = crops.main(["--sizes", "320x180", "--frames", "2", "--animals", "2", "--batch", "4", "--rounds", "1",
                          "--out", str(tmp_path)])
    r = results["sizes"]["320x180"]
    assert r["crops"] == 4
    for network in ("real", "stand-in"):
        ms = r[network]["ms_per_crop"]
        assert set(ms) == {"runner", "device crops"} and all(v["wall"] > 0 for v in ms.values())
        assert len(r[network]["rounds"]["runner"]["wall"]) == 1 and r[network]["ratio_wall"] > 0
    assert results["crops_check"]["by"] == "wildswarm"
    (written,) = tmp_path.glob("crops-*.json")
    assert json.loads(written.read_text())["sizes"]["320x180"]["crops"] == 4
    assert not left_behind(system_tmp)      # the stand-in models removed
