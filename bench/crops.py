#!/usr/bin/env python3
"""Benchmark: the pose step with its crops cut on the model's device (``DeviceCrops``) against
DeepLabCut's own runner, in one process, on the same frames, boxes and network.

    python bench/crops.py [--models DIR] [--device cpu|cuda] [--sizes 640x360,1920x1080] [--animals 3]
                          [--frames 8] [--batch 8] [--rounds 5]
    make bench-crops

The runner cuts, resizes and normalises each crop on the CPU (OpenCV, albumentations), copies each
batch to the device and each crop's keypoints back on their own; ``DeviceCrops`` sends the frames
with boxes up once and does the rest there (families/superanimal.py). Both ways run twice, in
alternated rounds: with the real network (SuperAnimal quadruped's HRNet-w32), and with a stand-in
network that costs next to nothing (every heatmap the crop's red channel, pooled to HRNet's stride),
so that what is left is the work around the network that a GPU node must hide under GPU time. It
prints, per frame size, the median milliseconds per crop of wall time and of the process's CPU time,
and the ratio runner / device crops; the crops were checked against the runner's at load (the
largest difference, in grey levels, is printed). Untrained weights unless ``--models``: the timings
are the real ones. JSON goes to bench/results/crops-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bench.results import RESULTS, save  # noqa: E402
from wildswarm.pipeline import backends  # noqa: E402
from wildswarm.pipeline import models as catalogue  # noqa: E402

MODEL = "superanimal_quadruped"
WAYS = ("runner", "device crops")


def scene(size: tuple[int, int], frames: int, animals: int, seed: int = 0):
    """``frames`` probe frames of ``size`` (width, height) with ``animals`` boxes each, from 5 % to
    45 % of the frame's width, some across its edges; as detections, as the pipeline passes them."""
    import cv2
    from wildswarm.pipeline.detections import sorted_detections
    w, h = size
    images = [cv2.resize(f, (w, h)) for f in backends.probe_frames(frames)]
    rng = np.random.default_rng(seed)
    dets = []
    for _ in images:
        bw = rng.uniform(0.05, 0.45, animals) * w
        bh = bw * rng.uniform(0.5, 1.5, animals)
        x1, y1 = rng.uniform(-0.1, 1.0, animals) * w - bw / 2, rng.uniform(-0.1, 1.0, animals) * h - bh / 2
        dets.append(sorted_detections(np.stack([x1, y1, x1 + bw, y1 + bh], 1), np.linspace(0.9, 0.5, animals),
                                      np.zeros(animals, int)))
    return images, dets


class StandIn:
    """A network that costs next to nothing, on the model's device: every keypoint's heatmap is the
    crop's red channel, average-pooled to the real network's stride."""

    def __init__(self, pose):
        self.net, self.k = pose.model.net.torch, len(pose.bodyparts)
        self.stride = int(self.net.get_stride("bodypart"))

    def __enter__(self):
        import torch.nn.functional as F

        def forward(x, **_):
            heat = F.avg_pool2d(x[:, :1], self.stride)
            return {"bodypart": {"heatmap": heat.expand(-1, self.k, -1, -1)}}
        self.net.forward = forward
        return self

    def __exit__(self, *exc):
        del self.net.forward


def timed(pose, way: str, device_crops, images, dets) -> tuple[float, float, list]:
    pose.model.device_crops = device_crops if way == "device crops" else None
    wall, cpu = time.perf_counter(), time.process_time()
    out = pose.estimate(images, dets)          # ends in copies to the host: timed to the end on a GPU too
    return time.perf_counter() - wall, time.process_time() - cpu, out


def measure(pose, images, dets, rounds: int) -> dict:
    crops = sum(min(len(d), pose.max_animals) for d in dets)
    device_crops = pose.model.device_crops
    result = {"crops": crops}
    try:
        for network in ("real", "stand-in"):
            runs = {w: {"wall": [], "cpu": []} for w in WAYS}
            with StandIn(pose) if network == "stand-in" else nullcontext():
                for way in WAYS:                                                      # warm-up
                    timed(pose, way, device_crops, images, dets)
                for _ in range(rounds):
                    for way in WAYS:
                        wall, cpu, _ = timed(pose, way, device_crops, images, dets)
                        runs[way]["wall"].append(wall)
                        runs[way]["cpu"].append(cpu)
            ms = {w: {k: 1000 * statistics.median(v) / crops for k, v in r.items()} for w, r in runs.items()}
            entry = {"ms_per_crop": ms, "ratio_wall": ms["runner"]["wall"] / ms["device crops"]["wall"],
                     "ratio_cpu": ms["runner"]["cpu"] / ms["device crops"]["cpu"], "rounds": runs}
            result[network] = entry
    finally:
        pose.model.device_crops = device_crops
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=None, help="a models folder with real weights (default: "
                                                                 "untrained stand-ins in a temporary folder)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="640x360,1920x1080", help="frame sizes, WIDTHxHEIGHT, comma-separated")
    ap.add_argument("--frames", type=int, default=8, help="frames a call (the pipeline's batch of frames)")
    ap.add_argument("--animals", type=int, default=3, help="boxes a frame")
    ap.add_argument("--batch", type=int, default=8, help="crops a forward pass (the worker's batch size)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-crops-") as tmp:   # the stand-in models, if no --models
        return run(args, args.models or Path(tmp) / "models")


def run(args, folder: Path) -> dict:
    import torch
    from wildswarm.pipeline.pose import PoseEstimator
    untrained = args.models is None
    spec = catalogue.spec(MODEL)
    if untrained:
        catalogue.build_untrained(folder, spec)
    weights = catalogue.require(folder, spec, allow_untrained=untrained)
    pose = PoseEstimator(weights, device=args.device, max_animals=args.animals, batch_size=args.batch, crops="device")
    if pose.model.device_crops is None:
        raise SystemExit(f"the device crops were refused at load: {pose.model.crops}")
    results = {"device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
               "untrained": untrained, "frames": args.frames, "animals": args.animals, "batch": args.batch,
               "crops_check": pose.model.crops, "sizes": {}}
    print(f"device {args.device}, {torch.get_num_threads()} threads, {args.frames} frames x {args.animals} animals "
          f"a call, {args.batch} crops a forward pass, {args.rounds} rounds; crops check: "
          f"{pose.model.crops['max_difference_levels']} grey levels")
    print(f"{'frame':>10} {'network':>9} {'runner ms/crop':>15} {'device ms/crop':>15} {'ratio':>6} "
          f"{'runner CPU':>11} {'device CPU':>11} {'ratio':>6}")
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.lower().split("x"))
        images, dets = scene((w, h), args.frames, args.animals)
        r = measure(pose, images, dets, args.rounds)
        results["sizes"][f"{w}x{h}"] = r
        for network in ("real", "stand-in"):
            e = r[network]
            ms = e["ms_per_crop"]
            print(f"{f'{w}x{h}':>10} {network:>9} {ms['runner']['wall']:>15.2f} {ms['device crops']['wall']:>15.2f} "
                  f"{e['ratio_wall']:>5.2f}x {ms['runner']['cpu']:>11.2f} {ms['device crops']['cpu']:>11.2f} "
                  f"{e['ratio_cpu']:>5.2f}x")
    print(f"\n{save(results, 'crops', args.out)}")
    return results


if __name__ == "__main__":
    main()
