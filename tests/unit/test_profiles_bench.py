"""bench/profiles.py, run small, as a user runs it (its own process: the runtimes it loads keep thread
pools that a later fork in this test process would inherit broken): real pipelines of two profiles,
loaded per job and through the worker's cache, so the benchmark cannot rot unseen (bench/segments.py
once did)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kit.machine import left_behind

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "profiles.py"), *args], capture_output=True,
                          text=True, timeout=900)


def test_the_profiles_benchmark_loads_each_profile_once_through_the_cache(tmp_path, system_tmp):
    done = _run("--jobs", "3", "--profiles", "camera-trap,lab-topview-mouse", "--out", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    (written,) = tmp_path.glob("profiles-*.json")
    doc = json.loads(written.read_text())
    assert set(doc["profiles"]) == {"camera-trap", "lab-topview-mouse"}
    for each in doc["profiles"].values():
        assert each["memory_mb"] > 10 and each["load_s"] > 0
    assert doc["jobs"] == 3 and doc["order"] == ["camera-trap", "lab-topview-mouse", "camera-trap"]
    assert doc["loads"] == {"camera-trap": 1, "lab-topview-mouse": 1}   # the third job found its pipeline
    assert doc["baseline_s"] > 0 and doc["cached_s"] > 0
    assert "ratio baseline / cache" in done.stdout
    assert not left_behind(system_tmp)      # the stand-in models (about 900 MB) removed


def test_an_unknown_profile_is_refused_by_name(tmp_path, system_tmp):
    done = _run("--profiles", "camera-trap,no-such-profile", "--out", str(tmp_path))
    assert done.returncode != 0 and "no-such-profile" in done.stderr, done.stderr
    assert not list(tmp_path.glob("*.json"))
    assert not left_behind(system_tmp)
