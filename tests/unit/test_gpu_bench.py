"""bench/gpu.py's own parts, on the CPU: its batched non-maximum suppression must pick what
torchvision's does, and the pipeline it times must carry every frame through to encoded MP4s.

The GPU benchmark runs once on a lent machine, with no second chance to find a wrong count there."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
cv2 = pytest.importorskip("cv2")

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench import gpu  # noqa: E402


def _reference(pred, conf, max_det):
    """torchvision's batched_nms per frame, its first max_det boxes."""
    from torchvision.ops import batched_nms
    out = []
    for p in pred.float():
        p = p.T
        scores, cls = p[:, 4:].max(1)
        keep = scores > conf
        p, scores, cls = p[keep], scores[keep], cls[keep]
        xy, wh = p[:, :2], p[:, 2:4] / 2
        boxes = torch.cat([xy - wh, xy + wh], 1)
        idx = batched_nms(boxes, scores, cls, 0.7)[:max_det]
        out.append(torch.cat([boxes[idx], scores[idx, None], cls[idx, None].float()], 1))
    return out


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("max_det", [1, 3])
def test_nms_picks_what_torchvision_picks(seed, max_det):
    g = torch.Generator().manual_seed(seed)
    b, a, c = 4, 300, 3
    xy = torch.rand(b, 2, a, generator=g) * 200
    wh = torch.rand(b, 2, a, generator=g) * 60 + 2          # many overlapping boxes
    scores = torch.rand(b, c, a, generator=g)
    scores[1] = scores[1] * 0.3                             # a frame with few boxes over the threshold
    pred = torch.cat([xy, wh, scores], 1)
    conf = 0.28
    got, valid = gpu._nms(pred, conf, max_det)
    for frame, want in enumerate(_reference(pred, conf, max_det)):
        n = len(want)
        assert int(valid[frame].sum()) == n
        assert torch.allclose(got[frame, :n], want, atol=1e-4), (frame, got[frame, :n], want)


def test_nms_with_no_box_over_the_threshold_marks_nothing_valid():
    pred = torch.cat([torch.rand(2, 4, 50) * 100, torch.full((2, 3, 50), 0.1)], 1)
    boxes, valid = gpu._nms(pred, 0.5, 2)
    assert boxes.shape == (2, 2, 6) and not valid.any()


def test_keypoints_map_the_heatmap_peak_through_the_box():
    heat = torch.zeros(1, 2, 8, 8)
    heat[0, 0, 1, 6] = 3.0                                   # row 1, column 6
    heat[0, 1, 7, 0] = 2.0
    box = torch.tensor([[100.0, 50.0, 180.0, 130.0]])       # 80 x 80 pixels: 10 a heatmap cell
    kp = gpu._keypoints(heat, box)
    assert kp[0, 0].tolist() == pytest.approx([100 + 65, 50 + 15, 3.0])
    assert kp[0, 1].tolist() == pytest.approx([100 + 5, 50 + 75, 2.0])


class _Detector(torch.nn.Module):
    """A real (small) network with the detector's output layout: (B, 4 + 3 classes, anchors)."""
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 7, 8, stride=8)

    def forward(self, x):
        y = self.conv(x).flatten(2)
        return torch.cat([y[:, :2].sigmoid() * 600, y[:, 2:4].sigmoid() * 100 + 10, y[:, 4:].sigmoid()], 1)


class _Pose(torch.nn.Module):
    def __init__(self, keypoints=5):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, keypoints, 4, stride=4)

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize("draw", [True, False])
def test_pipeline_carries_every_frame_to_encoded_segments(tmp_path, draw):
    frames = np.random.default_rng(0).integers(0, 255, (5, 90, 160, 3), dtype=np.uint8)
    det, pose = _Detector().eval(), _Pose().eval()
    res = gpu.pipeline_run(det, pose, frames, "cpu", 4, "fp32", animals=2, n_frames=23, encoders=2,
                           draw=draw, workdir=tmp_path, segment=8)
    assert res["frames"] == 23 and res["fps"] > 0
    videos = sorted(tmp_path.glob("*.mp4"))
    if not draw:
        assert videos == []
        return
    assert [v.name for v in videos] == [f"fp32-4-{s}.mp4" for s in range(3)]    # 23 frames in segments of 8
    counts = []
    for v in videos:
        cap = cv2.VideoCapture(str(v))
        counts.append(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        cap.release()
    assert counts == [8, 8, 7]


@pytest.mark.parametrize("animals", [1, 3])
def test_drawing_and_encoding_alone_writes_every_frame_into_its_segments(tmp_path, animals):
    """The drawn pipeline lines' ceiling: the same encoders with fixed boxes and no network, every frame
    written, segment by segment, with the boxes and keypoints drawn on it."""
    frames = np.full((5, 90, 160, 3), 40, dtype=np.uint8)
    res = gpu.encode_alone(frames, n_frames=21, batch=4, encoders=2, animals=animals, keypoints=6,
                           workdir=tmp_path, segment=8)
    assert res["frames"] == 21 and res["fps"] > 0 and res["encoders"] == 2
    videos = sorted(tmp_path.glob("*.mp4"))
    assert [v.name for v in videos] == [f"alone-{animals}-{s}.mp4" for s in range(3)]
    counts, drawn = [], []
    for v in videos:
        cap = cv2.VideoCapture(str(v))
        counts.append(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        ok, image = cap.read()
        drawn.append(ok and int((image[..., 1] > 200).sum()))          # the green boxes
        cap.release()
    assert counts == [8, 8, 5]
    assert all(drawn)


def test_the_two_stream_pipeline_gives_every_frame_the_results_of_the_one_stream_pipeline(tmp_path):
    """-streams splits each batch into detection and pose (on a GPU, two streams): on the CPU it runs the
    same steps in turn, and every frame must come out with the boxes and keypoints of the one-stream path."""
    frames = np.random.default_rng(3).integers(0, 255, (7, 90, 160, 3), dtype=np.uint8)
    torch.manual_seed(0)
    det, pose = _Detector().eval(), _Pose().eval()
    got = {}
    for variant in ("fp32", "fp32-streams"):
        collect = []
        gpu.pipeline_run(det, pose, frames, "cpu", 4, variant, animals=2, n_frames=18, encoders=2, draw=True,
                         workdir=tmp_path, segment=8, collect=collect)
        got[variant] = collect
    assert [c[0] for c in got["fp32"]] == [0, 4, 8, 12, 16] == [c[0] for c in got["fp32-streams"]]
    for one, two in zip(got["fp32"], got["fp32-streams"]):
        for a, b in zip(one[1:], two[1:]):
            assert a.shape == b.shape and np.array_equal(a, b)
    assert got["fp32"][-1][3].shape == (2, 2, 5, 3)          # the last batch: 2 frames, 2 animals, 5 keypoints
    assert got["fp32"][0][2].any()                           # some box kept, so the keypoints are not all padding


def test_a_batch_makes_no_tensor_from_host_numbers(monkeypatch):
    """A tensor built from Python numbers on the GPU is a copy from pageable memory: the host then waits
    until the stream has run everything queued before it, and cannot queue the next batch meanwhile."""
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (3, 90, 160, 3), dtype=np.uint8))

    def refuse(*args, **kwargs):
        raise AssertionError("a tensor made from host data inside a batch")

    monkeypatch.setattr(torch, "tensor", refuse)
    monkeypatch.setattr(torch, "as_tensor", refuse)
    with torch.inference_mode():
        boxes, valid, kp = gpu._gpu_batch(_Detector().eval(), _Pose().eval(), frames, 2, False)
    assert boxes.shape == (3, 2, 6) and valid.shape == (3, 2) and kp.shape == (3, 2, 5, 3)


@pytest.mark.slow
def test_the_traced_detector_keeps_its_anchors_as_constants(tmp_path):
    """The kit's detector must not rebuild its anchors on the CPU at each call: on a GPU that is a copy
    to the device each forward, which stalls the host and made CUDA graph capture fail on the H200."""
    import io
    import lzma
    import zipfile
    pytest.importorskip("ultralytics")
    gpu._zeroed_script(gpu.detector(), torch.zeros(1, 3, *gpu.DET_SHAPE), tmp_path / "detector.ts.xz")
    archive = zipfile.ZipFile(io.BytesIO(lzma.decompress((tmp_path / "detector.ts.xz").read_bytes())))
    code = "".join(archive.read(n).decode() for n in archive.namelist() if n.endswith(".py"))
    assert "torch.arange" not in code and 'torch.device("cpu")' not in code
    assert "CONSTANTS" in code                               # the anchors, kept in the trace


@pytest.mark.slow
def test_folding_removes_every_batch_norm_of_the_pose_network_and_keeps_its_heatmaps():
    """The -fold variants must time the same network, only cheaper: HRNet-w32's batch norms are gone
    from the frozen graph and its heatmaps are those of the unfolded trace up to rounding."""
    pytest.importorskip("deeplabcut")
    torch.manual_seed(0)
    net = gpu.pose_network()
    with torch.no_grad():                        # weights and statistics away from the identity, as trained ones are
        for name, t in net.named_buffers():
            if t.is_floating_point():
                t.copy_(torch.rand_like(t) + 0.5 if "var" in name else torch.randn_like(t) * 0.1)
    x = torch.rand(2, 3, gpu.CROP, gpu.CROP)
    with torch.no_grad():
        traced = torch.jit.trace(net, x[:1], check_trace=False)
        want = traced(x)
        folded = gpu.fold(traced)
        got = folded(x)
    assert str(traced.inlined_graph).count("aten::batch_norm") > 300
    assert "aten::batch_norm" not in str(folded.graph)
    assert gpu._rel_diff(want, got) < 1e-4


def _small_kit(kit):
    """A kit of the shape ``prepare`` makes, with the small networks above: ``run`` end to end in seconds."""
    kit.mkdir()
    info = {"detector": gpu._zeroed_script(_Detector(), torch.zeros(1, 3, *gpu.DET_SHAPE), kit / "detector.ts.xz"),
            "pose": gpu._zeroed_script(_Pose(), torch.zeros(1, 3, gpu.CROP, gpu.CROP), kit / "pose.ts.xz"),
            "keypoints": 5, "frames": 3}
    np.savez_compressed(kit / "frames.npz",
                        frames=np.random.default_rng(1).integers(0, 255, (3, 360, 640, 3), dtype=np.uint8))
    (kit / "kit.json").write_text(json.dumps(info))


def test_a_variant_whose_networks_cannot_be_built_is_reported_and_the_others_still_run(tmp_path, monkeypatch,
                                                                                        capsys):
    """On the lent machine a variant failing to build (freezing, say) must cost that variant, not the lease."""
    _small_kit(tmp_path / "kit")

    def refuse(module):
        raise RuntimeError("freezing refused")

    monkeypatch.setattr(gpu, "fold", refuse)
    out = tmp_path / "result.json"
    gpu.main(["run", "--kit", str(tmp_path / "kit"), "--device", "cpu", "--quick", "--repeat", "1",
              "--frames", "4", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["failed"] == {"fp32-fold": "building its networks: RuntimeError: freezing refused"}
    assert set(result["detect"]["1"]) == {"fp32", "fp32-streams"} == set(result["pose"]["2"])
    assert set(result["pipeline"]) == {"fp32-2-1", "fp32-2-1-nodraw", "fp32-streams-2-1", "fp32-streams-2-1-nodraw"}
    assert set(result["pipeline"]["fp32-2-1"]["waited"]) == {"frames", "gpu", "encoders"}
    assert {k: v["frames"] for k, v in result["encode_alone"].items()} == {"1": 4, "3": 4}
    assert "fp32-fold FAILED in building its networks" in capsys.readouterr().out


def test_encode_times_drawing_alone_in_one_to_n_threads(tmp_path, capsys):
    """``bench/gpu.py encode``: the encoders' capacity on any host, no GPU and no network."""
    _small_kit(tmp_path / "kit")
    out = tmp_path / "encode.json"
    gpu.main(["encode", "--kit", str(tmp_path / "kit"), "--frames", "6", "--encoders", "3", "--out", str(out)])
    result = json.loads(out.read_text())
    assert sorted(result) == ["1-1", "1-3", "2-1", "2-3", "3-1", "3-3"]
    assert all(r["frames"] == 6 and r["fps"] > 0 for r in result.values())
    assert " 3 threads:" in capsys.readouterr().out
    assert not list((tmp_path / "kit").glob("*.mp4"))
