#!/usr/bin/env python3
"""GPU benchmark: detection alone, pose alone and the whole pipeline on one GPU, batch 1-64, fp32 and
bf16/fp16 autocast, channels-last tensors and CUDA graphs, each checked against fp32.

It runs on a GPU machine whose Python has torch, torchvision and opencv but none of PytorchWildlife,
DeepLabCut, ultralytics, PyAV or supervision (the measuring machine of this project: an H200). So
it is prepared here and carried there:

    # here, in the project's venv (needs the ML stack): the real networks as TorchScript, and frames
    python bench/gpu.py prepare                      # -> bench/gpu-kit/ (about 16 MB; git-ignored)
    python bench/gpu.py run --device cpu --quick     # a dry run of the same code on this machine (6 min)
    python bench/gpu.py encode                       # drawing and encoding alone on this host's CPUs

    # there (the device tool carries bench/gpu-kit with the working tree):
    python3 bench/gpu.py run                         # about 4 minutes on an H200

``prepare`` traces the networks the pipeline runs, through their libraries' own classes: ultralytics'
YOLOv9-c ``DetectionModel`` (MegaDetector v6 compact, fused, 3 classes) and DeepLabCut's SuperAnimal
``PoseModel`` (HRNet-w32, 39 keypoints), at the pipeline's input shapes, with batch size free. It
runs each once before tracing, as ultralytics' exporter does, so the detection head's anchors are
constants of the trace (otherwise it rebuilds them on the CPU every call: a host-to-device copy that
stalls the host and rules out CUDA graphs). The weights are zeroed before saving and the files
xz-compressed, so the kit stays small; ``run`` refills every parameter with random values (seeded)
before timing: speed does not depend on the values, and the networks' outputs are then as
meaningless as the CPU benchmark's untrained ones. It also stores frames of the seed videos (decoded
here with PyAV at 5 frames/s, 640x360).

``run`` times with CUDA events, the median of ``--repeat`` timings after three warm-up calls:

* detection alone: the letterboxed batch already on the GPU, the network only;
* pose alone: 256x256 crops already on the GPU, the network only;
* both networks on one batch (the bound the pipeline cannot beat; side by side for -streams);
* the whole pipeline on 1024 frames, as a batched GPU path does it: a thread ahead gathers each batch
  into pinned memory (as decoding would); it goes up once as uint8; letterbox, detection, non-maximum
  suppression in fixed shapes (no wait for the GPU), crops of every animal box of the batch cut on
  the GPU (``roi_align``) and batched across frames for pose, heatmap decoding on the GPU, one
  asynchronous copy of boxes and keypoints back per batch, handed on while the GPU runs the next
  batch; drawing and MP4 encoding (OpenCV) in threads behind, each its own segments of 64 frames.
  Also with nothing drawn or encoded (is the CPU work hidden?) and with three animals a frame. Each
  line ends with the seconds the main thread waited for frames, for the GPU and for the encoders:
  where the time goes when the pipeline falls short of its bound;
* drawing and encoding alone, no network: the same encoder threads fed fixed boxes and keypoints, what
  the host's CPUs can draw and encode, the ceiling of every drawn pipeline line.

Variants (``--variants``): fp32 (cuDNN may use TF32 for convolutions, torch's default), bf16 and fp16
autocast, bf16-cl (bf16 with channels-last tensors), bf16-cl-graph (the same replayed from CUDA
graphs, one per input shape); a -fold suffix runs the networks frozen, batch norm folded into the
convolutions (``fold``; the H200 runs of 2026-12-04 ran them unfolded); a -streams suffix runs each
batch's pose on a second CUDA stream, beside the next batch's detection. The networks alone run one
after the other, so their sum bounds a one-stream pipeline: on the H200 it was 63-68 % of the
detector's own throughput with one animal a frame, under the 70 % target whatever else is hidden.
Two streams let the GPU fill what one network leaves idle (HRNet's many small convolutions, the
detector's tails) with the other; their bound is both networks timed side by side.

It prints frames/s (crops/s for pose) per batch size with the largest difference from fp32 on the
same input (relative to the largest fp32 output), and the pipeline's frames/s against the detector's
own batched throughput (target >= 70 %) and against the bound.
Results of the H200 runs are in docs/measurements/.
"""
from __future__ import annotations

import argparse
import json
import lzma
import os
import platform
import queue
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "bench" / "gpu-kit"
DET_SHAPE = (384, 640)       # the pipeline's letterbox for 16:9 video at 640 px (ultralytics rect)
CROP = 256                   # DeepLabCut's top-down crop for SuperAnimal HRNet-w32
BATCHES = (1, 2, 4, 8, 16, 32, 64)
# name: (precision, channels-last, CUDA graphs, batch norm folded into the convolutions, detection and
# pose on two CUDA streams)
VARIANTS = {"fp32": ("fp32", False, False, False, False), "bf16": ("bf16", False, False, False, False),
            "fp16": ("fp16", False, False, False, False), "bf16-cl": ("bf16", True, False, False, False),
            "bf16-cl-graph": ("bf16", True, True, False, False), "fp32-fold": ("fp32", False, False, True, False),
            "bf16-cl-fold": ("bf16", True, False, True, False),
            "bf16-cl-graph-fold": ("bf16", True, True, True, False),
            "fp32-streams": ("fp32", False, False, False, True),
            "bf16-cl-graph-streams": ("bf16", True, True, False, True),
            "bf16-cl-graph-fold-streams": ("bf16", True, True, True, True)}
# what fits the lease (run 3 took 125 s for three variants, so about 210 s for these five); --variants for more
DEFAULT_VARIANTS = ("fp32", "bf16-cl", "bf16-cl-graph", "bf16-cl-graph-fold", "bf16-cl-graph-fold-streams")
# drawing/encoding threads: half the CPUs, at most 8 (the rest feed the GPU and gather frames)
DEFAULT_ENCODERS = max(1, min(8, (os.cpu_count() or 2) // 2))


# ------------------------------------------------------------------------------------------------
# prepare (here, with the ML stack)
# ------------------------------------------------------------------------------------------------
def _zeroed_script(module, example, dest: Path) -> dict:
    import torch
    module = module.eval().float()
    with torch.no_grad():
        # a dry run first, as ultralytics' own exporter does: the detection head then holds its anchors
        # for this input shape, and the trace keeps them as constants (moved to the GPU with the weights)
        # instead of rebuilding them with torch.arange on the CPU each call, a host-to-device copy that
        # makes the host wait for the network and cannot be captured in a CUDA graph
        module(example)
        traced = torch.jit.trace(module, example, strict=False, check_trace=False)
        for p in list(traced.parameters()) + list(traced.buffers()):
            if p.is_floating_point():
                p.zero_()
    raw = dest.with_suffix("")
    torch.jit.save(traced, str(raw))
    data = raw.read_bytes()
    dest.write_bytes(lzma.compress(data, preset=6))
    raw.unlink()
    return {"file": dest.name, "bytes": len(data), "compressed": dest.stat().st_size,
            "parameters": sum(p.numel() for p in module.parameters())}


def detector():
    """MegaDetector v6 compact's network (ultralytics' YOLOv9-c ``DetectionModel``, 3 classes), fused, in
    the graph ultralytics exports: one (B, 4 + classes, anchors) tensor."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics.nn.tasks import DetectionModel
    from wildswarm.pipeline import models as cat
    det = DetectionModel(cat.spec("MDV6-yolov9-c").arch, nc=3, verbose=False).fuse(verbose=False).eval()
    for m in det.modules():
        if hasattr(m, "export"):
            m.export = True
    return det


def pose_network():
    """SuperAnimal quadruped's network (DeepLabCut's HRNet-w32 ``PoseModel``), giving its heatmaps alone."""
    import torch
    from deeplabcut.pose_estimation_pytorch.models import PoseModel
    from wildswarm.pipeline import models as cat
    from wildswarm.pipeline.families.superanimal import superanimal_config

    class Heatmaps(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x)["bodypart"]["heatmap"]

    return Heatmaps(PoseModel.build(superanimal_config(cat.spec("superanimal_quadruped"), max_individuals=1,
                                                       device="cpu")["model"])).eval()


def prepare(args) -> None:
    import numpy as np
    import torch
    from wildswarm.pipeline.video import read_frames

    kit = args.kit
    kit.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    det, pose = detector(), pose_network()
    with torch.no_grad():
        keypoints = int(pose(torch.zeros(1, 3, CROP, CROP)).shape[1])
    info = {"detector": _zeroed_script(det, torch.zeros(1, 3, *DET_SHAPE), kit / "detector.ts.xz"),
            "pose": _zeroed_script(pose, torch.zeros(1, 3, CROP, CROP), kit / "pose.ts.xz"),
            "keypoints": keypoints}
    frames = []
    videos = sorted(Path(args.videos).glob("*.mp4"))
    for video in videos:
        for f in read_frames(video, 5.0):
            img = f.image
            if img.shape[:2] != (360, 640):
                import cv2
                img = cv2.resize(img, (640, 360), interpolation=cv2.INTER_AREA)
            frames.append(img)
    np.savez_compressed(kit / "frames.npz", frames=np.stack(frames))
    info["frames"] = len(frames)
    info["videos"] = [v.name for v in videos]
    (kit / "kit.json").write_text(json.dumps(info, indent=2))
    total = sum(p.stat().st_size for p in kit.iterdir())
    print(f"kit in {kit}: {total / 1e6:.1f} MB ({json.dumps(info)})")


# ------------------------------------------------------------------------------------------------
# run (there: torch, torchvision, numpy, opencv)
# ------------------------------------------------------------------------------------------------
def _load(path: Path, device: str, seed: int):
    import torch
    raw = path.with_name(path.name.removesuffix(".xz") + ".tmp")
    raw.write_bytes(lzma.decompress(path.read_bytes()))
    try:
        module = torch.jit.load(str(raw), map_location=device).eval()
    finally:
        raw.unlink()
    g = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.is_floating_point():
                fan = max(1, p[0].numel()) if p.dim() > 1 else 1
                p.copy_((torch.randn(p.shape, generator=g) * (1.0 / fan) ** 0.5).to(device))
        for name, b in module.named_buffers():
            if b.is_floating_point():
                b.fill_(1.0 if "var" in name else 0.0)
    return module


def fold(module):
    """The network as a deployment would run it: frozen (``torch.jit.freeze``), which folds each batch
    norm into the convolution before it and other constants into their ops. DeepLabCut's HRNet-w32
    has 305 batch norms, each a kernel of its own over the whole activation; ultralytics' detector
    folded its own already (``fuse``), so freezing changes little there. The outputs are the same
    up to rounding (the variants' difference from fp32 shows it)."""
    import torch
    return torch.jit.freeze(module.eval())


class Timer:
    """Median of ``repeat`` timings (CUDA events on a GPU) after ``warmup`` calls: TorchScript's executor
    profiles a graph's first runs at each new shape and compiles its fusions then, so one warm-up call
    leaves some of that inside the timings (a 100x outlier in the first run on the H200)."""
    def __init__(self, device: str, warmup: int = 3):
        self.cuda = device.startswith("cuda")
        self.warmup = warmup

    def __call__(self, fn, repeat: int) -> float:
        import statistics
        import torch
        for _ in range(self.warmup):
            fn()
        times = []
        for _ in range(repeat):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1000)
            else:
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
        return statistics.median(times)


class Graphed:
    """A network replayed from CUDA graphs, one captured per input shape on its first call (after three
    warm-up runs on a side stream, as torch's documentation asks): the host launches one graph instead
    of the network's hundreds of kernels. The output is a static tensor, overwritten by the next call
    of the same shape, so use it (or copy it) before then, in stream order."""
    def __init__(self, module):
        self.module = module
        self.graphs: dict = {}

    def __call__(self, x):
        import torch
        key = (tuple(x.shape), x.dtype, x.is_contiguous(), torch.is_autocast_enabled("cuda"))
        if key not in self.graphs:
            static_in = x.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    self.module(static_in)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self.module(static_in)
            self.graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self.graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out


def _autocast(device: str, precision: str):
    import contextlib
    import torch
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=dtype)


def _rel_diff(a, b) -> float:
    a, b = a.float(), b.float()
    scale = a.abs().max().item() or 1.0
    return (a - b).abs().max().item() / scale


def _letterbox(frames_u8, shape):
    """uint8 (B, H, W, 3) RGB on the device -> float (B, 3, h, w) in [0, 1], aspect kept, padded 114."""
    import torch
    import torch.nn.functional as F
    x = frames_u8.permute(0, 3, 1, 2).float() / 255
    h, w = x.shape[2:]
    r = min(shape[0] / h, shape[1] / w)
    nh, nw = round(h * r), round(w * r)
    x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False)
    out = torch.full((x.shape[0], 3, *shape), 114 / 255, device=x.device)
    top, left = (shape[0] - nh) // 2, (shape[1] - nw) // 2
    out[:, :, top:top + nh, left:left + nw] = x
    return out, r, (left, top)


def _nms(pred, conf: float, max_det: int):
    """(B, 4 + C, A) -> (B, max_det, 6: x1 y1 x2 y2 score class) and (B, max_det) valid, on the device.

    Greedy per-class non-maximum suppression (IoU 0.7, as ultralytics) stopped at ``max_det`` boxes a
    frame, the only ones the pipeline keeps: ``max_det`` rounds of pick-the-best-and-suppress over the
    whole batch at once, in fixed shapes, so the host never waits for the GPU here."""
    import torch
    p = pred.float().transpose(1, 2)                                  # B, A, 4 + C
    scores, cls = p[..., 4:].max(-1)
    xy, wh = p[..., :2], p[..., 2:4] / 2
    boxes = torch.cat([xy - wh, xy + wh], -1)                         # B, A, 4
    scores = torch.where(scores > conf, scores, torch.full_like(scores, -1.0))
    rows = torch.arange(p.shape[0], device=p.device)
    picked = []
    for _ in range(max_det):
        best = scores.argmax(1)                                       # B
        b_box, b_score, b_cls = boxes[rows, best], scores[rows, best], cls[rows, best]
        picked.append(torch.cat([b_box, b_score[:, None], b_cls[:, None].float()], 1))
        iou = _iou_rows(b_box, boxes)
        scores = torch.where((iou > 0.7) & (cls == b_cls[:, None]), torch.full_like(scores, -1.0), scores)
        scores[rows, best] = -1.0
    out = torch.stack(picked, 1)                                      # B, max_det, 6
    return out, out[..., 4] > conf


def _iou_rows(box, boxes):
    """IoU of each frame's one box (B, 4) with every box of that frame (B, A, 4) -> (B, A)."""
    import torch
    lt = torch.maximum(box[:, None, :2], boxes[..., :2])
    rb = torch.minimum(box[:, None, 2:], boxes[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda b: (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)  # noqa: E731
    return inter / (area(box)[:, None] + area(boxes) - inter + 1e-9)


def _keypoints(heatmaps, boxes):
    """Argmax of each heatmap, back to image pixels through its box (B, K, 3: x, y, score)."""
    import torch
    b, k, h, w = heatmaps.shape
    flat = heatmaps.float().reshape(b, k, -1)
    score, idx = flat.max(-1)
    ys, xs = (idx // w).float() + 0.5, (idx % w).float() + 0.5
    bw, bh = (boxes[:, 2] - boxes[:, 0])[:, None], (boxes[:, 3] - boxes[:, 1])[:, None]
    return torch.stack([boxes[:, 0, None] + xs / w * bw, boxes[:, 1, None] + ys / h * bh, score], -1)


def _detect_batch(det, x_u8, animals: int, channels_last: bool):
    """Detection on the device for one batch of uint8 frames: boxes (B, animals, 6: x1 y1 x2 y2 in frame
    pixels, score, class) and valid (B, animals). Nothing here copies from the host: a small tensor
    made from Python numbers (the letterbox's shift, say) is a copy from pageable memory, which makes
    the host wait until the stream has run everything queued before it."""
    import torch
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x, r, (left, top) = _letterbox(x_u8, DET_SHAPE)
    dets, valid = _nms(det(x.contiguous(memory_format=fmt)), 0.001, animals)
    boxes = dets[..., :4].clone()
    boxes[..., 0::2] -= left
    boxes[..., 1::2] -= top
    boxes /= r                                                         # B, animals, 4: frame pixels
    return torch.cat([boxes, dets[..., 4:]], -1), valid


def _pose_batch(pose, x_u8, boxes, channels_last: bool):
    """Keypoints (B, animals, K, 3) of every box of the batch (B, animals, >= 4), their crops cut on the
    device and sent to the pose model at once."""
    import torch
    from torchvision.ops import roi_align
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    b, animals = boxes.shape[:2]
    rois = torch.cat([torch.arange(b, device=x_u8.device).repeat_interleave(animals)[:, None].float(),
                      boxes[..., :4].reshape(-1, 4)], 1)
    full = x_u8.permute(0, 3, 1, 2).float() / 255
    crops = roi_align(full, rois, output_size=(CROP, CROP), aligned=True)
    kp = _keypoints(pose(crops.contiguous(memory_format=fmt)), rois[:, 1:])
    return kp.reshape(b, animals, *kp.shape[1:])


def _gpu_batch(det, pose, x_u8, animals: int, channels_last: bool):
    """Everything on the device for one batch of uint8 frames, in one stream: boxes (B, animals, 6), valid
    (B, animals), keypoints (B, animals, K, 3)."""
    boxes, valid = _detect_batch(det, x_u8, animals, channels_last)
    return boxes, valid, _pose_batch(pose, x_u8, boxes, channels_last)


def _letterboxed(frames_u8, batch: int):
    """A detector input of ``batch`` frames, cycling through ``frames_u8`` (uint8 on the device)."""
    import torch
    return _letterbox(frames_u8[torch.arange(batch, device=frames_u8.device) % len(frames_u8)], DET_SHAPE)[0]


def bare_forward(det, pose, frames_u8, batch: int, animals: int, variant: str, timer, repeat: int) -> float:
    """Frames/s of the two networks alone on one batch already on the device: detection, then pose on
    ``animals`` crops a frame (the work the pipeline cannot avoid). In a -streams variant the two run
    side by side on two CUDA streams, as its pipeline runs one batch's pose beside the next batch's
    detection: their bound is then the GPU running both at once, not one after the other."""
    import torch
    precision, cl, _, _, two = VARIANTS[variant]
    fmt = torch.channels_last if cl else torch.contiguous_format
    x = _letterboxed(frames_u8, batch).contiguous(memory_format=fmt)
    crops = torch.rand(batch * animals, 3, CROP, CROP, device=x.device).contiguous(memory_format=fmt)
    side = torch.cuda.Stream() if two and x.is_cuda else None

    def both():
        if side is None:
            return det(x), pose(crops)
        main = torch.cuda.current_stream()
        side.wait_stream(main)
        d = det(x)
        with torch.cuda.stream(side):
            p = pose(crops)
        main.wait_stream(side)                 # the timer's end event waits for both
        return d, p

    with torch.inference_mode(), _autocast(str(x.device), precision):
        secs = timer(both, repeat)
    return batch / secs


class Encoders:
    """Drawing and MP4 encoding behind the GPU, as segments of one long video are: ``n`` threads, each
    drawing the boxes and keypoints of its own segments of ``segment`` frames (OpenCV) and writing each
    segment to an MP4 file of its own in ``workdir``. ``waited`` is how long ``put`` waited for room in
    their queues; ``close`` returns the frames written."""

    def __init__(self, n: int, workdir: Path, name: str, size: tuple[int, int], segment: int = 64):
        self.lanes = [queue.Queue(4) for _ in range(max(1, n))]
        self.written = [0] * len(self.lanes)
        self.workdir, self.name, self.size, self.segment = workdir, name, size, segment
        self.waited = 0.0
        self.threads = [threading.Thread(target=self._encode, args=(i,), daemon=True)
                        for i in range(len(self.lanes))]
        for t in self.threads:
            t.start()

    def _encode(self, lane: int):
        import cv2
        import numpy as np
        writer, current = None, None
        while (item := self.lanes[lane].get()) is not None:
            seg, images, boxes, valid, kps = item
            if seg != current:
                if writer is not None:
                    writer.release()
                writer = cv2.VideoWriter(str(self.workdir / f"{self.name}-{seg}.mp4"),
                                         cv2.VideoWriter_fourcc(*"mp4v"), 5, self.size)
                current = seg
            for img, bx, ok, kp in zip(images, boxes, valid, kps):
                img = np.ascontiguousarray(img[..., ::-1])
                for (x1, y1, x2, y2, *_), good, animal in zip(bx, ok, kp):
                    if not good:
                        continue
                    cv2.rectangle(img, (int(x1), int(y1)), (int(x2), int(y2)), (0, 255, 0), 2)
                    pts = np.clip(animal[:, :2], -1e4, 1e4).astype(np.int32)
                    cv2.polylines(img, pts[:, None, :], False, (0, 0, 255), 3)   # one dot a keypoint
                writer.write(img)
                self.written[lane] += 1
        if writer is not None:
            writer.release()

    def put(self, first: int, images, boxes, valid, kps) -> None:
        """Frames ``first``... of the video with their results, each to the thread of its segment."""
        k = 0
        while k < len(images):
            seg = (first + k) // self.segment
            end = min(len(images), (seg + 1) * self.segment - first)
            t = time.perf_counter()
            self.lanes[seg % len(self.lanes)].put((seg, images[k:end], boxes[k:end], valid[k:end], kps[k:end]))
            self.waited += time.perf_counter() - t
            k = end

    def close(self) -> int:
        for lane in self.lanes:
            lane.put(None)
        for t in self.threads:
            t.join()
        return sum(self.written)


def _empty(folder: Path) -> None:
    """Remove the MP4 segments a timed run wrote, before the next one."""
    for f in folder.iterdir():
        f.unlink()


def encode_alone(frames, *, n_frames: int, batch: int, encoders: int, animals: int, keypoints: int,
                 workdir: Path, segment: int = 64) -> dict:
    """Frames/s of drawing and MP4 encoding alone, in ``encoders`` threads, with no network or GPU work:
    ``n_frames`` frames cycled from ``frames``, handed on ``batch`` at a time as the pipeline hands them,
    each with ``animals`` boxes of ``keypoints`` keypoints (fixed, spread over the frame). What the host's
    CPUs can draw and encode is the ceiling of every drawn pipeline line; a line far under it lost its
    time elsewhere (the host's threads contending, not the encoders' capacity)."""
    import numpy as np
    h, w = frames.shape[1:3]
    k = np.arange(keypoints)
    boxes = np.array([[w * (a + 0.2) / (animals + 1), h * 0.2, w * (a + 1.2) / (animals + 1), h * 0.8, 0.9, 0]
                      for a in range(animals)], dtype=np.float32)
    kps = np.stack([np.stack([bx[0] + (bx[2] - bx[0]) * (k % 7) / 7, bx[1] + (bx[3] - bx[1]) * (k // 7) / 7,
                              np.full(keypoints, 0.5)], -1) for bx in boxes]).astype(np.float32)
    sink = Encoders(encoders, workdir, f"alone-{animals}", (w, h), segment)
    start = time.perf_counter()
    for first in range(0, n_frames, batch):
        idx = np.arange(first, min(first + batch, n_frames)) % len(frames)
        n = len(idx)
        sink.put(first, frames[idx], np.broadcast_to(boxes, (n, *boxes.shape)),
                 np.ones((n, animals), dtype=bool), np.broadcast_to(kps, (n, *kps.shape)))
    written = sink.close()
    seconds = time.perf_counter() - start
    if written != n_frames:
        raise RuntimeError(f"{written} frames encoded, {n_frames} expected")
    return {"frames": n_frames, "seconds": round(seconds, 3), "fps": round(n_frames / seconds, 1),
            "animals": animals, "encoders": len(sink.lanes)}


def pipeline_run(det, pose, frames, device: str, batch: int, variant: str, *, animals: int, n_frames: int,
                 encoders: int, draw: bool, workdir: Path, segment: int = 64, collect: list | None = None) -> dict:
    """The whole pipeline over ``n_frames`` frames cycled from ``frames`` (uint8 numpy, N x H x W x 3).

    A thread ahead gathers each batch (as decoding would) into pinned memory; the main thread uploads it
    once as uint8 and queues all of its GPU work, then hands the previous batch's results (copied back
    once, asynchronously) to ``encoders`` threads, each drawing and encoding its own segments of
    ``segment`` frames into MP4 files, as segments of one long video are. The GPU always has the next
    batch queued while the host waits for the last one.

    In a -streams variant each batch's pose (crops, network, keypoints, the copy back) runs on a second
    CUDA stream, after that batch's detection and beside the next batch's, so the GPU can fill what one
    network leaves idle with the other (on a CPU the same steps run in turn).

    The result also says how long the main thread waited, and for what: ``frames`` (the thread ahead),
    ``gpu`` (the previous batch's results) and ``encoders`` (their queues full). ``collect``, if given,
    receives ``(first frame, boxes, valid, keypoints)`` of each batch as numpy arrays."""
    import contextlib
    import numpy as np
    import torch

    precision, cl, _, _, two = VARIANTS[variant]
    cuda = device.startswith("cuda")
    side = torch.cuda.Stream() if cuda and two else None
    src_n = len(frames)
    ahead: queue.Queue = queue.Queue(3)
    h, w = frames.shape[1:3]
    sink = Encoders(encoders, workdir, f"{variant}-{batch}", (w, h), segment) if draw else None
    waits = {"frames": 0.0, "gpu": 0.0}

    def gather():
        for i in range(0, n_frames, batch):
            idx = np.arange(i, min(i + batch, n_frames)) % src_n
            chunk = torch.from_numpy(frames[idx])
            ahead.put((i, chunk.pin_memory() if cuda else chunk))
        ahead.put(None)

    def hand_off(first: int, images, host, event):
        t = time.perf_counter()
        if event is not None:
            event.synchronize()
        waits["gpu"] += time.perf_counter() - t
        boxes, valid, kps = (t.numpy() for t in host)
        if collect is not None:
            collect.append((first, boxes.copy(), valid.copy(), kps.copy()))
        if sink is not None:
            sink.put(first, images, boxes, valid, kps)

    def results_back(boxes, valid, kp):
        """The batch's results to the host: one asynchronous copy each and an event (on a GPU)."""
        if not cuda:
            return (boxes.float(), valid, kp.float()), None
        host = tuple(torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True)
                     for t in (boxes.float(), valid, kp.float()))
        event = torch.cuda.Event()
        event.record()
        return host, event

    ahead_thread = threading.Thread(target=gather, daemon=True)
    ahead_thread.start()
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    pending = None
    with torch.inference_mode(), _autocast(device, precision):
        while True:
            t = time.perf_counter()
            item = ahead.get()
            waits["frames"] += time.perf_counter() - t
            if item is None:
                break
            first, chunk = item
            x_u8 = chunk.to(device, non_blocking=True)             # one copy up per batch
            if not two:
                host, event = results_back(*_gpu_batch(det, pose, x_u8, animals, cl))
            else:
                boxes, valid = _detect_batch(det, x_u8, animals, cl)
                if side is not None:
                    side.wait_stream(torch.cuda.current_stream())  # this batch's detection, not the next one's
                with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
                    if side is not None:
                        for tensor in (x_u8, boxes, valid):        # read there: the allocator must not hand
                            tensor.record_stream(side)             # their memory to the next batch before
                    host, event = results_back(boxes, valid, _pose_batch(pose, x_u8, boxes, cl))
            if pending is not None:                                # one copy back per batch, not waited for
                hand_off(*pending)
            pending = (first, chunk.numpy(), host, event)
        if pending is not None:
            hand_off(*pending)
    ahead_thread.join()
    written = sink.close() if sink is not None else n_frames
    seconds = time.perf_counter() - start
    if written != n_frames:
        raise RuntimeError(f"{written} frames encoded, {n_frames} expected")
    waits["encoders"] = sink.waited if sink is not None else 0.0
    return {"frames": n_frames, "seconds": round(seconds, 3), "fps": round(n_frames / seconds, 1),
            "animals": animals, "encoders": len(sink.lanes) if sink is not None else 0,
            "waited": {k: round(v, 3) for k, v in waits.items()}}


def run(args) -> None:
    import tempfile
    import numpy as np
    import torch
    began = time.perf_counter()
    device = args.device
    cuda = device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("no CUDA device (give --device cpu for a dry run)")
    kit = args.kit
    info = json.loads((kit / "kit.json").read_text())
    frames = np.load(kit / "frames.npz")["frames"]
    batches = (1, 2) if args.quick else BATCHES
    variants = tuple(args.variants.split(",")) if args.variants else DEFAULT_VARIANTS
    if unknown := [v for v in variants if v not in VARIANTS]:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}: choose from {', '.join(VARIANTS)}")
    if args.quick:      # torch's CPU autocast runs these TorchScript graphs about 70x slower in bf16: fp32 there
        variants = (("fp32", "bf16-cl-graph", "bf16-cl-graph-fold", "bf16-cl-graph-fold-streams") if cuda
                    else ("fp32", "fp32-fold", "fp32-streams"))
    if not cuda and any(VARIANTS[v][2] for v in variants):
        raise SystemExit("CUDA graphs need a GPU")
    pipe_batches = (2,) if args.quick else (8, 32, 64)
    n_frames = args.frames or (16 if args.quick else 1024)
    encoders = args.encoders or DEFAULT_ENCODERS
    # cuDNN's own heuristics by default: autotuning every convolution at every batch size and variant
    # would cost minutes of the machine's short lease; --cudnn-benchmark measures with it
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    bases: dict = {}

    def base(cl: bool, folded: bool):
        """The (detector, pose) networks of a variant, loaded (or folded) once for all variants sharing them."""
        if (cl, folded) not in bases:
            if folded:
                bases[cl, folded] = tuple(fold(m) for m in base(cl, False))
            else:
                nets = tuple(_load(kit / f, device, seed) for f, seed in (("detector.ts.xz", 0), ("pose.ts.xz", 1)))
                bases[cl, folded] = tuple(m.to(memory_format=torch.channels_last) for m in nets) if cl else nets
        return bases[cl, folded]

    plain = base(False, False)

    nets, unbuilt = {}, {}
    for v in variants:
        _, cl, graph, folded, _ = VARIANTS[v]
        try:
            nets[v] = tuple(Graphed(m) if graph else m for m in base(cl, folded))
        except Exception as error:  # noqa: BLE001 -- one variant that cannot be built must not cost the lease
            unbuilt[v] = error
    timer = Timer(device)
    name = torch.cuda.get_device_name(0) if cuda else platform.processor() or "CPU"
    print(f"device {name}; torch {torch.__version__}; {os.cpu_count()} CPUs; {len(frames)} seed frames "
          f"{frames.shape[2]}x{frames.shape[1]}; networks from the kit: "
          f"{info['detector']['parameters'] / 1e6:.1f}M (detector, {DET_SHAPE[1]}x{DET_SHAPE[0]}) and "
          f"{info['pose']['parameters'] / 1e6:.1f}M parameters (pose, {CROP}x{CROP} crops), random weights; "
          f"loaded in {time.perf_counter() - began:.0f} s")
    print(f"variants: fp32 (cuDNN may use TF32, torch's default), bf16/fp16 autocast, -cl: channels-last "
          f"tensors, -graph: CUDA graphs, -fold: batch norm folded (frozen), -streams: a batch's pose beside the "
          f"next batch's detection on two CUDA streams; median of {args.repeat} "
          f"timings after {timer.warmup} warm-up calls")
    results: dict = {"device": name, "torch": torch.__version__, "cpus": os.cpu_count(), "host": platform.node(),
                     "frames_source": len(frames), "repeat": args.repeat, "detect": {}, "pose": {}, "pipeline": {},
                     "failed": {}}

    def failed(v, where, error):
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [""]
        cause = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
        results["failed"][v] = f"{where}: {type(error).__name__}: {cause[:400]}"
        print(f"  {v} FAILED in {where}: {results['failed'][v]}")

    for v, error in unbuilt.items():
        failed(v, "building its networks", error)

    src = torch.from_numpy(frames).to(device)
    for what, shape in (("detect", DET_SHAPE), ("pose", (CROP, CROP))):
        t0 = time.perf_counter()
        print(f"\n{what} alone ({'frames' if what == 'detect' else 'crops'}/s; largest difference from fp32 on "
              f"the same input, relative to fp32's largest output)")
        print(f"{'batch':>5} " + " ".join(f"{v:>18}" for v in variants))
        for b in batches:
            if what == "detect":
                x = _letterboxed(src, b)
            else:
                x = torch.rand(b, 3, *shape, device=device)
            k = 0 if what == "detect" else 1
            with torch.inference_mode():
                ref = plain[k](x).clone()
            row = {}
            for v in variants:
                if v in results["failed"]:
                    continue
                precision, cl = VARIANTS[v][:2]
                net = nets[v][k]
                xv = x.contiguous(memory_format=torch.channels_last) if cl else x
                try:
                    with torch.inference_mode(), _autocast(device, precision):
                        secs = timer(lambda: net(xv), args.repeat)
                        out = net(xv)
                    row[v] = {"per_s": round(b / secs, 1), "diff": _rel_diff(ref, out)}
                except Exception as error:  # noqa: BLE001 -- a variant that cannot run is a result too
                    failed(v, f"{what} batch {b}", error)
            results[what][b] = row
            print(f"{b:>5} " + " ".join(f"{row[v]['per_s']:>9.1f} ({row[v]['diff']:.1e})" if v in row
                                        else f"{'failed':>18}" for v in variants))
        print(f"  ({time.perf_counter() - t0:.0f} s)")
    t0 = time.perf_counter()
    print(f"\nwhole pipeline on {n_frames} frames ({len(frames)} seed frames cycled), {args.animals} "
          f"animal{'s' if args.animals > 1 else ''} a frame posed, drawing and MP4 encoding in {encoders} "
          f"threads;\n  against the detector's own batched frames/s (target >= 70 %), and the bare forward "
          f"passes of both networks on the same batch (the bound; side by side for -streams), and the pipeline's "
          f"wall time over theirs;\n  then the seconds the main thread waited for frames, for the GPU, and for the "
          f"encoders")
    with tempfile.TemporaryDirectory(prefix="wildswarm-gpu-") as tmp:
        workdir = Path(tmp)
        keypoints = info["keypoints"]
        top = pipe_batches[-1] if args.quick else 32
        results["encode_alone"] = {}
        for animals in sorted({args.animals, 3}):
            res = encode_alone(frames, n_frames=n_frames, batch=top, encoders=encoders, animals=animals,
                               keypoints=keypoints, workdir=workdir)
            results["encode_alone"][animals] = res
            _empty(workdir)
            print(f"  drawing and encoding alone, no network: {animals} animal{'s' if animals > 1 else ''}, "
                  f"{keypoints} keypoints each, {res['fps']:.1f} frames/s (the drawn lines' ceiling on this host)")
        runs = [(v, b, args.animals, True) for v in variants for b in pipe_batches]
        runs += [(v, top, args.animals, False) for v in variants]          # CPU work left out: is it hidden?
        if not args.quick:
            runs += [(v, top, 3, True) for v in variants]                  # a crowded clip
        for v, b, animals, draw in runs:
            if v in results["failed"] or v not in results["detect"].get(b, {}):
                continue
            det, pose = nets[v]
            kwargs = dict(animals=animals, encoders=encoders, draw=draw, workdir=workdir)
            try:
                pipeline_run(det, pose, frames, device, b, v, n_frames=min(n_frames, 4 * b), **kwargs)  # warm-up
                res = pipeline_run(det, pose, frames, device, b, v, n_frames=n_frames, **kwargs)
                bare = bare_forward(det, pose, src, b, animals, v, timer, args.repeat)
            except Exception as error:  # noqa: BLE001
                failed(v, f"pipeline batch {b}", error)
                continue
            res["of_detector"] = round(res["fps"] / results["detect"][b][v]["per_s"], 3)
            res["bare_fps"] = round(bare, 1)
            res["wall_over_bare"] = round(bare / res["fps"], 3)
            results["pipeline"][f"{v}-{b}-{animals}{'' if draw else '-nodraw'}"] = res
            _empty(workdir)
            what = f"{animals} animal{'s' if animals > 1 else ''}" + ("" if draw else ", nothing drawn or encoded")
            print(f"  {v:<13} batch {b:>2}, {what:<34} {res['fps']:>7.1f} frames/s "
                  f"{100 * res['of_detector']:>4.0f} % of detection alone"
                  f"{' (missed)' if res['of_detector'] < 0.7 else '         '}  bound {res['bare_fps']:>7.1f}, "
                  f"wall / bare forward {res['wall_over_bare']:.2f}; waited "
                  + "/".join(f"{res['waited'][k]:.2f}" for k in ("frames", "gpu", "encoders")) + " s")
    print(f"  ({time.perf_counter() - t0:.0f} s; {time.perf_counter() - began:.0f} s in all)")
    out = args.out or kit / f"gpu-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nresults in {out}")


def encode(args) -> None:
    """Drawing and encoding alone on this host's CPUs, in 1 to ``--encoders`` threads (no network)."""
    import tempfile
    import numpy as np
    kit = args.kit
    info = json.loads((kit / "kit.json").read_text())
    frames = np.load(kit / "frames.npz")["frames"]
    print(f"drawing and MP4 encoding alone, no network: {args.frames} frames ({len(frames)} seed frames "
          f"{frames.shape[2]}x{frames.shape[1]} cycled), {info['keypoints']} keypoints an animal; "
          f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()})")
    counts = sorted({1, *(n for n in (2, 4, 8, 16) if n < args.encoders), args.encoders})
    results = {}
    with tempfile.TemporaryDirectory(prefix="wildswarm-encode-") as tmp:
        for n in counts:
            for animals in (1, 3):
                res = encode_alone(frames, n_frames=args.frames, batch=32, encoders=n, animals=animals,
                                   keypoints=info["keypoints"], workdir=Path(tmp))
                results[f"{n}-{animals}"] = res
                _empty(Path(tmp))
            print(f"  {n:>2} thread{'s' if n > 1 else ' '}: {results[f'{n}-1']['fps']:>7.1f} frames/s with one "
                  f"animal a frame, {results[f'{n}-3']['fps']:>7.1f} with three")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("prepare", help="trace the networks and store seed frames into the kit (here)")
    pr.add_argument("--videos", type=Path, default=Path(os.environ.get("WILDSWARM_SEED_VIDEOS")
                                                        or ROOT.parent / "shared" / "data" / "seed-examples"))
    pr.add_argument("--kit", type=Path, default=KIT)
    ru = sub.add_parser("run", help="measure (on the GPU machine)")
    ru.add_argument("--kit", type=Path, default=KIT)
    ru.add_argument("--device", default="cuda")
    ru.add_argument("--repeat", type=int, default=10)
    ru.add_argument("--variants", default="", help=f"comma-separated, of {', '.join(VARIANTS)} "
                    f"(default {','.join(DEFAULT_VARIANTS)})")
    ru.add_argument("--quick", action="store_true",
                    help="batch 1-2, fp32, -fold and -streams (bf16 with CUDA graphs on a GPU), 16 frames: a dry run")
    ru.add_argument("--frames", type=int, default=0, help="frames through the whole pipeline (default 1024)")
    ru.add_argument("--animals", type=int, default=1, help="animals posed a frame (default 1, as the seed clips)")
    ru.add_argument("--encoders", type=int, default=0, help="drawing/encoding threads (default: half the CPUs, "
                    "at most 8)")
    ru.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN time its kernels for each shape")
    ru.add_argument("--out", type=Path, default=None)
    en = sub.add_parser("encode", help="time drawing and encoding alone on this host's CPUs (no GPU needed)")
    en.add_argument("--kit", type=Path, default=KIT)
    en.add_argument("--frames", type=int, default=1024)
    en.add_argument("--encoders", type=int, default=DEFAULT_ENCODERS,
                    help="the most threads (default: half the CPUs, at most 8, as run)")
    en.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    {"prepare": prepare, "run": run, "encode": encode}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
