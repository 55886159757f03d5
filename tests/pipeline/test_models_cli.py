"""`wildswarm models verify|trust|list|untrained` as users type them."""
import json
import shutil

import pytest
from click.testing import CliRunner

from wildswarm.cli import main
from wildswarm.pipeline import models as cat
from wildswarm.pipeline import weights_lock


def run(*args, models):
    result = CliRunner().invoke(main, list(args), env={"WILDSWARM_MODELS_DIR": str(models)},
                                catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture
def models(models_copy):
    return models_copy("MDV6b-yolov9-c.pt", "superanimal_quadruped_hrnet_w32.pt")


def test_verify_passes_on_recorded_files(models):
    code, out = run("models", "verify", "MDV6-yolov9-c", "superanimal_quadruped", models=models)
    assert code == 0, out
    assert out.count("UNTRAINED") == 2 and "sha256=" in out


def test_verify_checks_every_profiles_models_or_one_profiles(models):
    """Without names: every model any analysis profile uses (make up needs the default profile's at least)."""
    code, out = run("models", "verify", models=models)
    checked = [line.split(":")[0] for line in out.splitlines() if not line.startswith("warning")]
    assert code == 1 and checked == ["MDV6-yolov9-c", "superanimal_quadruped", "AI4GAmazonRainforest",
                                     "AI4GSnapshotSerengeti", "superanimal_topviewmouse"]
    code, out = run("models", "verify", "--profile", "", models=models)             # the default profile's
    assert code == 0 and out.count(": ok ") == 2, out
    code, out = run("models", "verify", "--profile", "lab-topview-mouse", models=models)
    assert code == 1 and "MDV6-yolov9-c: ok" in out and "superanimal_topviewmouse_hrnet_w32.pt is not in" in out
    assert "superanimal_quadruped" not in out
    code, out = run("models", "verify", "--profile", "owls", models=models)
    assert code != 0 and "no analysis profile 'owls'" in out


def test_verify_fails_on_a_junk_file_and_names_it(models):
    (models / "MDV6b-yolov9-c.pt").write_bytes(b"junk")
    code, out = run("models", "verify", "MDV6-yolov9-c", "superanimal_quadruped", models=models)
    assert code == 1
    bad = [line for line in out.splitlines() if line.startswith("MDV6-yolov9-c:")]
    assert len(bad) == 1 and "MDV6b-yolov9-c.pt" in bad[0] and "changed after it was recorded" in bad[0]
    assert "superanimal_quadruped: ok" in out


def test_verify_fails_on_a_missing_or_unrecorded_file(models):
    code, out = run("models", "verify", "MDV5a", models=models)
    assert code == 1 and "md_v5a.0.0.pt is not in" in out
    shutil.copyfile(models / "MDV6b-yolov9-c.pt", models / "MDV6-yolov9-e-1280.pt")
    code, out = run("models", "verify", "MDV6-yolov9-e", models=models)
    assert code == 1 and "no entry in weights.lock.json" in out


def test_verify_warns_about_writable_weights(models):
    (models / "MDV6b-yolov9-c.pt").chmod(0o664)
    models.chmod(0o775)
    code, out = run("models", "verify", "MDV6-yolov9-c", models=models)
    assert code == 0
    assert "group-writable" in out and str(models) in out and "MDV6b-yolov9-c.pt" in out


def test_trust_explains_itself_and_records_the_file(models):
    target = models / "MDV6-yolov9-e-1280.pt"
    target.write_bytes(b"copied in by hand")
    code, out = run("models", "trust", "MDV6-yolov9-e", models=models)
    assert code == 0, out
    assert "runs code" in out and "pickle" in out  # says what trusting means
    assert "no published checksum" in out and cat.spec("MDV6-yolov9-e").source in out
    assert weights_lock.read(models)[target.name].how == "trusted-by-hand"
    code, out = run("models", "verify", "MDV6-yolov9-e", models=models)
    assert code == 0 and "trusted-by-hand" in out


def test_trust_all_takes_present_files_and_skips_stand_ins(models):
    (models / "MDV6-yolov9-e-1280.pt").write_bytes(b"copied in by hand")
    code, out = run("models", "trust", "--all", models=models)
    assert code == 0, out
    assert "MDV6-yolov9-e: trusted" in out
    assert "MDV6-yolov9-c: skipped (untrained stand-in)" in out
    assert "MDV5a" not in out  # absent files are not the point of --all
    assert weights_lock.read(models)["MDV6b-yolov9-c.pt"].how == "untrained"


def test_trust_all_takes_a_real_file_copied_over_a_stand_in(models):
    (models / "MDV6b-yolov9-c.pt").write_bytes(b"the real MDv6, copied over the stand-in")
    code, out = run("models", "trust", "--all", models=models)
    assert code == 0 and "MDV6-yolov9-c: trusted" in out and "replaces the entry" in out
    assert weights_lock.read(models)["MDV6b-yolov9-c.pt"].how == "trusted-by-hand"


def test_trust_of_a_named_stand_in_fails(models):
    code, out = run("models", "trust", "MDV6-yolov9-c", models=models)
    assert code == 1 and "untrained stand-in" in out


def test_trust_of_a_missing_file_fails(models):
    code, out = run("models", "trust", "MDV5b", models=models)
    assert code == 1 and "MegaDetector_v5b.0.0.pt is not in" in out


def test_list_shows_how_each_file_was_recorded(models):
    (models / "md_v5a.0.0.pt").write_bytes(b"x")
    code, out = run("models", "list", models=models)
    assert code == 0
    lines = {line.split()[1]: line for line in out.splitlines()}
    assert "untrained" in lines["MDV6-yolov9-c"]
    assert "unrecorded" in lines["MDV5a"]
    assert "missing" in lines["MDV5b"]


def test_untrained_command_rebuilds_an_old_sidecar_stand_in(tmp_path):
    s = cat.spec("AI4GSnapshotSerengeti")
    path = tmp_path / s.filename
    path.write_bytes(b"an untrained file from an older wildswarm")
    sidecar = tmp_path / (s.filename + ".untrained.json")
    sidecar.write_text(json.dumps({"untrained": True, "sha256": cat.sha256_of(path)}))
    code, out = run("models", "untrained", s.name, models=tmp_path)
    assert code == 0 and "UNTRAINED" in out
    assert not sidecar.exists() and weights_lock.read(tmp_path)[s.filename].how == "untrained"
    assert cat.require(tmp_path, s, allow_untrained=True).untrained
