"""bench/startup.py, run small: it must start fresh workers' pipelines both ways, alternated, and
show that only the "whole" way loads the libraries' other families."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from kit.machine import left_behind

pytestmark = pytest.mark.slow

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench import startup  # noqa: E402


def test_the_startup_benchmark_times_both_ways_in_fresh_processes(tmp_path, system_tmp):
    results = startup.main(["--rounds", "1", "--out", str(tmp_path)])
    runs = results["runs"]
    assert set(runs) == {"module by module", "whole"} and all(len(r) == 1 for r in runs.values())
    assert runs["module by module"][0]["libraries"] == []
    assert runs["whole"][0]["libraries"] == ["librosa", "polars", "yolov5"]
    for way in runs.values():
        assert way[0]["seconds"] > 0 and way[0]["peak_mb"] > 100
    assert results["ratio_seconds"] > 0
    (written,) = tmp_path.glob("startup-*.json")
    assert json.loads(written.read_text())["rounds"] == 1
    assert not left_behind(system_tmp)      # the stand-in models (about 700 MB) removed
