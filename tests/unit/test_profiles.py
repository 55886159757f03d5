"""Analysis profiles: the shipped ones, the operator's file over them, and every way that file can be wrong."""
import os

import pytest

from wildswarm.config import Settings
from wildswarm.profiles import ProfileBook, ProfileError, load, parse


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data=tmp_path / "data")


def write(settings: Settings, text: str) -> None:
    settings.profiles_path.parent.mkdir(parents=True, exist_ok=True)
    settings.profiles_path.write_text(text)


def test_the_shipped_profiles_and_what_they_resolve_to(settings):
    found = load(settings)
    assert found.names() == ["camera-trap", "camera-trap-species", "camera-trap-serengeti", "lab-topview-mouse"]
    assert found.default == "camera-trap" and found.get().name == found.get("") .name == "camera-trap"
    # camera-trap is the stack's own settings; the others change only what they name
    assert found.get("camera-trap").resolved(settings) == {
        "detector": "MDV6-yolov9-c", "classifier": "none", "pose": "superanimal_quadruped", "fps": 5.0,
        "detector_image_size": 640, "detection_threshold": 0.2, "max_animals": 5, "pose_threshold": 0.1,
        "track_lost_seconds": 5.0, "smooth": "none", "smooth_window": 5, "backend": "auto", "precision": "fp32"}
    mouse = found.get("lab-topview-mouse").resolved(settings)
    assert mouse["pose"] == "superanimal_topviewmouse" and mouse["fps"] == 10.0 and mouse["smooth"] == "savgol"
    assert found.get("camera-trap-species").resolved(settings)["classifier"] == "AI4GAmazonRainforest"
    assert found.models(settings) == ["MDV6-yolov9-c", "superanimal_quadruped", "AI4GAmazonRainforest",
                                      "AI4GSnapshotSerengeti", "superanimal_topviewmouse"]


def test_a_profile_sets_only_what_it_names_over_the_stacks_settings(settings):
    stack = settings.replace(fps=2.0, detection_threshold=0.05)
    found = load(stack)
    assert found.get("camera-trap").resolved(stack)["fps"] == 2.0          # the stack's
    assert found.get("lab-topview-mouse").resolved(stack)["fps"] == 10.0   # the profile's
    assert found.get("lab-topview-mouse").resolved(stack)["detection_threshold"] == 0.05
    applied = found.get("lab-topview-mouse").apply(stack)
    assert applied.profile == "lab-topview-mouse" and applied.pose == "superanimal_topviewmouse"


def test_the_operators_file_adds_profiles_and_replaces_shipped_ones(settings):
    write(settings, '[camera-trap]\ndescription = "ours"\ndetector = "MDV5a"\ndetector_image_size = 1280\n\n'
                    '[zebrafish-arena]\ndescription = "fish"\npose = "superanimal_topviewmouse"\nfps = 0\n'
                    'max_animals = 8\n')
    found = load(settings)
    assert found.names()[-1] == "zebrafish-arena" and "lab-topview-mouse" in found
    ours = found.get("camera-trap")
    assert ours.description == "ours" and ours.source == str(settings.profiles_path)
    assert ours.resolved(settings)["detector"] == "MDV5a" and ours.resolved(settings)["detector_image_size"] == 1280
    assert found.get("zebrafish-arena").resolved(settings)["fps"] == 0.0


@pytest.mark.parametrize("text,match", [
    ("[a]\ndetector = \"MDV9\"\n", "unknown detector 'MDV9'"),
    ("[a]\nclassifier = \"MDV5a\"\n", "MDV5a is a detector, not a classifier"),
    ("[a]\ndevice = \"cuda\"\n", "device cannot be set by a profile"),
    ("[a]\nfps = \"fast\"\n", "fps = 'fast' is not a float"),
    ("[a]\nmax_animals = 2.5\n", "max_animals = 2.5 is not a int"),
    ("[a]\nmax_animals = true\n", "max_animals = True is not a int"),
    ("[a]\ndetection_threshold = 1.5\n", "must be from 0 to 1"),
    ("[a]\ndetector_image_size = 500\n", "a multiple of 32"),
    ("[a]\nsmooth = \"savgol\"\nsmooth_window = 4\n", "must be an odd number"),
    ("[a]\nsmooth = \"kalman\"\n", "not one of none, median, savgol"),
    ("[a]\nbackend = \"tensorrt\"\n", "unknown backend 'tensorrt'"),
    ("[a]\nbackend = \"onnxruntime\"\nprecision = \"bf16\"\n", "bf16 runs on OpenVINO or PyTorch"),
    ("[\"Mouse Lab\"]\nfps = 1\n", "a profile name is 1 to 40 lower-case"),
    ("[\"mice\\n\"]\nfps = 1\n", "a profile name is 1 to 40 lower-case"),   # $ matched before the newline
    ("[a]\ndescription = 3\n", "description must be a string"),
    ("a = 1\n", "must be a table of settings"),
    ("[a\nfps = 1\n", "not valid TOML"),
])
def test_a_wrong_profiles_file_is_refused_saying_where_and_why(settings, text, match):
    write(settings, text)
    with pytest.raises(ProfileError, match=match) as err:
        load(settings)
    assert str(settings.profiles_path) in str(err.value)


@pytest.mark.parametrize("stack,text,match", [
    ({"precision": "bf16"}, '[onnx-cpu]\nbackend = "onnxruntime"\n', "bf16 runs on OpenVINO or PyTorch"),
    ({"backend": "torch"}, '[small]\nprecision = "int8"\n', "int8 runs on ONNX Runtime or OpenVINO"),
    ({"smooth_window": 4}, '[smoothed]\nsmooth = "savgol"\n', "must be an odd number"),
])
def test_a_profile_is_checked_as_it_resolves_over_the_stacks_settings(settings, stack, text, match):
    # checked against the defaults alone, it passed `profiles check` and every job naming it failed on the worker
    stack = settings.replace(**stack)
    write(stack, text)
    with pytest.raises(ProfileError, match=match) as err:
        load(stack)
    assert str(stack.profiles_path) in str(err.value) and "profile [" in str(err.value)


def test_an_unknown_profile_or_default_is_an_error_naming_the_known_ones(settings):
    with pytest.raises(ProfileError, match="no analysis profile 'mice'; there are: camera-trap, "):
        load(settings).get("mice")
    with pytest.raises(ProfileError, match="WILDSWARM_PROFILE='mice' is not a profile"):
        load(settings.replace(profile="mice"))


def test_the_book_reads_an_edited_file_again_and_keeps_the_last_good_one_on_a_broken_edit(settings):
    book = ProfileBook(settings)
    assert "night-owls" not in book.current()
    write(settings, '[night-owls]\nfps = 1.0\n')
    assert book.get("night-owls").resolved(settings)["fps"] == 1.0 and book.problem is None
    write(settings, '[night-owls]\nfps = -1\n[more]\n')          # broken: the last good set stays in use
    os.utime(settings.profiles_path, ns=(1, 1))                     # a change the book sees whatever the clock
    assert book.get("night-owls").resolved(settings)["fps"] == 1.0
    assert "fps = -1 must be 0 or more" in book.problem and "stay in use" in book.problem
    settings.profiles_path.unlink()                                 # removed: the shipped ones alone
    assert "night-owls" not in book.current() and book.problem is None


def test_a_broken_file_at_start_is_an_error(settings):
    write(settings, "[a]\nfps = -1\n")
    with pytest.raises(ProfileError):
        ProfileBook(settings)


def test_parse_names_its_source():
    with pytest.raises(ProfileError, match=r"^here: profile \[x\]"):
        parse("[x]\nfps = -2\n", "here")


def test_the_profiles_command_lists_shows_and_checks(settings, tmp_path):
    import json

    from click.testing import CliRunner

    from wildswarm.cli import main
    env = {"WILDSWARM_DATA": str(settings.data), "WILDSWARM_FPS": "3"}

    def run(*args):
        r = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
        return r.exit_code, r.output

    code, out = run("profiles")
    assert code == 0 and "camera-trap (default) [shipped]" in out and "sets: nothing: the stack's settings" in out
    assert "sets: classifier=none, pose=superanimal_topviewmouse, fps=10.0" in out
    code, out = run("profiles", "show", "camera-trap")
    assert code == 0 and json.loads(out)["settings"]["fps"] == 3.0               # the stack's, here
    code, out = run("profiles", "check")
    assert code == 0 and "no such file; the shipped profiles are in use" in out
    bad = tmp_path / "edit.toml"
    bad.write_text("[owls]\nfps = -1\n")
    code, out = run("profiles", "check", str(bad))
    assert code != 0 and "profile [owls]: fps = -1 must be 0 or more" in out
    bad.write_text("[owls]\nfps = 1\n")
    code, out = run("profiles", "check", str(bad))
    assert code == 0 and "ok; profiles: camera-trap, camera-trap-species, camera-trap-serengeti, " \
                         "lab-topview-mouse, owls" in out
