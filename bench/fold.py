#!/usr/bin/env python3
"""Benchmark: the PyTorch path's networks with their batch norms folded into the convolutions, against
the same networks unfolded, in one process.

    python bench/fold.py [--models DIR] [--device cpu|cuda] [--batch 4] [--rounds 7]
    make bench-fold

PyTorch runs the models on GPU nodes, and on CPU nodes where it is asked for or is the fastest; there
``backends.choose`` folds each batch norm fed by a convolution into it (``fold_batch_norms``). This
loads each model that has batch norms (SuperAnimal quadruped's HRNet-w32, the classifier's ResNet)
twice from the same weights, folds one, and times their raw forward passes on the same probe input
in alternated rounds (the machine's noise falls on both alike). It prints, per model, the median
seconds of each, the ratio unfolded / folded, and the largest difference between their outputs.

Without ``--models`` the weights are untrained stand-ins in a temporary folder, whose batch norms
get statistics away from the identity first (a trained network's are): same architectures, same
kernels, so the timings are the real ones. JSON goes to bench/results/fold-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bench.results import RESULTS, save  # noqa: E402
from wildswarm.pipeline import backends, families  # noqa: E402
from wildswarm.pipeline import models as catalogue  # noqa: E402

MODELS = ("superanimal_quadruped", "AI4GSnapshotSerengeti")


def away_from_identity(nets, seed: int = 0) -> int:
    """Batch-norm statistics and affines away from the identity (an untrained network's are the
    identity), the same for the same seed; returns how many batch norms there are."""
    import torch
    g = torch.Generator().manual_seed(seed)
    n = 0
    with torch.no_grad():
        for net in nets:
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
                    m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
                    n += 1
    return n


def load(weights, device: str, batch: int):
    return families.adapter(weights.spec.family).load(weights, device=device, image_size=640, threshold=0.2,
                                                      max_animals=1, batch_size=batch)


def measure(weights, *, device: str, batch: int, rounds: int, untrained: bool) -> dict:
    import torch
    plain, folded = load(weights, device, batch), load(weights, device, batch)
    if untrained:
        away_from_identity(plain.networks())
        away_from_identity(folded.networks())
    frames = backends.probe_frames(batch)
    choice = backends.Choice(weights.spec.name, "torch")
    backends.fold_batch_norms(folded, choice, frames)
    if not choice.folded:
        return {"folded": 0, "refused": choice.refused.get("torch fold", "no batch norm fed by a convolution")}
    x = plain.probe(frames)
    seconds: dict[str, list[float]] = {"unfolded": [], "folded": []}
    with torch.inference_mode():
        for model in (plain, folded):       # warm-up: the first calls allocate and pick kernels
            model.raw(x)
        for _ in range(rounds):
            for name, model in (("unfolded", plain), ("folded", folded)):
                t = time.perf_counter()
                model.raw(x)                # ends in a copy to the host: timed to the end on a GPU too
                seconds[name].append(time.perf_counter() - t)
        diffs = backends.compare(plain.raw(x), folded.raw(x))
    median = {k: statistics.median(v) for k, v in seconds.items()}
    return {"folded": choice.folded, "input": list(x.shape), "median_s": median,
            "ratio": median["unfolded"] / median["folded"], "max_difference": max(diffs.values()),
            "rounds": seconds}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=None, help="a models folder with real weights (default: "
                                                                 "untrained stand-ins in a temporary folder)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=4, help="inputs per forward pass (the worker's default batch)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--only", choices=MODELS, action="append", help="this model only (repeatable)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-fold-") as tmp:   # the stand-in models, if no --models
        return run(args, args.models or Path(tmp) / "models")


def run(args, folder: Path) -> dict:
    import torch
    untrained = args.models is None
    results = {"device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
               "untrained": untrained, "batch": args.batch, "models": {}}
    print(f"device {args.device}, {torch.get_num_threads()} threads, batch {args.batch}, {args.rounds} rounds")
    print(f"{'model':<24} {'folded':>6} {'unfolded s':>11} {'folded s':>9} {'ratio':>6} {'difference':>10}")
    for name in args.only or MODELS:
        spec = catalogue.spec(name)
        if untrained:
            catalogue.build_untrained(folder, spec)
        weights = catalogue.require(folder, spec, allow_untrained=untrained)
        r = measure(weights, device=args.device, batch=args.batch, rounds=args.rounds, untrained=untrained)
        results["models"][name] = r
        if not r["folded"]:
            print(f"{name:<24} {0:>6}  not folded: {r['refused']}")
            continue
        m = r["median_s"]
        print(f"{name:<24} {r['folded']:>6} {m['unfolded']:>11.4f} {m['folded']:>9.4f} {r['ratio']:>5.2f}x "
              f"{r['max_difference']:>10.2g}")
    print(f"\n{save(results, 'fold', args.out)}")
    return results


if __name__ == "__main__":
    main()
