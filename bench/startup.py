#!/usr/bin/env python3
"""Benchmark: a restarted worker's start-up, from process start to its pipeline ready, with the model
libraries imported module by module (as workers do: pipeline/families/_lean.py) against imported
whole (as workers did before).

    python bench/startup.py [--models DIR] [--rounds 4] [--out DIR]
    make bench-startup

Each start is a fresh Python process that builds a camera-trap pipeline (MegaDetector v6, the
Serengeti classifier, SuperAnimal quadruped; the backends chosen as on a worker) and reports the
seconds since the process began (interpreter, imports, weights, backend choice) and its peak resident
memory. The "whole" way first imports PytorchWildlife's and DeepLabCut's packages whole, which is what
the families' adapters did before. One untimed start comes first (it exports the networks and ranks
the backends, as a node's first worker does once); then the two ways alternate, ``--rounds`` each, the
order swapped every round, since the machine is shared. It prints each start, the medians and their
ratio. Untrained weights unless ``--models``: their load times and memory are the real ones. JSON goes
to bench/results/startup-<timestamp>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bench.results import RESULTS, save  # noqa: E402

WAYS = ("module by module", "whole")
WHOLE = "import PytorchWildlife.models.detection, deeplabcut.pose_estimation_pytorch.apis.utils"

START = r"""
import os, sys
whole, models, cache, untrained = sys.argv[1] == "whole", sys.argv[2], sys.argv[3], sys.argv[4] == "1"
os.environ.update(YOLO_OFFLINE="1", YOLO_VERBOSE="False", HF_HUB_OFFLINE="1", MPLBACKEND="Agg", TQDM_DISABLE="1")
if whole:
    exec(sys.argv[5])
import json
from pathlib import Path
from wildswarm.config import Settings
from wildswarm.pipeline.run import Pipeline
Pipeline(Settings(data=Path(cache) / "data", models_dir=Path(models), untrained=untrained, device="cpu",
                  detector="MDV6-yolov9-c", classifier="AI4GSnapshotSerengeti", pose="superanimal_quadruped",
                  backend_cache=Path(cache) / "cache"))

def since_start() -> float:
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    return float(Path("/proc/uptime").read_text().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")

status = dict(l.split(":", 1) for l in Path("/proc/self/status").read_text().splitlines() if ":" in l)
print(json.dumps({"seconds": round(since_start(), 2), "peak_mb": int(status["VmHWM"].split()[0]) // 1024,
                  "libraries": sorted({m.split(".")[0] for m in sys.modules} & {"yolov5", "librosa", "polars"})}))
"""


def start(way: str, models: Path, cache: Path, untrained: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", START, "whole" if way == "whole" else "lean", str(models), str(cache),
                        "1" if untrained else "0", WHOLE], capture_output=True, text=True, env=env, timeout=600)
    if r.returncode != 0:
        raise SystemExit(f"a start ({way}) failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, default=None, help="a models folder with real weights (default: "
                                                                 "untrained stand-ins in a temporary folder)")
    ap.add_argument("--rounds", type=int, default=4, help="starts of each way, alternated (default 4)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON (default bench/results)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:   # stand-ins and caches: about 700 MB
        return run(args, Path(tmp))


def run(args, tmp: Path) -> dict:
    models = args.models or tmp / "models"
    untrained = args.models is None
    first = start(WAYS[0], models, tmp, untrained)
    print(f"first start (exports, backend ranking): {first['seconds']:.1f} s, {first['peak_mb']} MB")
    runs: dict[str, list[dict]] = {w: [] for w in WAYS}
    for i in range(args.rounds):
        for way in WAYS if i % 2 == 0 else WAYS[::-1]:
            r = start(way, models, tmp, untrained)
            runs[way].append(r)
            print(f"  round {i + 1} {way:<17} {r['seconds']:6.2f} s {r['peak_mb']:6d} MB  {', '.join(r['libraries'])}",
                  flush=True)
    median = {w: {"seconds": statistics.median(r["seconds"] for r in runs[w]),
                  "peak_mb": statistics.median(r["peak_mb"] for r in runs[w])} for w in WAYS}
    a, b = median[WAYS[0]], median[WAYS[1]]
    print(f"{'start-up to pipeline ready':<28} {'seconds':>8} {'peak MB':>8}")
    for w in WAYS:
        print(f"{w:<28} {median[w]['seconds']:>8.2f} {median[w]['peak_mb']:>8.0f}")
    ratio = b["seconds"] / a["seconds"]
    print(f"whole / module by module: {ratio:.2f}x the time, {b['peak_mb'] - a['peak_mb']:+.0f} MB "
          f"(medians of {args.rounds} alternated starts)")
    doc = {"rounds": args.rounds, "untrained": args.models is None, "first": first, "runs": runs, "median": median,
           "ratio_seconds": round(ratio, 3), "peak_mb_saved": b["peak_mb"] - a["peak_mb"]}
    print(f"results written to {save(doc, 'startup', args.out)}")
    return doc


if __name__ == "__main__":
    main()
