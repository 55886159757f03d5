import dataclasses
import hashlib
import json
import shutil

import pytest

from wildswarm.errors import MissingWeightsError, ModelError
from wildswarm.pipeline import models as cat
from wildswarm.pipeline import weights_lock


def test_catalogue_has_each_kind_and_defaults():
    kinds = {s.kind for s in cat.CATALOGUE.values()}
    assert kinds == {"detector", "classifier", "pose"}
    for name in ("MDV5a", "MDV5b", "MDV6-yolov9-c", "superanimal_quadruped", "superanimal_topviewmouse"):
        assert name in cat.CATALOGUE
    assert "MDV6-rtdetr-c" not in cat.CATALOGUE  # wrong boxes in PytorchWildlife 1.3.0


def test_published_checksums_are_pinned_with_their_source():
    pinned = {n: s.published for n, s in cat.CATALOGUE.items() if s.published}
    # MegaDetector's own package publishes MD5s of the v5 release files; nobody publishes one for the rest.
    assert pinned == {
        "MDV5a": cat.Checksum("md5", "ec1d7603ec8cf642d6e0cd008ba2be8c", pinned["MDV5a"].source),
        "MDV5b": cat.Checksum("md5", "bc235e73f53c5c95e66ea0d1b2cbf542", pinned["MDV5b"].source),
    }
    for p in pinned.values():
        assert "megadetector" in p.source and "run_detector.py" in p.source


def test_unknown_and_wrong_kind():
    with pytest.raises(ModelError, match="unknown detector 'MDv9'.*MDV6-yolov9-c"):
        cat.spec("MDv9", "detector")
    with pytest.raises(ModelError, match="is a pose"):
        cat.spec("superanimal_quadruped", "detector")


def test_missing_weights_names_file_folder_and_both_remedies(tmp_path):
    with pytest.raises(MissingWeightsError) as err:
        cat.require(tmp_path, cat.spec("MDV6-yolov9-c"), allow_untrained=False)
    text = str(err.value)
    assert "MDV6b-yolov9-c.pt" in text and str(tmp_path.resolve()) in text
    assert "wildswarm models fetch MDV6-yolov9-c" in text and "copy the file" in text
    assert "wildswarm models trust MDV6-yolov9-c" in text


def _refusal(tmp_path, name: str, allow_untrained: bool = True) -> str:
    with pytest.raises(ModelError) as err:
        cat.require(tmp_path, cat.spec(name), allow_untrained=allow_untrained)
    assert not isinstance(err.value, MissingWeightsError)
    text = str(err.value)
    assert "\n" not in text, "one line"
    s = cat.spec(name)
    assert s.filename in text
    assert f"wildswarm models fetch {name}" in text and f"wildswarm models trust {name}" in text
    return text


def test_junk_file_is_refused_with_one_clear_line(tmp_path):
    (tmp_path / "MDV6b-yolov9-c.pt").write_bytes(b"not weights at all")
    text = _refusal(tmp_path, "MDV6-yolov9-c")
    assert "no entry in weights.lock.json" in text and "no checksum is published" in text
    assert hashlib.sha256(b"not weights at all").hexdigest() in text


def test_junk_file_of_a_pinned_model_names_the_published_checksum(tmp_path):
    (tmp_path / "md_v5a.0.0.pt").write_bytes(b"junk")
    text = _refusal(tmp_path, "MDV5a")
    assert "published md5 ec1d7603ec8cf642d6e0cd008ba2be8c" in text


@pytest.mark.parametrize("name,key", [
    ("MDV6-yolov9-c", "model"), ("MDV5a", "model"), ("AI4GSnapshotSerengeti", "state_dict"),
    ("superanimal_quadruped", "model"),
])
def test_a_hostile_pickle_is_refused_and_never_unpickled(tmp_path, hostile, name, key):
    # control: the payload really runs when the file is unpickled in full
    import torch
    probe = hostile(tmp_path / "probe.pt", key)
    torch.load(probe, weights_only=False)
    assert hostile.marker.is_dir()
    hostile.marker.rmdir()

    s = cat.spec(name)
    hostile(tmp_path / s.filename, key)
    _refusal(tmp_path, name)
    _refusal(tmp_path, name, allow_untrained=False)
    assert not hostile.marker.exists()


def test_pipeline_refuses_a_hostile_detector_before_loading_anything(tmp_path, hostile, untrained_settings,
                                                                       models_copy):
    from wildswarm.pipeline.run import Pipeline
    folder = models_copy("superanimal_quadruped_hrnet_w32.pt")
    hostile(folder / "MDV6b-yolov9-c.pt")
    with pytest.raises(ModelError, match="MDV6b-yolov9-c.pt"):
        Pipeline(untrained_settings.replace(models_dir=folder))
    assert not hostile.marker.exists()


def test_untrained_entry_follows_the_file(tmp_path):
    s = cat.spec("AI4GSnapshotSerengeti")
    path = cat.build_untrained(tmp_path, s)
    entry = weights_lock.read(tmp_path)[s.filename]
    assert (entry.model, entry.how, entry.sha256, entry.size) == (
        s.name, "untrained", cat.sha256_of(path), path.stat().st_size)
    assert not list(tmp_path.glob("*.untrained.json")), "no sidecars any more"
    with pytest.raises(ModelError, match="untrained"):
        cat.require(tmp_path, s, allow_untrained=False)
    assert cat.require(tmp_path, s, allow_untrained=True).untrained
    # replaced by hand: no longer the recorded file, and never taken for real weights silently
    path.write_bytes(b"pretend these are the real weights")
    text = _refusal(tmp_path, s.name, allow_untrained=False)
    assert "changed after it was recorded" in text and entry.sha256 in text
    assert not list(tmp_path.glob(".*.tmp"))


def test_file_changed_after_it_was_trusted_is_refused(tmp_path):
    s = cat.spec("MDV6-yolov9-c")
    path = tmp_path / s.filename
    path.write_bytes(b"the real file, say")
    cat.trust(tmp_path, s)
    assert not cat.require(tmp_path, s, allow_untrained=False).untrained
    path.write_bytes(b"the real file, say, plus one byte")
    text = _refusal(tmp_path, s.name, allow_untrained=False)
    assert "changed after it was recorded" in text and "trusted-by-hand" in text


def test_architecture_without_config_cannot_be_built(tmp_path):
    with pytest.raises(ModelError, match="no untrained"):
        cat.build_untrained(tmp_path, cat.spec("MDV6-yolov10-c"))
    assert not list(tmp_path.iterdir())


def test_fetch_failure_leaves_nothing_behind(tmp_path):
    s = cat.spec("AI4GSnapshotSerengeti")
    bad = dataclasses.replace(s, source="http://127.0.0.1:9/nothing-listens-here")
    with pytest.raises(ModelError, match="could not download"):
        cat.fetch(tmp_path, bad)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def fake_download(monkeypatch):
    """Point the libraries' downloaders at a local file: the real network is unreachable here."""
    served = {}

    def download_url_to_file(url, dst, *args, **kwargs):
        served["url"] = url
        shutil.copyfile(served["file"], dst)

    def download_huggingface_model(model_name, target_dir=".", rename_mapping=None):
        served["url"] = model_name
        shutil.copyfile(served["file"], f"{target_dir}/{rename_mapping}")

    import dlclibrary
    import torch.hub
    monkeypatch.setattr(torch.hub, "download_url_to_file", download_url_to_file)
    monkeypatch.setattr(dlclibrary, "download_huggingface_model", download_huggingface_model)
    return served


def test_a_fetched_file_is_recorded_and_loads(tmp_path, fake_download):
    from wildswarm.pipeline.detect import Classifier
    s = cat.spec("AI4GSnapshotSerengeti")
    fake_download["file"] = cat.build_untrained(tmp_path / "elsewhere", s)  # stands in for the real file
    models = tmp_path / "models"
    path = cat.fetch(models, s)
    assert fake_download["url"] == s.source
    entry = weights_lock.read(models)[s.filename]
    assert (entry.how, entry.source, entry.sha256, entry.size) == (
        "fetched", s.source, cat.sha256_of(path), path.stat().st_size)
    w = cat.require(models, s, allow_untrained=False)
    assert not w.untrained and "fetched" in w.basis
    assert len(Classifier(w, device="cpu").names) == 10
    assert sorted(p.name for p in models.iterdir()) == [s.filename, "weights.lock.json"]


def test_fetch_of_a_pose_model_goes_through_dlclibrary(tmp_path, fake_download):
    s = cat.spec("superanimal_topviewmouse")
    fake_download["file"] = tmp_path / "hf.pt"
    fake_download["file"].write_bytes(b"bytes from hugging face")
    cat.fetch(tmp_path / "models", s)
    assert fake_download["url"] == s.source
    assert weights_lock.read(tmp_path / "models")[s.filename].how == "fetched"


def test_fetch_refuses_a_download_that_misses_the_published_checksum(tmp_path, fake_download):
    fake_download["file"] = tmp_path / "tampered.pt"
    fake_download["file"].write_bytes(b"not what MegaDetector published")
    models = tmp_path / "models"
    models.mkdir()
    with pytest.raises(ModelError, match="published md5"):
        cat.fetch(models, cat.spec("MDV5a"))
    assert list(models.iterdir()) == []


def _pinned(s, data: bytes, algorithm="md5"):
    return dataclasses.replace(s, published=cat.Checksum(algorithm, hashlib.new(algorithm, data).hexdigest(),
                                                         "a test"))


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
def test_a_file_matching_its_published_checksum_loads_without_a_lock_entry(tmp_path, algorithm):
    s = _pinned(cat.spec("MDV5a"), b"as published", algorithm)
    (tmp_path / s.filename).write_bytes(b"as published")
    w = cat.require(tmp_path, s, allow_untrained=False)
    assert not w.untrained and f"published {algorithm}" in w.basis
    assert not (tmp_path / weights_lock.LOCK_NAME).exists()


def test_trust_records_a_hand_placed_file_and_it_loads(tmp_path):
    s = cat.spec("AI4GSnapshotSerengeti")
    path = cat.build_untrained(tmp_path / "elsewhere", s)
    shutil.copyfile(path, tmp_path / s.filename)  # copied in by hand: no lock entry
    with pytest.raises(ModelError, match="no entry"):
        cat.require(tmp_path, s, allow_untrained=False)
    w = cat.trust(tmp_path, s)
    entry = weights_lock.read(tmp_path)[s.filename]
    assert entry.how == "trusted-by-hand" and entry.sha256 == w.sha256 == cat.sha256_of(path)
    from wildswarm.pipeline.detect import Classifier
    assert Classifier(cat.require(tmp_path, s, allow_untrained=False), device="cpu").names


def test_trust_checks_the_published_checksum(tmp_path):
    s = _pinned(cat.spec("MDV5a"), b"as published")
    (tmp_path / s.filename).write_bytes(b"something else")
    with pytest.raises(ModelError, match="does not match the published md5"):
        cat.trust(tmp_path, s)
    assert weights_lock.read(tmp_path) == {}
    (tmp_path / s.filename).write_bytes(b"as published")
    cat.trust(tmp_path, s)
    assert "published md5 matches" in weights_lock.read(tmp_path)[s.filename].source


def test_trust_refuses_an_untrained_stand_in(tmp_path):
    s = cat.spec("AI4GSnapshotSerengeti")
    cat.build_untrained(tmp_path, s)
    with pytest.raises(ModelError, match="untrained"):
        cat.trust(tmp_path, s)
    assert weights_lock.read(tmp_path)[s.filename].how == "untrained"


def test_an_old_untrained_sidecar_is_read_once_and_the_stand_in_rebuilt(tmp_path, hostile):
    """A models folder from before the lock file keeps working in untrained mode, and its sidecars are
    never taken as proof of anything: the stand-in is rebuilt, not loaded."""
    s = cat.spec("superanimal_quadruped")
    path = hostile(tmp_path / s.filename)  # what an attacker could have put beside a forged sidecar
    sidecar = tmp_path / (s.filename + ".untrained.json")
    sidecar.write_text(json.dumps({"untrained": True, "model": s.name, "seed": 0, "sha256": cat.sha256_of(path)}))
    text = _refusal(tmp_path, s.name)
    assert "older wildswarm" in text and f"wildswarm models untrained {s.name}" in text
    cat.ensure_untrained(tmp_path, s)
    assert not sidecar.exists()
    assert cat.require(tmp_path, s, allow_untrained=True).untrained
    assert not hostile.marker.exists()


def test_ensure_untrained_builds_missing_and_leaves_unknown_files_alone(tmp_path):
    s = cat.spec("AI4GSnapshotSerengeti")
    cat.ensure_untrained(tmp_path, s)
    assert weights_lock.read(tmp_path)[s.filename].how == "untrained"
    t = cat.spec("superanimal_topviewmouse")
    (tmp_path / t.filename).write_bytes(b"someone's real file")
    cat.ensure_untrained(tmp_path, t)
    assert (tmp_path / t.filename).read_bytes() == b"someone's real file"
    assert t.filename not in weights_lock.read(tmp_path)


# --- a worker loads the modules of its own models, not the whole of each library ----------------------
LOAD_AND_LIST = """
import json, os, sys
os.environ["YOLO_OFFLINE"] = "1"
from pathlib import Path
from wildswarm.pipeline import models as cat
from wildswarm.pipeline.detect import Classifier, Detector
from wildswarm.pipeline.pose import PoseEstimator
folder = Path(sys.argv[1])
Detector(cat.require(folder, cat.spec("MDV6-yolov9-c"), allow_untrained=True), device="cpu", image_size=320,
         threshold=0.1)
Classifier(cat.require(folder, cat.spec("AI4GSnapshotSerengeti"), allow_untrained=True), device="cpu")
PoseEstimator(cat.require(folder, cat.spec("superanimal_quadruped"), allow_untrained=True), device="cpu")
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


@pytest.mark.slow
def test_loading_the_default_models_leaves_the_rest_of_their_libraries_out(untrained_models_dir):
    """PytorchWildlife's packages import all its families: YOLOv5, and through its data package the
    bioacoustic stack (librosa, torchaudio, Lightning, seaborn); DeepLabCut's import its training,
    evaluation and COCO tools (polars, pycocotools, statsmodels). A worker paid for them at every
    start for models and tools it does not run (families/_lean.py)."""
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", LOAD_AND_LIST, str(untrained_models_dir)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    loaded = set(json.loads(r.stdout.strip().splitlines()[-1]))
    assert {"PytorchWildlife", "ultralytics", "deeplabcut"} <= loaded
    assert not loaded & {"yolov5", "librosa", "torchaudio", "lightning", "pytorch_lightning", "seaborn",
                         "statsmodels", "polars", "pycocotools"}, sorted(loaded)
