"""The `wildswarm` command: analyze and models, as users type them."""
import json

import pytest
from click.testing import CliRunner

from wildswarm.cli import main
from wildswarm.pipeline import outputs


def run(*args, env=None):
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture
def env(untrained_models_dir, tmp_path):
    return {"WILDSWARM_DATA": str(tmp_path / "data"), "WILDSWARM_MODELS_DIR": str(untrained_models_dir)}


def test_models_list_and_path(env, untrained_models_dir):
    code, out = run("models", "list", env=env)
    assert code == 0
    assert "MDV6-yolov9-c" in out and "untrained" in out and "missing" in out
    code, out = run("models", "path", "superanimal_quadruped", env=env)
    assert out.strip() == str(untrained_models_dir / "superanimal_quadruped_hrnet_w32.pt")


def test_models_verify_reports_untrained_and_missing(env):
    code, out = run("models", "verify", "MDV6-yolov9-c", "MDV5a", env=env)
    assert code == 1
    assert "UNTRAINED" in out and "md_v5a.0.0.pt is not in" in out


def test_models_untrained_never_overwrites_real_weights(tmp_path):
    models = tmp_path / "m"
    models.mkdir()
    real = models / "AI4GSnapshotSerengeti.ckpt"
    real.write_bytes(b"real weights placed by hand")
    env = {"WILDSWARM_MODELS_DIR": str(models)}
    code, out = run("models", "untrained", "AI4GSnapshotSerengeti", env=env)
    assert code == 0 and "left alone" in out
    assert real.read_bytes() == b"real weights placed by hand"


def test_unknown_model_is_a_clean_error(env):
    code, out = run("models", "path", "MDv99", env=env)
    assert code == 2 and "unknown model" in out and "Traceback" not in out


def test_analyze_without_weights_names_the_remedies(tmp_path):
    code, out = run("analyze", str(tmp_path / "x.mp4"), env={"WILDSWARM_DATA": str(tmp_path)})
    assert code == 2
    assert "wildswarm models fetch" in out and "Traceback" not in out


@pytest.mark.slow
def test_analyze_good_and_bad_videos(env, make_video, tmp_path):
    good = make_video("good clip.mp4", frames=10, fps=10)
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    out_dir = tmp_path / "results"
    code, out = run("analyze", str(good), str(bad), str(tmp_path / "missing.mp4"), "--out", str(out_dir),
                    "--untrained", "--fps", "5", "--device", "cpu", env={**env, "WILDSWARM_DETECTION_THRESHOLD": "0.001"})
    assert code == 1  # some videos failed
    assert "untrained" in out.lower()
    assert "bad.mp4: failed" in out and "not a readable video" in out
    assert "missing.mp4: failed" in out and "no such file" in out
    assert "Traceback" not in out
    assert [p.name for p in out_dir.iterdir()] == ["good_clip"]
    summary = json.loads((out_dir / "good_clip" / outputs.SUMMARY).read_text())
    assert summary["frames"]["analysed"] == 5 and summary["untrained_weights"] is True


@pytest.mark.slow
def test_analyze_with_a_profile_and_an_option_over_it(env, make_video, tmp_path):
    video = make_video("arena.mp4", frames=20, fps=10)
    code, out = run("analyze", str(video), "--out", str(tmp_path / "r"), "--profile", "lab-topview-mouse",
                    "--fps", "5", "--untrained", "--device", "cpu", env={**env, "WILDSWARM_DETECTION_THRESHOLD": "0.001"})
    assert code == 0, out
    assert "profile lab-topview-mouse; loading models: MDV6-yolov9-c, none, superanimal_topviewmouse" in out
    summary = json.loads((tmp_path / "r" / "arena" / outputs.SUMMARY).read_text())
    assert summary["profile"] == "lab-topview-mouse" and len(summary["bodyparts"]) == 27
    assert summary["settings"]["fps"] == 5.0 and summary["settings"]["smooth"] == "savgol"   # the option wins
    assert summary["frames"]["analysed"] == 10
    code, out = run("analyze", str(video), "--profile", "owls", env=env)
    assert code != 0 and "no analysis profile 'owls'" in out and "Traceback" not in out


@pytest.mark.slow
def test_an_output_folder_that_cannot_be_written_is_a_failed_video_not_a_traceback(env, make_video, tmp_path):
    """An --out on a read-only or full filesystem (here: under a file) raised OSError out of the command."""
    video = make_video("fox.mp4", frames=10, fps=10)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    code, out = run("analyze", str(video), "--out", str(blocker / "results"), "--untrained", "--device", "cpu",
                    env=env)
    assert code == 1, out
    assert "fox.mp4: failed" in out and "results" in out and "Traceback" not in out
    assert blocker.read_text() == "a file"


@pytest.mark.parametrize("option, env_key, value", [
    ("--fps", None, "nan"), ("--fps", None, "-1"), ("--track-lost-seconds", None, "-5"),
    (None, "WILDSWARM_DETECTION_THRESHOLD", "2"), (None, "WILDSWARM_MAX_ANIMALS", "0"),
    (None, "WILDSWARM_DETECTOR_IMAGE_SIZE", "0")])
def test_a_setting_out_of_range_is_refused_as_a_profile_would_refuse_it(env, make_video, tmp_path, option,
                                                                       env_key, value):
    """A profile may not set fps = -1 or detection_threshold = 2, but the same values given as an option or
    in the environment ran: a NaN fps or a threshold over 1 as a traceback, the others silently (exit 0)."""
    video = make_video("fox.mp4", frames=10, fps=10)
    args = ["analyze", str(video), "--out", str(tmp_path / "r"), "--untrained", "--device", "cpu"]
    code, out = run(*args, *((option, value) if option else ()), env={**env, **({env_key: value} if env_key else {})})
    name = (option or env_key).lstrip("-").replace("-", "_").removeprefix("WILDSWARM_").lower()
    assert code == 2, out
    assert name in out and "Traceback" not in out
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_two_videos_whose_names_clean_up_alike_get_a_result_folder_each(env, make_video, tmp_path):
    """Audit: "a b.mp4" and "a_b.mp4" both clean up to the result name a_b: in one run the second replaced
    the first's results, and both were reported analysed."""
    first = make_video("a b.mp4", frames=10, fps=10)
    second = make_video("a_b.mp4", frames=20, fps=10)
    out_dir = tmp_path / "results"
    code, out = run("analyze", str(first), str(second), "--out", str(out_dir), "--untrained", "--fps", "5",
                    "--device", "cpu", env={**env, "WILDSWARM_DETECTION_THRESHOLD": "0.001"})
    assert code == 0, out
    assert sorted(p.name for p in out_dir.iterdir()) == ["a_b", "a_b-2"]
    for folder, video, frames in (("a_b", "a b.mp4", 5), ("a_b-2", "a_b.mp4", 10)):
        summary = json.loads((out_dir / folder / outputs.SUMMARY).read_text())
        assert summary["video"] == video and summary["frames"]["analysed"] == frames
    assert "a_b.mp4: its result name a_b is this run's a b.mp4's: written as a_b-2" in out
