"""bench/segments.py, run small: its stand-in pipeline must keep up with Pipeline (it broke once when
Pipeline gained attributes the stand-in lacked: no segment finished, the merge failed)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from kit.machine import left_behind

pytestmark = pytest.mark.slow

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench import segments  # noqa: E402


def test_the_segments_benchmark_analyses_merges_and_restarts_after_a_kill(tmp_path, system_tmp):
    r = segments.main(["--minutes", "0.5", "--fps", "5", "--per-frame-ms", "5", "--segment-seconds", "5",
                       "--workers", "1,2", "--out", str(tmp_path)])
    assert [row["workers"] for row in r["rows"]] == [1, 2]
    assert all(row["frames"] == 150 for row in r["rows"])        # every frame of the 30 s video, merged
    assert r["verdict"]["redone_ok"] and 0 <= r["redone"]
    (written,) = tmp_path.glob("segments-*.json")
    assert json.loads(written.read_text())["verdict"] == r["verdict"]
    assert not left_behind(system_tmp)      # its video and outputs removed
