"""INT8 (opt-in): exports calibrated on real frames, keyed by the weights and checked like the float32
ones, run by ONNX Runtime or OpenVINO within their own tolerance, and float32 (saying why) wherever
INT8 cannot be used. Real models (untrained weights), real quantizer, real runtimes, the seed videos."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from wildswarm.cli import main
from wildswarm.pipeline import backends, quantize
from wildswarm.pipeline import models as cat

pytestmark = pytest.mark.slow

ONNX_BACKENDS = [b for b in ("onnxruntime", "openvino") if b in backends.installed()]
CLASSIFIER = "AI4GSnapshotSerengeti"


def _classifier(folder):
    from wildswarm.pipeline.detect import Classifier
    w = cat.require(folder, cat.spec(CLASSIFIER), allow_untrained=True)
    return w, Classifier(w, device="cpu")


@pytest.fixture
def classifier_int8(models_copy, seed_frames):
    """A private models folder whose classifier has an INT8 export, calibrated on crops of seed frames."""
    folder = models_copy(f"{CLASSIFIER}.ckpt")
    w, stage = _classifier(folder)
    fp32 = backends.export_weights(w)
    inputs = [stage.model.probe(seed_frames[i:i + 2]) for i in range(0, len(seed_frames), 2)]
    return folder, quantize.quantize(w, fp32, inputs, calibration={"test": True})


def test_an_int8_export_is_keyed_by_the_weights_and_its_bytes_are_checked(classifier_int8):
    folder, path = classifier_int8
    w, _ = _classifier(folder)
    assert backends.quantized(w) == path == backends.int8_path(w)
    assert path.name == f"{w.path.name}.{w.sha256[:16]}.int8.onnx"
    rec = backends.export_record(path)
    assert rec["weights_sha256"] == w.sha256 and rec["from"] == backends.export_path(w).name
    assert rec["calibration"]["inputs"] == 4 and rec["calibration"]["test"] is True
    import onnx
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops          # convolutions in 8 bits
    with open(path, "r+b") as fh:                                         # changed after its record
        fh.seek(200)
        fh.write(b"\0" * 16)
    assert backends.quantized(w) is None
    cat.build_untrained(folder, cat.spec(CLASSIFIER), seed=5)             # new weights: not theirs
    w2 = cat.require(folder, cat.spec(CLASSIFIER), allow_untrained=True)
    assert backends.int8_path(w2) != path and backends.quantized(w2) is None


@pytest.mark.skipif(not ONNX_BACKENDS, reason="no ONNX backend installed")
def test_int8_runs_its_export_on_the_fastest_onnx_backend_within_its_tolerance(classifier_int8, tmp_path):
    folder, path = classifier_int8
    w, stage = _classifier(folder)
    ranking = backends.Ranking(tmp_path / "backends.json")
    choice, runtime = backends.choose(stage.model, w, precision="int8", ranking=ranking)
    assert choice.precision == "int8" and choice.backend in ONNX_BACKENDS, choice
    assert runtime.path == path and set(choice.seconds) == {"torch", *ONNX_BACKENDS}
    assert 0 < max(choice.difference.values()) <= backends.TOLERANCE["int8"]
    assert "int8" not in choice.refused
    fp32, _ = backends.choose(stage.model, w, precision="fp32", ranking=ranking)
    assert max(choice.difference.values()) > max(fp32.difference.values())  # 8 bits, not float32's rounding


def test_int8_without_an_export_runs_float32_on_the_fastest_backend_and_says_how_to_make_one(models_copy):
    folder = models_copy(f"{CLASSIFIER}.ckpt")
    w, stage = _classifier(folder)
    choice, runtime = backends.choose(stage.model, w, precision="int8", export_folder=folder.parent / "exports")
    assert choice.precision == "fp32" and "wildswarm models quantize --videos" in choice.refused["int8"]
    assert (runtime is None) == (choice.backend == "torch")
    assert max(choice.difference.values(), default=0) <= backends.TOLERANCE["fp32"]


def test_int8_past_its_tolerance_is_refused_and_the_model_runs_in_float32(classifier_int8, monkeypatch):
    folder, _ = classifier_int8
    w, stage = _classifier(folder)
    monkeypatch.setitem(backends.TOLERANCE, "int8", 1e-9)
    choice, _ = backends.choose(stage.model, w, precision="int8")
    assert choice.precision == "fp32", choice
    assert "outputs differ from PyTorch's" in choice.refused["int8"]


def test_int8_is_a_cpu_precision_of_the_onnx_backends(classifier_int8):
    with pytest.raises(Exception, match="int8 runs on ONNX Runtime or OpenVINO"):
        backends.check_choice("torch", "int8")
    backends.check_choice("onnxruntime", "int8")
    folder, _ = classifier_int8
    w, stage = _classifier(folder)
    choice, runtime = backends.choose(stage.model, w, precision="int8", device="cuda")   # a GPU node
    assert runtime is None and choice.backend == "torch" and choice.precision == "fp32"
    assert "INT8 runs on CPU nodes" in choice.refused["int8"]


def test_quantize_from_the_command_line_then_analyse_in_int8(untrained_settings, seed_videos, tmp_path,
                                                             models_copy):
    """As a lab would: `wildswarm models quantize --videos <their videos>`, then the pipeline with
    precision int8 runs the default profile's detector and pose model in INT8 and records it."""
    from wildswarm.pipeline.run import Pipeline
    folder = models_copy("MDV6b-yolov9-c.pt", "superanimal_quadruped_hrnet_w32.pt")
    env = {"WILDSWARM_MODELS_DIR": str(folder), "WILDSWARM_DATA": str(tmp_path / "data"), "WILDSWARM_UNTRAINED": "1",
           "WILDSWARM_DETECTION_THRESHOLD": "0.001", "WILDSWARM_DETECTOR_IMAGE_SIZE": "320"}
    result = CliRunner().invoke(main, ["models", "quantize", "--videos", str(seed_videos[0].parent), "--frames", "8"],
                                env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "8 frames from 2 video(s)" in result.output
    made = sorted(p.name for p in folder.glob("*.int8.onnx"))
    assert [n.split(".")[0] for n in made] == ["MDV6b-yolov9-c", "superanimal_quadruped_hrnet_w32"], made
    pose = backends.export_record(next(folder.glob("superanimal*.int8.onnx")))
    assert pose["calibration"]["videos"] == {v.name: 4 for v in seed_videos}
    assert pose["calibration"]["animal_boxes"] > 0       # the crops of the float32 detector's boxes

    settings = untrained_settings.replace(models_dir=folder, precision="int8", fps=2)
    r = Pipeline(settings).analyze(seed_videos[0], tmp_path / "out")
    summary = json.loads((r.output_dir / "summary.json").read_text())
    for kind in ("detector", "pose"):
        b = summary["models"][kind]["backend"]
        assert b["precision"] == "int8" and b["backend"] in ONNX_BACKENDS, b
        assert 0 <= b["max_difference"] <= b["tolerance"] == backends.TOLERANCE["int8"]
    assert (r.output_dir / "keypoints.csv").is_file() and r.frames_analysed > 0


def test_quantize_refuses_what_is_not_a_video_by_name(tmp_path, models_copy):
    folder = models_copy("MDV6b-yolov9-c.pt")
    junk = tmp_path / "notes.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    env = {"WILDSWARM_MODELS_DIR": str(folder), "WILDSWARM_UNTRAINED": "1", "WILDSWARM_DATA": str(tmp_path / "data")}
    result = CliRunner().invoke(main, ["models", "quantize", "--videos", str(junk)], env=env)
    assert result.exit_code != 0 and "notes.mp4" in result.output, result.output
    assert not list(folder.glob("*.int8.onnx*"))
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(main, ["models", "quantize", "--videos", str(empty)], env=env)
    assert result.exit_code == 2 and "no video" in result.output


def test_calibration_frames_spread_over_each_video(seed_videos):
    frames, source = quantize.calibration_frames(seed_videos, 10)
    assert source == {"videos": {v.name: 5 for v in seed_videos}, "frames": 10}
    assert all(f.ndim == 3 and f.shape[2] == 3 and f.dtype == np.uint8 for f in frames)
    first = frames[:5]
    assert not all(np.array_equal(first[0], f) for f in first[1:])      # not one frame five times


def test_calibration_gives_each_model_what_the_pipeline_gives_it(untrained_settings, seed_frames):
    """The detector's letterboxed frames; the classifier's and the pose model's crops of at most
    ``max_animals`` animal boxes a frame (an untrained detector at threshold 0.001 finds hundreds)."""
    from wildswarm.pipeline.run import Pipeline
    settings = untrained_settings.replace(backend="torch", classifier=CLASSIFIER, max_animals=2)
    p = Pipeline(settings)
    frames = seed_frames[:3]
    detections = p.detector.detect(frames)
    assert min(len(d) for d in detections) > 2
    det = quantize.calibration_inputs(p.detector, frames, detections, 2, batch=2)
    assert [len(x) for x in det] == [2, 1] and np.array_equal(det[0], p.detector.model.probe(frames[:2]))
    for stage, size in ((p.classifier, 224), (p.pose, 256)):
        crops = quantize.calibration_inputs(stage, frames, detections, 2, batch=4)
        assert [len(x) for x in crops] == [4, 2] and crops[0].shape[1:] == (3, size, size), stage
    # a video of another frame size letterboxes to another shape: batched apart, not refused
    import cv2
    square = [cv2.resize(f, (480, 480)) for f in frames[:2]]
    mixed = quantize.calibration_inputs(p.detector, frames + square, detections + p.detector.detect(square), 2,
                                        batch=2)
    assert len({x.shape[1:] for x in mixed}) == 2 and det[0].shape[1:] in {x.shape[1:] for x in mixed}
    assert sum(len(x) for x in mixed) == 5 and all(len(x) <= 2 for x in mixed)
