import json

import pytest

from wildswarm.errors import MissingWeightsError, ModelError
from wildswarm.pipeline import models as cat


def test_catalogue_has_each_kind_and_defaults():
    kinds = {s.kind for s in cat.CATALOGUE.values()}
    assert kinds == {"detector", "classifier", "pose"}
    for name in ("MDV5a", "MDV5b", "MDV6-yolov9-c", "superanimal_quadruped", "superanimal_topviewmouse"):
        assert name in cat.CATALOGUE
    assert "MDV6-rtdetr-c" not in cat.CATALOGUE  # wrong boxes in PytorchWildlife 1.3.0


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


def test_untrained_sidecar_follows_the_file(tmp_path):
    s = cat.spec("AI4GSnapshotSerengeti")
    path = cat.build_untrained(tmp_path, s)
    assert cat.is_untrained(path)
    side = json.loads((tmp_path / (s.filename + ".untrained.json")).read_text())
    assert side["sha256"] == cat.sha256_of(path)
    with pytest.raises(ModelError, match="untrained"):
        cat.require(tmp_path, s, allow_untrained=False)
    assert cat.require(tmp_path, s, allow_untrained=True).untrained
    path.write_bytes(b"pretend these are the real weights")  # replaced by hand: no longer untrained
    assert not cat.is_untrained(path)
    assert not cat.require(tmp_path, s, allow_untrained=False).untrained
    assert not list(tmp_path.glob(".*.tmp"))


def test_architecture_without_config_cannot_be_built(tmp_path):
    with pytest.raises(ModelError, match="no untrained"):
        cat.build_untrained(tmp_path, cat.spec("MDV6-yolov10-c"))
    assert not list(tmp_path.iterdir())


def test_fetch_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    s = cat.spec("AI4GSnapshotSerengeti")
    bad = cat.ModelSpec(**{**s.__dict__, "source": "http://127.0.0.1:9/nothing-listens-here"})
    with pytest.raises(ModelError, match="could not download"):
        cat.fetch(tmp_path, bad)
    assert list(tmp_path.iterdir()) == []
