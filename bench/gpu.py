#!/usr/bin/env python3
"""GPU benchmark: detection alone, pose alone and the whole pipeline on one GPU, batch 1-32,
fp32 and bf16/fp16 autocast, each checked against fp32.

It runs on a GPU machine whose Python has torch, torchvision and opencv but none of PytorchWildlife,
DeepLabCut, ultralytics, PyAV or supervision (the measuring machine of this project: an H200). So
it is prepared here and carried there:

    # here, in the project's venv (needs the ML stack): the real networks as TorchScript, and frames
    python bench/gpu.py prepare                      # -> bench/gpu-kit/ (about 10 MB; git-ignored)
    python bench/gpu.py run --device cpu --quick     # a dry run of the same code on this machine

    # there (the device tool carries bench/gpu-kit with the working tree):
    python3 bench/gpu.py run                         # about 4 minutes on an H200

``prepare`` traces the networks the pipeline runs, through their libraries' own classes: ultralytics'
YOLOv9-c ``DetectionModel`` (MegaDetector v6 compact, fused, 3 classes) and DeepLabCut's SuperAnimal
``PoseModel`` (HRNet-w32, 39 keypoints), at the pipeline's input shapes, with batch size free. Their
weights are zeroed before saving and the files xz-compressed, so the kit stays small; ``run``
refills every parameter with random values (seeded) before timing: speed does not depend on the
values, and the networks' outputs are then as meaningless as the CPU benchmark's untrained ones.
It also stores frames of the seed videos (decoded here with PyAV at 5 frames/s, 640x360).

``run`` measures, with CUDA events after warm-up, the best of ``--repeat`` timings:

* detection alone: the letterboxed batch already on the GPU, the network only;
* pose alone: 256x256 crops already on the GPU, the network only;
* the whole pipeline on the frames, as wildswarm's GPU path does it: frames uploaded once per batch
  as uint8; letterbox, detection, non-maximum suppression (torchvision), crops of every animal box
  of the batch cut on the GPU (``roi_align``) and batched across frames for pose, heatmap decoding
  on the GPU, one copy of boxes and keypoints back per batch; drawing and H.264/MP4V encoding
  (OpenCV) in a thread behind, decoding (here: frames from memory) in a thread ahead.

For each precision it prints frames/s (crops/s for pose) per batch size and the largest difference
from fp32 on the same input (relative to the largest fp32 output), and the pipeline's frames/s
against the detector's own batched throughput at the same batch size (target >= 70 %).
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
BATCHES = (1, 2, 4, 8, 16, 32)
PRECISIONS = ("fp32", "bf16", "fp16")
MAX_ANIMALS = 3


# ------------------------------------------------------------------------------------------------
# prepare (here, with the ML stack)
# ------------------------------------------------------------------------------------------------
def _zeroed_script(module, example, dest: Path) -> dict:
    import torch
    module = module.eval().float()
    with torch.no_grad():
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


def prepare(args) -> None:
    import numpy as np
    import torch
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics.nn.tasks import DetectionModel
    from deeplabcut.pose_estimation_pytorch.models import PoseModel
    from wildswarm.pipeline import models as cat
    from wildswarm.pipeline.families.superanimal import superanimal_config
    from wildswarm.pipeline.video import read_frames

    kit = args.kit
    kit.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    det = DetectionModel(cat.spec("MDV6-yolov9-c").arch, nc=3, verbose=False).fuse(verbose=False).eval()
    for m in det.modules():            # the graph ultralytics exports: one (B, 4 + classes, anchors) tensor
        if hasattr(m, "export"):
            m.export = True
    pose = PoseModel.build(superanimal_config(cat.spec("superanimal_quadruped"), max_individuals=1,
                                              device="cpu")["model"]).eval()

    class Heatmaps(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(x)["bodypart"]["heatmap"]

    info = {"detector": _zeroed_script(det, torch.zeros(1, 3, *DET_SHAPE), kit / "detector.ts.xz"),
            "pose": _zeroed_script(Heatmaps(pose), torch.zeros(1, 3, CROP, CROP), kit / "pose.ts.xz"),
            "keypoints": int(Heatmaps(pose)(torch.zeros(1, 3, CROP, CROP)).shape[1])}
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


class Timer:
    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def __call__(self, fn, repeat: int) -> float:
        import torch
        fn()
        best = float("inf")
        for _ in range(repeat):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                best = min(best, start.elapsed_time(end) / 1000)
            else:
                t = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t)
        return best


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
    """(B, 4 + C, A) -> per frame (n, 6): x1 y1 x2 y2 score class, at most max_det, on the device."""
    import torch
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


def _keypoints(heatmaps, boxes):
    """Argmax of each heatmap, back to image pixels through its box (B, K, 3: x, y, score)."""
    import torch
    b, k, h, w = heatmaps.shape
    flat = heatmaps.float().reshape(b, k, -1)
    score, idx = flat.max(-1)
    ys, xs = (idx // w).float() + 0.5, (idx % w).float() + 0.5
    bw, bh = (boxes[:, 2] - boxes[:, 0])[:, None], (boxes[:, 3] - boxes[:, 1])[:, None]
    return torch.stack([boxes[:, 0, None] + xs / w * bw, boxes[:, 1, None] + ys / h * bh, score], -1)


def pipeline_run(det, pose, frames, device: str, batch: int, precision: str, out_path: Path) -> dict:
    """The whole pipeline over ``frames`` (uint8 numpy, N x H x W x 3): frames/s and stage times."""
    import cv2
    import numpy as np
    import torch
    from torchvision.ops import roi_align

    n = len(frames)
    ahead: queue.Queue = queue.Queue(2)
    behind: queue.Queue = queue.Queue(2)

    def decode():                                   # ahead: batches of frames, pinned for the copy
        for i in range(0, n, batch):
            chunk = torch.from_numpy(frames[i:i + batch])
            ahead.put(chunk.pin_memory() if device.startswith("cuda") else chunk)
        ahead.put(None)

    def draw():                                     # behind: draw and encode
        h, w = frames.shape[1:3]
        writer = cv2.VideoWriter(str(out_path), cv2.VideoWriter_fourcc(*"mp4v"), 5, (w, h))
        while (item := behind.get()) is not None:
            images, dets, kps = item
            for img, d, kp in zip(images, dets, kps):
                img = np.ascontiguousarray(img[..., ::-1])
                for x1, y1, x2, y2, *_ in d:
                    cv2.rectangle(img, (int(x1), int(y1)), (int(x2), int(y2)), (0, 255, 0), 2)
                for animal in kp:
                    for x, y, _ in animal:
                        cv2.circle(img, (int(x), int(y)), 2, (0, 0, 255), -1)
                writer.write(img)
        writer.release()

    threads = [threading.Thread(target=decode, daemon=True), threading.Thread(target=draw, daemon=True)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    with torch.inference_mode(), _autocast(device, precision):
        while (chunk := ahead.get()) is not None:
            x_u8 = chunk.to(device, non_blocking=True)          # one copy up per batch
            x, r, (left, top) = _letterbox(x_u8, DET_SHAPE)
            dets = _nms(det(x), 0.001, MAX_ANIMALS)
            boxes = [(d[:, :4] - torch.tensor([left, top, left, top], device=d.device)) / r for d in dets]
            rois = torch.cat([torch.cat([torch.full((len(b), 1), i, device=b.device, dtype=b.dtype), b], 1)
                              for i, b in enumerate(boxes)]) if boxes else torch.zeros(0, 5, device=x.device)
            if len(rois):
                full = x_u8.permute(0, 3, 1, 2).float() / 255
                crops = roi_align(full, rois.float(), output_size=(CROP, CROP), aligned=True)  # every box of the batch
                kp = _keypoints(pose(crops), rois[:, 1:].float())
            else:
                kp = torch.zeros(0, 1, 3, device=x.device)
            # one copy back per batch
            kp_cpu, det_cpu = kp.float().cpu().numpy(), [torch.cat([b, d[:, 4:]], 1).float().cpu().numpy()
                                                         for b, d in zip(boxes, dets)]
            per_frame, k = [], 0
            for d in det_cpu:
                per_frame.append(kp_cpu[k:k + len(d)])
                k += len(d)
            behind.put((chunk.numpy(), det_cpu, per_frame))
    behind.put(None)
    for t in threads:
        t.join()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"frames": n, "seconds": round(seconds, 3), "fps": round(n / seconds, 1)}


def run(args) -> None:
    import numpy as np
    import torch
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device (give --device cpu for a dry run)")
    kit = args.kit
    info = json.loads((kit / "kit.json").read_text())
    frames = np.load(kit / "frames.npz")["frames"]
    batches = (1, 2) if args.quick else BATCHES
    precisions = ("fp32", "bf16") if args.quick else PRECISIONS
    if args.quick:
        frames = frames[:8]
    det = _load(kit / "detector.ts.xz", device, 0)
    pose = _load(kit / "pose.ts.xz", device, 1)
    timer = Timer(device)
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or "CPU"
    print(f"device {name}; torch {torch.__version__}; {len(frames)} seed frames; networks from the kit: "
          f"{info['detector']['parameters'] / 1e6:.1f}M and {info['pose']['parameters'] / 1e6:.1f}M parameters")
    results: dict = {"device": name, "torch": torch.__version__, "host": platform.node(), "detect": {}, "pose": {},
                     "pipeline": {}}
    src = torch.from_numpy(frames).to(device)
    for what, net, shape in (("detect", det, DET_SHAPE), ("pose", pose, (CROP, CROP))):
        print(f"\n{what} alone ({'frames' if what == 'detect' else 'crops'}/s; difference from fp32 on the same input)")
        print(f"{'batch':>5} " + " ".join(f"{p:>18}" for p in precisions))
        for b in batches:
            if what == "detect":
                x, _, _ = _letterbox(src[:b] if len(src) >= b else src[torch.arange(b) % len(src)], shape)
            else:
                x = torch.rand(b, 3, *shape, device=device, generator=None)
            with torch.inference_mode():
                ref = net(x)
            row = {}
            for p in precisions:
                with torch.inference_mode(), _autocast(device, p):
                    secs = timer(lambda: net(x), args.repeat)
                    out = net(x)
                row[p] = {"per_s": round(b / secs, 1), "diff": _rel_diff(ref, out)}
            results[what][b] = row
            print(f"{b:>5} " + " ".join(f"{row[p]['per_s']:>9.1f} ({row[p]['diff']:.1e})" for p in precisions))
    print("\nwhole pipeline (frames/s; against the detector's own batched frames/s at the same batch and precision)")
    for p in precisions:
        for b in batches:
            if b < 4 and not args.quick:
                continue
            res = pipeline_run(det, pose, frames, device, b, p, kit / f"pipeline-{p}-{b}.mp4")
            share = res["fps"] / results["detect"][b][p]["per_s"]
            res["of_detector"] = round(share, 3)
            results["pipeline"][f"{p}-{b}"] = res
            print(f"  {p:<5} batch {b:>2}: {res['fps']:>7.1f} frames/s, {100 * share:.0f}% of detection alone"
                  f"{'' if share >= 0.7 else '  (target 70%: MISSED)'}")
            (kit / f"pipeline-{p}-{b}.mp4").unlink(missing_ok=True)
    out = args.out or kit / f"gpu-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"\nresults in {out}")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], out.name).write_text(json.dumps(results, indent=2))


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
    ru.add_argument("--repeat", type=int, default=5)
    ru.add_argument("--quick", action="store_true", help="batch 1-2, fp32/bf16, 8 frames: a dry run")
    ru.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    {"prepare": prepare, "run": run}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
