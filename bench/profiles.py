#!/usr/bin/env python3
"""Benchmark: what each analysis profile's pipeline holds and takes to load, and what the worker's
pipeline cache saves when jobs alternate between two profiles.

    python bench/profiles.py [--jobs 8] [--profiles a,b] [--models DIR] [--device cpu] [--out DIR]
    make bench-profiles

Real pipelines (the real loading code, the libraries' own classes) are built for each shipped
profile; without ``--models`` they load untrained stand-ins written to a temporary folder (the
same architectures and file formats, so memory and load time are the real ones). For each profile
it prints the memory of its networks (what the cache counts) and its load time (``--profiles``: only
those). Then ``--jobs`` jobs alternating camera-trap / lab-topview-mouse get their pipeline twice
over, in one process:
the baseline loads a pipeline per job (a worker without a cache), the cache loads each profile
once (``PipelineCache.get``, as the worker asks it). It prints both times and their ratio. JSON
goes to bench/results/profiles-<timestamp>.json (``--out``: another folder).
"""
from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bench.results import save  # noqa: E402
from wildswarm.config import Settings  # noqa: E402
from wildswarm.pipeline.cache import PipelineCache, memory_bytes  # noqa: E402
from wildswarm.pipeline.run import Pipeline  # noqa: E402
from wildswarm.profiles import load  # noqa: E402

MB = 1024 ** 2


ALTERNATING = ("camera-trap", "lab-topview-mouse")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=8, help="jobs alternating two profiles")
    ap.add_argument("--profiles", default="", help="comma-separated profiles to load each (default: every one)")
    ap.add_argument("--out", type=Path, default=None, help="folder for the JSON (default bench/results/)")
    ap.add_argument("--models", type=Path, default=None, help="a models folder with real weights (default: "
                                                                 "untrained stand-ins in a temporary folder)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-profiles-") as tmp:   # stand-ins: about 900 MB
        return run(args, Path(tmp))


def run(args, tmp: Path) -> dict:
    settings = Settings(data=tmp / "data", models_dir=args.models or tmp / "models", untrained=args.models is None,
                        device=args.device)
    profiles = load(settings)
    wanted = [n for n in args.profiles.split(",") if n] or profiles.names()
    if unknown := [n for n in wanted if n not in profiles.names()]:
        raise SystemExit(f"no such profile: {', '.join(unknown)} (there are: {', '.join(profiles.names())})")

    Pipeline(profiles.get("camera-trap").apply(settings))   # the libraries' first import, not a profile's cost
    each = {}
    print(f"{'profile':<24} {'models':>10} {'load':>8}")
    for p in (profiles.get(n) for n in wanted):
        gc.collect()
        started = time.perf_counter()
        pipeline = Pipeline(p.apply(settings))
        seconds = time.perf_counter() - started
        each[p.name] = {"memory_mb": round(memory_bytes(pipeline) / MB, 1), "load_s": round(seconds, 2)}
        print(f"{p.name:<24} {each[p.name]['memory_mb']:>7.1f} MB {seconds:>6.2f} s")
        del pipeline

    order = [ALTERNATING[i % 2] for i in range(args.jobs)]
    gc.collect()
    started = time.perf_counter()
    for name in order:                      # the baseline: a worker that loads a pipeline for every job
        pipeline = Pipeline(profiles.get(name).apply(settings))
        del pipeline
    baseline = time.perf_counter() - started
    gc.collect()
    cache = PipelineCache(settings)
    started = time.perf_counter()
    for name in order:
        cache.get(name)
    cached = time.perf_counter() - started
    print(f"\n{len(order)} jobs alternating camera-trap / lab-topview-mouse, getting their pipeline:")
    print(f"  baseline, a load per job: {baseline:7.2f} s")
    print(f"  the worker's cache:       {cached:7.2f} s  ({cache.loads}; {cache.used / MB:.0f} MB held)")
    print(f"  ratio baseline / cache:   {baseline / cached:7.1f} x")
    doc = {"profiles": each, "jobs": len(order), "order": order, "baseline_s": round(baseline, 3),
           "cached_s": round(cached, 3), "loads": cache.loads, "held_mb": round(cache.used / MB, 1)}
    print(f"\n{save(doc, 'profiles', args.out)}")
    return doc


if __name__ == "__main__":
    main()
