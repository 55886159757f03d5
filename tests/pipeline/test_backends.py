"""Inference backends: ONNX exports keyed by the weights' checksum, equality with PyTorch on the seed
videos' frames, refusal past the tolerance, and the per-node choice (real models, untrained weights)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from wildswarm.config import Settings
from wildswarm.pipeline import backends, torch_path
from wildswarm.pipeline import models as cat

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.fold import away_from_identity  # noqa: E402  (batch norms as trained ones are: not the identity)

pytestmark = pytest.mark.slow

ONNX_BACKENDS = [b for b in ("onnxruntime", "openvino") if b in backends.installed()]


def _load(models_dir, name, **options):
    from wildswarm.pipeline import families
    w = cat.require(models_dir, cat.spec(name), allow_untrained=True)
    model = families.adapter(w.spec.family).load(w, device="cpu", image_size=640, threshold=0.001,
                                                 max_animals=2, batch_size=4, **options)
    return w, model


@pytest.mark.parametrize("name", ["MDV6-yolov9-c", "superanimal_quadruped", "AI4GSnapshotSerengeti"])
def test_every_onnx_backend_gives_pytorchs_raw_outputs_on_the_seed_frames(untrained_models_dir, seed_frames, name):
    w, model = _load(untrained_models_dir, name)
    onnx = backends.export(model, w)
    assert onnx.parent == untrained_models_dir and w.sha256[:16] in onnx.name
    x = model.probe(seed_frames)
    reference = model.raw(x)
    assert all(np.isfinite(v).all() and v.size for v in reference.values())
    for b in ONNX_BACKENDS:
        diffs = backends.compare(reference, model.raw(x, backends.Runtime(onnx, b, threads=2)))
        print(f"{name} {b}: max relative difference {max(diffs.values()):.3g} per output {diffs}")
        assert set(diffs) == set(reference)
        assert max(diffs.values()) <= backends.TOLERANCE["fp32"], (b, diffs)


def test_keypoints_for_given_boxes_agree_across_backends(untrained_models_dir, seed_frames):
    """The whole pose step (DeepLabCut's crop, network, heatmap decoding) on boxes given by hand."""
    from wildswarm.pipeline.detections import sorted_detections
    from wildswarm.pipeline.pose import PoseEstimator
    w = cat.require(untrained_models_dir, cat.spec("superanimal_quadruped"), allow_untrained=True)
    pose = PoseEstimator(w, device="cpu", max_animals=2, batch_size=4)
    dets = []
    for f in seed_frames:
        h, wd = f.shape[:2]
        dets.append(sorted_detections([[wd * .1, h * .2, wd * .5, h * .9], [wd * .4, h * .1, wd * .9, h * .6]],
                                      [0.9, 0.8], [0, 0]))
    reference = pose.estimate(seed_frames, dets)
    onnx = backends.export(pose.model, w)
    for b in ONNX_BACKENDS:
        pose.model.use(backends.Runtime(onnx, b, threads=2))
        got = pose.estimate(seed_frames, dets)
        xy = max(float(np.abs(g.xy - r.xy).max()) for g, r in zip(got, reference))
        conf = max(float(np.abs(g.confidence - r.confidence).max()) for g, r in zip(got, reference))
        print(f"keypoints {b}: max difference {xy:.3g} px, confidence {conf:.3g}")
        assert xy <= 0.5 and conf <= 1e-3, (b, xy, conf)
    pose.model.use(None)


def test_a_backend_whose_outputs_differ_is_refused(untrained_models_dir, tmp_path):
    """An export of other weights put in place of the right one, with a record that vouches for it:
    the bytes check passes, the equality check refuses it, and the model stays on PyTorch."""
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy2(untrained_models_dir / "AI4GSnapshotSerengeti.ckpt", folder / "AI4GSnapshotSerengeti.ckpt")
    shutil.copy2(untrained_models_dir / "weights.lock.json", folder / "weights.lock.json")
    other = tmp_path / "other"
    cat.build_untrained(other, cat.spec("AI4GSnapshotSerengeti"), seed=7)
    w_other, m_other = _load(other, "AI4GSnapshotSerengeti")
    wrong = backends.export(m_other, w_other)
    w, model = _load(folder, "AI4GSnapshotSerengeti")
    dest = backends.export_path(w)
    shutil.copyfile(wrong, dest)
    record = json.loads((other / (wrong.name + ".json")).read_text())
    record["weights_sha256"] = w.sha256
    (folder / (dest.name + ".json")).write_text(json.dumps(record))
    assert backends.exported(w) == dest
    choice, runtime = backends.choose(model, w, wanted="auto", device="cpu")
    assert runtime is None and choice.backend == "torch"
    for b in ONNX_BACKENDS:
        assert "differ from PyTorch's" in choice.refused[b], choice.refused


def test_a_backend_whose_outputs_hold_nan_is_refused(untrained_models_dir, tmp_path, monkeypatch):
    """NaN is never greater than a tolerance: a runtime that hands back NaN (a damaged export, an
    overflow in reduced precision) must be refused by the equality check, not taken as equal."""
    w, model = _load(untrained_models_dir, "AI4GSnapshotSerengeti")

    class Poisoned(backends.Runtime):
        def __call__(self, x):
            out = [np.array(o, copy=True) for o in super().__call__(x)]
            out[0].flat[0] = np.nan
            return out

    monkeypatch.setattr(backends, "Runtime", Poisoned)
    choice, runtime = backends.choose(model, w, wanted="auto", device="cpu", export_folder=tmp_path / "exports")
    assert runtime is None and choice.backend == "torch", choice.describe()
    for b in ONNX_BACKENDS:
        assert "differ from PyTorch's" in choice.refused[b], choice.refused


def test_exports_are_keyed_by_the_weights_checksum_and_checked(untrained_models_dir, tmp_path):
    folder = tmp_path / "models"
    cat.build_untrained(folder, cat.spec("AI4GSnapshotSerengeti"), seed=1)
    w, model = _load(folder, "AI4GSnapshotSerengeti")
    first = backends.export(model, w)
    assert backends.exported(w) == first
    assert backends.export(model, w) == first           # kept, not made again
    record = json.loads(first.with_name(first.name + ".json").read_text())
    assert record["weights_sha256"] == w.sha256 and record["model"] == "AI4GSnapshotSerengeti"
    # Bytes changed after the record was written: never used.
    with open(first, "r+b") as fh:
        fh.seek(100)
        fh.write(b"\0" * 16)
    assert backends.exported(w) is None
    # New weights: a new name; the old export is not theirs.
    cat.build_untrained(folder, cat.spec("AI4GSnapshotSerengeti"), seed=2)
    w2 = cat.require(folder, cat.spec("AI4GSnapshotSerengeti"), allow_untrained=True)
    assert w2.sha256 != w.sha256 and backends.export_path(w2) != first and backends.exported(w2) is None


def test_the_choice_is_the_fastest_equal_backend_and_its_timings_are_kept(untrained_models_dir, tmp_path):
    w, model = _load(untrained_models_dir, "AI4GSnapshotSerengeti")
    ranking = backends.Ranking(tmp_path / "cache" / "backends.json")
    choice, runtime = backends.choose(model, w, ranking=ranking, export_folder=tmp_path / "exports")
    assert set(choice.seconds) == {"torch", *ONNX_BACKENDS}
    assert choice.backend == min(choice.seconds, key=choice.seconds.get)
    assert choice.measured == "now" and (runtime is None) == (choice.backend == "torch")
    again, _ = backends.choose(model, w, ranking=ranking, export_folder=tmp_path / "exports")
    assert again.measured == str(ranking.path) and again.seconds == choice.seconds
    assert again.backend == choice.backend and max(again.difference.values(), default=0) <= again.tolerance
    forced, runtime = backends.choose(model, w, wanted="torch")
    assert forced.backend == "torch" and runtime is None


@pytest.mark.skipif("openvino" not in ONNX_BACKENDS, reason="OpenVINO is not installed")
def test_bf16_is_opt_in_and_checked_against_its_own_tolerance(untrained_models_dir):
    w, model = _load(untrained_models_dir, "superanimal_quadruped")
    backends.export(model, w)                  # made by an earlier test, unless run on its own
    choice, _ = backends.choose(model, w, wanted="openvino", precision="bf16")
    assert choice.backend == "openvino" and choice.precision == "bf16", choice
    assert 0 < max(choice.difference.values()) <= backends.TOLERANCE["bf16"]
    with pytest.raises(Exception, match="bf16 runs on OpenVINO or PyTorch"):
        backends.check_choice("onnxruntime", "bf16")
    backends.check_choice("torch", "bf16")     # autocast: the GPU node's bf16


@pytest.mark.skipif("openvino" not in ONNX_BACKENDS, reason="OpenVINO is not installed")
def test_bf16_past_its_tolerance_falls_back_to_the_float32_runtime_not_to_pytorch(untrained_models_dir,
                                                                                 monkeypatch):
    """A CPU node asked for bf16 where OpenVINO's bf16 is refused runs the float32 choice, as INT8 does:
    the fastest float32 runtime (here the one asked for), not PyTorch, whose CPU forward is 2-5x slower."""
    w, model = _load(untrained_models_dir, "superanimal_quadruped")
    backends.export(model, w)
    monkeypatch.setitem(backends.TOLERANCE, "bf16", 1e-9)
    choice, runtime = backends.choose(model, w, wanted="openvino", precision="bf16")
    assert choice.backend == "openvino" and choice.precision == "fp32" and runtime is not None, choice
    assert "outputs differ from PyTorch's" in choice.refused["bf16"], choice.refused
    assert max(choice.difference.values()) <= backends.TOLERANCE["fp32"]


def _first_conv(nets):
    import torch
    return next(m for net in nets for m in net.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("name", ["MDV6-yolov9-c", "MDV5a", "superanimal_quadruped", "AI4GSnapshotSerengeti"])
def test_pytorch_in_bf16_runs_each_network_under_autocast_and_undoes_it(untrained_models_dir, seed_frames, name,
                                                                        tmp_path):
    """The GPU node's bf16 path, run on this CPU: the same code, whatever the device (only its speed
    differs). Inside, convolutions compute in bf16; out come float32 outputs within the tolerance;
    undone, the networks give float32's outputs to the bit. Every model family is here: MDV5a, the
    GPU nodes' bigger detector, is built for this test alone."""
    import torch
    folder = untrained_models_dir
    if name == "MDV5a":
        folder = tmp_path / "models"
        cat.build_untrained(folder, cat.spec(name))
    w, model = _load(folder, name)
    frames = seed_frames[:1]
    x = model.probe(frames)
    with torch.inference_mode():
        reference = model.raw(x)
    layouts = [p.stride() for net in model.networks() for p in net.parameters()]
    seen = []
    hook = _first_conv(model.networks()).register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    choice = backends.Choice(w.spec.name, "torch")
    backends.try_autocast(model, choice, frames)
    assert choice.precision == "bf16" and not choice.refused, choice
    assert 0 < max(choice.difference.values()) <= backends.TOLERANCE["bf16"], choice.difference
    assert set(choice.difference) == set(reference)
    seen.clear()
    with torch.inference_mode():
        cast = model.raw(x)
    assert seen and set(seen) == {torch.bfloat16}
    assert all(v.dtype == np.float32 for v in cast.values())
    print(f"{name} PyTorch bf16: max relative difference {max(choice.difference.values()):.3g}")
    autocast = model.networks()[0].forward.autocast
    autocast.undo()
    assert all("forward" not in net.__dict__ for net in model.networks())
    assert [p.stride() for net in model.networks() for p in net.parameters()] == layouts
    seen.clear()
    with torch.inference_mode():
        again = model.raw(x)
    assert set(seen) == {torch.float32}
    for k in reference:
        assert np.array_equal(reference[k], again[k]), k
    hook.remove()


def test_pytorch_in_bf16_past_its_tolerance_is_refused_and_stays_float32(untrained_models_dir, seed_frames,
                                                                       monkeypatch):
    import torch
    w, model = _load(untrained_models_dir, "AI4GSnapshotSerengeti")
    x = model.probe(seed_frames[:2])
    with torch.inference_mode():
        reference = model.raw(x)
    monkeypatch.setitem(backends.TOLERANCE, "bf16", 1e-9)
    choice = backends.Choice(w.spec.name, "torch")
    backends.try_autocast(model, choice, seed_frames[:2])
    assert choice.precision == "fp32" and "differ from float32's" in choice.refused["torch bf16"], choice
    assert "forward" not in model.networks()[0].__dict__
    with torch.inference_mode():
        again = model.raw(x)
    assert np.array_equal(reference["probabilities"], again["probabilities"])


def test_pytorch_runs_bf16_only_where_its_device_has_it_natively(untrained_models_dir):
    """Where PyTorch has no native bf16 (this CPU: oneDNN without bf16 kernels, 7x slower than
    float32), asking for it leaves the model in float32 and says why; where it has, it is used."""
    w, model = _load(untrained_models_dir, "AI4GSnapshotSerengeti")
    choice, runtime = backends.choose(model, w, wanted="torch", precision="bf16", device="cpu")
    assert runtime is None and choice.backend == "torch"
    if backends.native_bf16("cpu"):
        assert choice.precision == "bf16" and choice.difference, choice
    else:
        assert choice.precision == "fp32" and "no native bf16 on this cpu" in choice.refused["torch bf16"], choice
        assert "forward" not in model.networks()[0].__dict__


def _norms(nets) -> int:
    import torch
    return sum(isinstance(m, torch.nn.BatchNorm2d) for net in nets for m in net.modules())


@pytest.mark.parametrize("name,norms", [("superanimal_quadruped", 305), ("AI4GSnapshotSerengeti", 20)])
def test_the_pytorch_path_folds_each_batch_norm_into_its_convolution(untrained_models_dir, seed_frames, name, norms):
    """The GPU node's path (and a CPU node's, where PyTorch is asked for): every batch norm fed by a
    convolution is folded into it, so one kernel less runs per norm (SuperAnimal's HRNet-w32 runs
    305), and the outputs stay PyTorch's within the float32 tolerance."""
    import torch
    w, model = _load(untrained_models_dir, name)
    assert away_from_identity(model.networks()) == norms
    x = model.probe(seed_frames[:2])
    with torch.inference_mode():
        reference = model.raw(x)
    choice, runtime = backends.choose(model, w, wanted="torch", frames=seed_frames[:2])
    assert runtime is None and choice.backend == "torch" and choice.precision == "fp32"
    assert choice.folded == norms and "torch fold" not in choice.refused, choice
    assert _norms(model.networks()) == 0
    with torch.inference_mode():
        folded = model.raw(x)
    diffs = backends.compare(reference, folded)
    print(f"{name}: {norms} batch norms folded, max relative difference {max(diffs.values()):.3g}")
    assert 0 < max(diffs.values()) <= 1e-4, diffs
    assert choice.difference and max(choice.difference.values()) <= 1e-4
    assert choice.describe()["folded"] == norms


def test_a_network_with_no_batch_norm_left_is_not_probed_again(untrained_models_dir, monkeypatch):
    """ultralytics folds the detector's batch norms itself: nothing to do, and no probe run spent."""
    w, model = _load(untrained_models_dir, "MDV6-yolov9-c")
    assert _norms(model.networks()) == 0
    monkeypatch.setattr(model, "probe", lambda frames: pytest.fail("probed a network with nothing to fold"))
    choice = backends.Choice(w.spec.name, "torch")
    backends.fold_batch_norms(model, choice, backends.probe_frames(1))
    assert choice.folded == 0 and not choice.refused


def test_a_fold_that_would_change_the_outputs_is_refused_and_undone():
    """A convolution whose output is read past its batch norm too (a residual taken before the
    norm): folding would change what the residual sees, so the check refuses it and the network
    is put back as it was."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
            self.norm = torch.nn.BatchNorm2d(3)
            self.plain = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3))

        def forward(self, x):
            y = self.conv(x)
            return self.plain(self.norm(y) + y)

    class Model:                       # a family adapter's surface, as choose() uses it
        def __init__(self):
            self.net = Net().eval()

        def probe(self, frames):
            return np.stack([f.transpose(2, 0, 1)[:, :32, :32] / 255.0 for f in frames]).astype(np.float32)

        def raw(self, x, runtime=None):
            return {"out": self.net(torch.from_numpy(x)).numpy()}

        def networks(self):
            return [self.net]

        def use(self, runtime):
            pass

    model = Model()
    away_from_identity(model.networks())
    frames = backends.probe_frames(2)
    x = model.probe(frames)
    with torch.inference_mode():
        reference = model.raw(x)
    choice = backends.Choice("toy", "torch")
    backends.fold_batch_norms(model, choice, frames)
    assert choice.folded == 0 and "differ from the unfolded" in choice.refused["torch fold"], choice
    assert model.net.conv.__class__ is torch.nn.Conv2d and isinstance(model.net.norm, torch.nn.BatchNorm2d)
    assert isinstance(model.net.plain[1], torch.nn.BatchNorm2d)
    with torch.inference_mode():
        assert np.array_equal(model.raw(x)["out"], reference["out"])


def test_the_node_kind_tells_cpus_with_the_same_name_apart_by_their_vector_features():
    """Virtual machines often name their CPU "AMD EPYC" with or without AVX-512: timings ranked (and
    networks compiled) on one must not be taken for the other's."""
    avx2 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 fma\nprocessor\t: 1\n"
    avx512 = avx2.replace("avx2 fma", "avx2 fma avx512f avx512bw avx512vl avx512_bf16")
    assert backends.node_kind(2, avx2) != backends.node_kind(2, avx512)
    assert "AMD EPYC|isa=avx,avx2,fma|threads=2|" in backends.node_kind(2, avx2)
    assert backends.node_kind(2, avx2) == backends.node_kind(2, avx2 + "flags\t\t: other\n")
    assert backends.node_kind(2, avx2) != backends.node_kind(4, avx2)
    assert backends.compiled_folder(Path("c"), 2) != backends.compiled_folder(Path("c"), 4)


@pytest.mark.skipif("openvino" not in ONNX_BACKENDS, reason="OpenVINO is not installed")
def test_openvino_keeps_its_compiled_networks_and_compiles_a_damaged_one_again(untrained_models_dir, tmp_path):
    w, model = _load(untrained_models_dir, "AI4GSnapshotSerengeti")
    onnx = backends.export(model, w, tmp_path / "exports")
    x = model.probe(backends.probe_frames())
    reference = backends.Runtime(onnx, "openvino", threads=2)(x)
    cache = tmp_path / "compiled"
    runs = [backends.Runtime(onnx, "openvino", threads=2, compiled_cache=cache) for _ in range(2)]
    assert [r.from_cache for r in runs] == [False, True]
    for r in runs:
        assert all(np.array_equal(a, b) for a, b in zip(r(x), reference))
    (blob,) = cache.glob("*.blob")
    blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])      # a write cut short
    again = backends.Runtime(onnx, "openvino", threads=2, compiled_cache=cache)
    assert not again.from_cache and all(np.array_equal(a, b) for a, b in zip(again(x), reference))
    assert backends.Runtime(onnx, "openvino", threads=2, compiled_cache=cache).from_cache   # written anew


_LOAD_TOGETHER = """
import logging, sys, time
from pathlib import Path
logging.basicConfig(level=logging.WARNING, format="%(message)s")
from wildswarm.pipeline import backends
onnx, cache, start = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
while time.time() < start:
    time.sleep(0.001)
for _ in range(3):
    r = backends.Runtime(onnx, "openvino", threads=1, compiled_cache=cache)
print("loaded", r.from_cache)
"""


@pytest.mark.skipif("openvino" not in ONNX_BACKENDS, reason="OpenVINO is not installed")
def test_workers_starting_together_share_the_compiled_networks_safely(untrained_models_dir, tmp_path):
    """Four processes load the detector at the same moment, three times each, into one cache folder, as
    workers on nodes of one kind do after a deploy (they share it on the shared filesystem). Through
    OpenVINO's own CACHE_DIR, which writes its files in place, every such round had a process die of
    SIGBUS (it had mapped a file another was rewriting) or lose the cache ("cannot set permissions:
    No such file or directory")."""
    import subprocess
    import time
    w, model = _load(untrained_models_dir, "MDV6-yolov9-c")
    onnx = backends.export(model, w, tmp_path / "exports")
    for round_ in range(3):
        cache = tmp_path / f"compiled-{round_}"
        start = time.time() + 8                      # every process imported and waiting, then all at once
        procs = [subprocess.Popen([sys.executable, "-c", _LOAD_TOGETHER, str(onnx), str(cache), str(start)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(4)]
        outs = [(p.wait(timeout=300), p.stdout.read()) for p in procs]
        for code, out in outs:
            assert code == 0 and "loaded True" in out, (round_, code, out[-500:])
            assert "out of use" not in out and "could not be imported" not in out, out[-500:]
        assert len(list(cache.glob("*.blob"))) == 1 and not list(cache.glob(".*"))


@pytest.mark.skipif("openvino" not in ONNX_BACKENDS, reason="OpenVINO is not installed")
def test_a_cache_of_compiled_networks_that_cannot_be_written_costs_the_cache_only(untrained_models_dir,
                                                                                    tmp_path, caplog):
    """A full filesystem and a read-only one (real tmpfs, needs root), and a path through a file."""
    from kit.faults import Tmpfs, require_mount
    w, model = _load(untrained_models_dir, "AI4GSnapshotSerengeti")
    onnx = backends.export(model, w, tmp_path / "exports")
    x = model.probe(backends.probe_frames())
    reference = backends.Runtime(onnx, "openvino", threads=2)(x)
    (tmp_path / "a-file").write_text("")

    def loads(cache: Path) -> None:
        caplog.clear()
        r = backends.Runtime(onnx, "openvino", threads=2, compiled_cache=cache)
        assert not r.from_cache and all(np.array_equal(a, b) for a, b in zip(r(x), reference))
        assert not list(cache.glob("*.blob")) if cache.is_dir() else True

    loads(tmp_path / "a-file" / "compiled")
    assert "out of use" in caplog.text
    require_mount()
    fs = Tmpfs(tmp_path / "fs", size="8m").mount()
    try:
        fs.fill()
        loads(fs.path / "compiled")
        fs.unfill()
        fs.read_only()
        loads(fs.path / "compiled-ro")
    finally:
        fs.unmount()
    choice, runtime = backends.choose(model, w, wanted="openvino", export_folder=tmp_path / "exports",
                                      compiled_cache=tmp_path / "a-file" / "compiled")
    assert choice.backend == "openvino" and runtime is not None


def test_a_read_only_models_folder_exports_into_the_cache(untrained_models_dir, tmp_path):
    """As a worker's models mount: a tmpfs holding the weights, turned read-only (needs root)."""
    from kit.faults import Tmpfs, require_mount
    require_mount()
    fs = Tmpfs(tmp_path / "models", size="128m").mount()
    try:
        for name in ("AI4GSnapshotSerengeti.ckpt", "weights.lock.json"):
            shutil.copy2(untrained_models_dir / name, fs.path / name)
        fs.read_only()
        w, model = _load(fs.path, "AI4GSnapshotSerengeti")
        cache = tmp_path / "cache" / "exports"
        choice, _ = backends.choose(model, w, export_folder=cache)
        assert backends.exported(w, cache) is not None
        assert not list(fs.path.glob("*.onnx"))
        assert not {b for b in choice.refused if b in ONNX_BACKENDS}, choice.refused
    finally:
        fs.unmount()


def test_the_pipeline_records_its_backends_and_matches_torch(untrained_settings, seed_videos, tmp_path):
    from wildswarm.pipeline.run import Pipeline
    video = seed_videos[0]
    runs = {}
    for backend in ("torch", "auto"):
        p = Pipeline(untrained_settings.replace(backend=backend, fps=2))
        r = p.analyze(video, tmp_path / backend)
        runs[backend] = (p, json.loads((r.output_dir / "summary.json").read_text()),
                         json.loads((r.output_dir / "detections.json").read_text()))
    torch_p, torch_summary, torch_dets = runs["torch"]
    auto_p, auto_summary, auto_dets = runs["auto"]
    assert torch_summary["models"]["detector"]["backend"]["backend"] == "torch"
    chosen = auto_summary["models"]["detector"]["backend"]
    assert chosen["backend"] == auto_p.backends["detector"].backend
    # A model on an exported runtime keeps no second copy of its weights in PyTorch: what the
    # worker's pipeline cache counts for it (every tensor reachable, and the runtime) is the runtime.
    from wildswarm.pipeline.cache import memory_bytes
    for part in (auto_p.detector, auto_p.pose):
        runtime = auto_p.runtimes[part.weights.spec.kind]
        if runtime is not None:
            assert memory_bytes(part) <= runtime.nbytes * 1.05, (part.weights.spec.name, memory_bytes(part))
        else:
            assert memory_bytes(part) >= 0.9 * part.weights.path.stat().st_size
    assert chosen["max_difference"] <= chosen["tolerance"]
    # OpenVINO's compiled networks are kept in the cache folder, one folder per node kind; a second
    # pipeline on this node imports them.
    on_openvino = [r for r in auto_p.runtimes.values() if r is not None and r.backend == "openvino"]
    if on_openvino:
        folder = backends.compiled_folder(untrained_settings.cache / "openvino", auto_p.threads)
        assert len(list(folder.glob("*.blob"))) >= len(on_openvino)
        again = Pipeline(untrained_settings.replace(backend="auto"))
        assert [r for r in again.runtimes.values() if r is not None and r.backend == "openvino"]
        assert all(r.from_cache for r in again.runtimes.values() if r is not None and r.backend == "openvino")
    a = [d for im in torch_dets["images"] for d in im["detections"]]
    b = [d for im in auto_dets["images"] for d in im["detections"]]
    assert a, "the lowered threshold lets boxes through"
    assert len(a) == len(b)
    assert np.allclose([d["bbox"] for d in a], [d["bbox"] for d in b], atol=1e-3)
    assert np.allclose([d["conf"] for d in a], [d["conf"] for d in b], atol=1e-3)


def test_the_pipeline_runs_pytorch_in_bf16_where_its_device_has_it_and_records_it(untrained_settings, seed_videos,
                                                                                  tmp_path, monkeypatch):
    """``backend=torch, precision=bf16`` as on a GPU node. On this CPU (no native bf16 in PyTorch) the
    models stay in float32 and the summary says why; with the device taken to have it, the whole
    video runs through bf16 networks (the libraries' letterbox, non-maximum suppression, crops and
    heatmap decoding around them, as on a GPU) and the summary records bf16 for each model."""
    from wildswarm.pipeline.run import Pipeline
    video = seed_videos[0]
    settings = untrained_settings.replace(backend="torch", precision="bf16", fps=1, classifier="AI4GSnapshotSerengeti")
    summaries = {}
    for native in (False, True):
        monkeypatch.setattr(torch_path, "native_bf16", lambda device_type, native=native: native)
        r = Pipeline(settings).analyze(video, tmp_path / str(native))
        summaries[native] = json.loads((r.output_dir / "summary.json").read_text())
        assert (r.output_dir / "keypoints.csv").is_file() and r.frames_analysed > 0
    for kind in ("detector", "classifier", "pose"):
        off, on = summaries[False]["models"][kind]["backend"], summaries[True]["models"][kind]["backend"]
        assert off["backend"] == on["backend"] == "torch"
        assert off["precision"] == "fp32" and "no native bf16" in off["refused"]["torch bf16"], off
        assert on["precision"] == "bf16" and 0 < on["max_difference"] <= on["tolerance"] == 5e-2, on
    assert summaries[True]["animals"]["poses"] > 0, "the lowered threshold lets boxes reach the pose model"


def test_settings_and_profiles_name_a_backend():
    from wildswarm.profiles import FIELDS
    assert {"backend", "precision"} <= set(FIELDS)
    s = Settings.from_env({"WILDSWARM_BACKEND": "openvino", "WILDSWARM_PRECISION": "bf16"})
    assert (s.backend, s.precision) == ("openvino", "bf16")
    with pytest.raises(Exception, match="unknown backend"):
        backends.check_choice("tensorrt", "fp32")
