import json

import pytest

from wildswarm.errors import PipelineError, VideoError
from wildswarm.testing import SleepAnalyzer, write_clip


def test_sleep_analyzer_writes_a_labelled_output_atomically(tmp_path):
    clip = write_clip(tmp_path / "c.mp4", frames=3)
    calls = []
    result = SleepAnalyzer().analyze(clip, tmp_path / "out", progress=lambda d, t: calls.append((d, t)))
    assert result.name == "c" and calls[0] == (0, 3) and calls[-1] == (3, 3)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["c"]
    assert json.loads((tmp_path / "out" / "c" / "summary.json").read_text())["test_aid"] is True


def test_sleep_analyzer_failures(tmp_path):
    with pytest.raises(VideoError):
        SleepAnalyzer().analyze(write_clip(tmp_path / "v.mp4", fail="video"), tmp_path / "out")
    with pytest.raises(PipelineError):
        SleepAnalyzer().analyze(write_clip(tmp_path / "p.mp4", fail="pipeline"), tmp_path / "out")
    (tmp_path / "real.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    with pytest.raises(VideoError, match="not a readable video"):
        SleepAnalyzer().analyze(tmp_path / "real.mp4", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
