"""Defence in depth: even a hostile file that was recorded by mistake is loaded weights-only where the
library allows it, so its pickle cannot run code. (MegaDetector v5's yolov5 format cannot be: there the
checksum is the only guard, see docs/models.md.)"""
import pytest

from wildswarm.errors import ModelError
from wildswarm.pipeline import models as cat
from wildswarm.pipeline import weights_lock
from wildswarm.pipeline.safeload import verified_copy


def recorded_by_mistake(folder, name, hostile, key="model") -> cat.Weights:
    s = cat.spec(name)
    path = hostile(folder / s.filename, key)
    weights_lock.record(folder, weights_lock.Entry(
        file=s.filename, model=s.name, sha256=cat.sha256_of(path), size=path.stat().st_size,
        source="a mistake", when=weights_lock.now(), how="trusted-by-hand"))
    return cat.require(folder, s, allow_untrained=False)


def test_megadetector_v6_is_loaded_weights_only(tmp_path, hostile):
    from wildswarm.pipeline.detect import Detector
    w = recorded_by_mistake(tmp_path, "MDV6-yolov9-c", hostile)
    with pytest.raises(Exception, match="outside the supported Ultralytics checkpoint format"):
        Detector(w, device="cpu", image_size=320, threshold=0.1)
    assert not hostile.marker.exists()


def test_classifier_is_loaded_weights_only(tmp_path, hostile, monkeypatch):
    from wildswarm.pipeline.detect import Classifier
    # PytorchWildlife relies on torch.load's default, which this variable turns off
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    w = recorded_by_mistake(tmp_path, "AI4GSnapshotSerengeti", hostile, key="state_dict")
    with pytest.raises(Exception, match="[Ww]eights.only"):
        Classifier(w, device="cpu")
    assert not hostile.marker.exists()


def test_superanimal_is_loaded_weights_only(tmp_path, hostile, monkeypatch):
    from deeplabcut.pose_estimation_pytorch.runners import base
    from wildswarm.pipeline.pose import PoseEstimator
    # DeepLabCut's own default (TORCH_LOAD_WEIGHTS_ONLY=false flips it) must not decide
    monkeypatch.setattr(base, "_load_weights_only", False)
    w = recorded_by_mistake(tmp_path, "superanimal_quadruped", hostile)
    with pytest.raises(Exception, match="[Ww]eights.only"):
        PoseEstimator(w, device="cpu", max_animals=1)
    assert not hostile.marker.exists()


class BuildsADetectionModel:
    """Unpickling this builds an ultralytics ``DetectionModel`` from a config whose activation string
    calls ``os.mkdir(path)``: outside ultralytics' own restricted load, ``parse_model`` evals it."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        from ultralytics.nn.tasks import DetectionModel
        cfg = {"activation": f"__import__('os').mkdir({self.path!r})", "backbone": [[-1, 1, "Conv", [16, 3, 2]]],
               "head": []}
        return (DetectionModel, (cfg,))


@pytest.mark.parametrize("name,key", [("AI4GSnapshotSerengeti", "state_dict"), ("superanimal_quadruped", "model")])
def test_the_classes_the_detector_allowed_do_not_open_the_other_models_loads(tmp_path, untrained_models_dir, name,
                                                                              key):
    """Loading MegaDetector v6 weights-only registers ultralytics' model classes with torch for the
    whole process (ultralytics' ``_SafeLoad``), and a pipeline loads its detector first: a classifier
    or pose file recorded by mistake must still not construct them."""
    import torch
    from wildswarm.pipeline import families
    from wildswarm.pipeline.detect import Detector
    Detector(cat.require(untrained_models_dir, cat.spec("MDV6-yolov9-c"), allow_untrained=True), device="cpu",
             image_size=320, threshold=0.1)
    marker = tmp_path / "PAYLOAD-RAN"
    w = recorded_by_mistake(tmp_path, name, lambda path, key: torch.save({key: BuildsADetectionModel(marker)}, path)
                            or path, key)
    with pytest.raises(Exception):
        families.adapter(w.spec.family).load(w, device="cpu", max_animals=1)
    assert not marker.exists()


def test_untrained_megadetector_v6_loads_through_the_restricted_loader(untrained_models_dir):
    import numpy as np
    from wildswarm.pipeline.detect import Detector
    w = cat.require(untrained_models_dir, cat.spec("MDV6-yolov9-c"), allow_untrained=True)
    det = Detector(w, device="cpu", image_size=320, threshold=0.001)
    assert len(det.detect([np.zeros((96, 160, 3), np.uint8)])) == 1


def test_verified_copy_refuses_a_file_swapped_after_the_check(tmp_path):
    s = cat.spec("MDV6-yolov9-c")
    (tmp_path / s.filename).write_bytes(b"checked")
    w = cat.trust(tmp_path, s)
    with verified_copy(w) as copy:
        assert copy.read_bytes() == b"checked" and copy.name == s.filename and copy.parent != tmp_path
        private = copy.parent
    assert not private.exists()
    (tmp_path / s.filename).write_bytes(b"swapped")
    with pytest.raises(ModelError, match="changed while"):
        with verified_copy(w):
            pass


@pytest.mark.slow
def test_untrained_megadetector_v5_loads_from_a_private_hub_folder(tmp_path):
    """MDv5 goes through PytorchWildlife's torch-hub route, fed from a private verified copy."""
    import numpy as np
    from wildswarm.pipeline.detect import Detector
    s = cat.spec("MDV5a")
    cat.build_untrained(tmp_path, s)
    det = Detector(cat.require(tmp_path, s, allow_untrained=True), device="cpu", image_size=320, threshold=0.001)
    assert len(det.detect([np.zeros((96, 160, 3), np.uint8)])) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [s.filename, "weights.lock.json"]
