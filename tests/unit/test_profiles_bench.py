"""bench/profiles.py, run small: real pipelines of two profiles, loaded per job and through the
worker's cache, so the benchmark cannot rot unseen (bench/segments.py once did)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench import profiles  # noqa: E402


def test_the_profiles_benchmark_loads_each_profile_once_through_the_cache(tmp_path):
    doc = profiles.main(["--jobs", "3", "--profiles", "camera-trap,lab-topview-mouse", "--out", str(tmp_path)])
    assert set(doc["profiles"]) == {"camera-trap", "lab-topview-mouse"}
    for each in doc["profiles"].values():
        assert each["memory_mb"] > 10 and each["load_s"] > 0
    assert doc["jobs"] == 3 and doc["order"] == ["camera-trap", "lab-topview-mouse", "camera-trap"]
    assert doc["loads"] == {"camera-trap": 1, "lab-topview-mouse": 1}   # the third job found its pipeline
    assert doc["baseline_s"] > 0 and doc["cached_s"] > 0
    (written,) = tmp_path.glob("profiles-*.json")
    assert json.loads(written.read_text())["jobs"] == 3


def test_an_unknown_profile_is_refused_by_name(tmp_path):
    with pytest.raises(SystemExit, match="no-such-profile"):
        profiles.main(["--profiles", "camera-trap,no-such-profile", "--out", str(tmp_path)])
