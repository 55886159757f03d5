"""Parent side: the variants' worker processes (on the host, or in the worker image), and the run."""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench.pipeline.cli import (DETECTOR, DLC_DETECTOR, POSE, POSE_MODEL, RESULTS, ROOT, VARIANTS, default_models,
                                default_videos)
from bench.pipeline.common import DONE, READY
from bench.pipeline.report import report


class Worker:
    """A variant's worker process; its peak memory is read with wait4 when it ends."""

    def __init__(self, args, variant: str, workdir: Path, videos: list[Path], clip: Path | None, rnd: int = 0):
        self.variant = variant
        self.result = workdir / f"result-{variant}-{rnd}.json"
        self.in_container = VARIANTS.get(variant, ("", "", {}))[2].get("container", False)
        cmd = [sys.executable, "-m", "bench.pipeline", "--variant", variant, "--workdir", str(workdir),
               "--result", str(self.result), "--models", str(args.models), "--fps", str(args.fps),
               "--classifier", args.classifier, "--round", str(rnd), "--threads", str(args.threads),
               "--threshold", str(args.threshold), "--max-animals", str(args.max_animals),
               "--batch-size", str(args.batch_size), "--image-size", str(args.image_size),
               "--precision", args.precision, "--int8-frames", str(args.int8_frames)]
        for v in videos:
            cmd += ["--video", str(v)]
        if clip is not None:
            cmd += ["--warmup-clip", str(clip)]
        if self.in_container:
            # The same code in the worker image, as the stack runs it: its own interpreter and
            # libraries, the bench mounted beside, the models read-only, no network.
            mounts = {ROOT / "bench": "/opt/bench/bench", args.models: args.models, workdir: workdir}
            mounts.update({v.parent: v.parent for v in videos})
            cmd = (["docker", "run", "--rm", "-i", "--network", "none", "--entrypoint", "python3",
                    "-e", "PYTHONPATH=/opt/bench", "-e", "PYTHONUNBUFFERED=1", "-w", "/opt/bench",
                    "--cpus", str(args.threads), "-u", f"{os.getuid()}:{os.getgid()}"]
                   + [a for src, dst in mounts.items() for a in ("-v", f"{src}:{dst}:{'rw' if src == workdir else 'ro'}")]
                   + [args.image] + cmd[1:])
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.ready_seconds: float | None = None

    def _read_until(self, marker: str) -> str:
        for line in self.proc.stdout:
            if line.startswith(marker):
                return line[len(marker):]
            print(line, end="", flush=True)
        raise SystemExit(f"worker {self.variant} ended early (see its output above)")

    def ready(self) -> None:
        """Wait until the models are loaded: the time from the start of the process (interpreter,
        imports, models, backends; for the container, its start too) is kept."""
        self._read_until(READY)
        self.ready_seconds = time.perf_counter() - self.started

    def run(self, video: Path, rnd: int) -> dict:
        self.proc.stdin.write(json.dumps({"video": str(video), "round": rnd}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self._read_until(DONE))

    def finish(self) -> dict:
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        for line in self.proc.stdout:
            print(line, end="", flush=True)
        _, status, usage = os.wait4(self.proc.pid, 0)   # this child's own rusage: its peak RSS
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        if self.proc.returncode != 0 or not self.result.exists():
            raise SystemExit(f"variant {self.variant} failed (exit {self.proc.returncode})")
        out = json.loads(self.result.read_text())
        out["process_seconds"] = round(time.perf_counter() - self.started, 3)
        if self.ready_seconds is not None:
            out["ready_seconds"] = round(self.ready_seconds, 3)
        out["peak_rss_bytes"] = max(usage.ru_maxrss, out.get("vm_hwm_kib", 0)) * 1024
        return out


def make_warmup_clip(video: Path, dest: Path, seconds: float = 1.0) -> Path:
    """The first ``seconds`` of ``video``, at its own rate, as H.264 (for the untimed warm-up)."""
    from wildswarm.pipeline.video import VideoWriter, probe, read_frames
    info = probe(video)
    with VideoWriter(dest, info.fps, info.width, info.height) as writer:
        for f in read_frames(video, 0):
            if f.index >= round(seconds * info.fps):
                break
            writer.write(f.image)
    return dest


def merge(children: list[dict]) -> dict:
    """One record per variant from its worker processes."""
    out = {"workers": children, "runs": [r for c in children for r in c["runs"]],
           "peak_rss_bytes": max(c["peak_rss_bytes"] for c in children),
           "untrained": any(c.get("untrained") for c in children),
           "torch_threads": sorted({c.get("torch_threads") for c in children})}
    for key in ("load_seconds", "backend_seconds", "ready_seconds"):
        values = [c[key] for c in children if key in c]
        if values:
            out[key] = min(values)
    for key in ("backends", "overlap", "threads"):
        if key in children[0]:
            out[key] = children[0][key]
    resets = [c["threads_reset_by_libraries"] for c in children if c.get("threads_reset_by_libraries")]
    if resets:
        out["threads_reset_by_libraries"] = resets[0]
    return out


def parent(args) -> None:
    args.videos = args.videos or default_videos()
    args.models = (args.models or default_models()).resolve()
    videos = sorted(args.videos.resolve().glob("*.mp4")) if args.videos.is_dir() else []
    if not videos:
        raise SystemExit(f"no .mp4 videos in {args.videos} (give --videos DIR)")
    if args.repeat < 1 or args.repeat_old < 1:
        raise SystemExit("--repeat and --repeat-old must be at least 1")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_path = args.out or RESULTS / f"pipeline-{stamp}.json"
    workdir = Path(tempfile.mkdtemp(prefix="wildswarm-bench-"))
    os.chmod(workdir, 0o777)   # the container variant runs as the worker image's user
    started = time.perf_counter()
    live: list[Worker] = []
    try:
        print(f"models in {args.models}; videos: {', '.join(v.name for v in videos)}", flush=True)
        prep = Worker(args, "prepare", workdir, videos, None).finish()
        if any(m["untrained"] for m in prep["models"].values()):
            print("using UNTRAINED (random) weights for: "
                  + ", ".join(n for n, m in prep["models"].items() if m["untrained"]), flush=True)
        clip = make_warmup_clip(videos[0], workdir / "warmup.mp4") if args.warmup else None
        results: dict[str, list[dict]] = {}
        # Persistent variants, --parallel at a time: each group loaded and warmed up before anything
        # is timed, then asked for one video at a time, in an order that rotates, so the machine's
        # other load hits them alike; the idle ones wait on their stdin and take no CPU.
        persistent = [v for v in args.variants if VARIANTS[v][1] != "naive"]
        for g in range(0, len(persistent), args.parallel):
            group = persistent[g:g + args.parallel]
            print(f"starting {', '.join(group)} (load, warm-up) ...", flush=True)
            workers = {v: Worker(args, v, workdir, videos, clip) for v in group}
            live += workers.values()
            for wk in workers.values():
                wk.ready()
            k = 0
            for r in range(args.repeat):
                for video in videos:
                    order = group[k % len(group):] + group[:k % len(group)]
                    k += 1
                    for v in order:
                        workers[v].run(video, r)
            for v, wk in workers.items():
                results[v] = [wk.finish()]
                live.remove(wk)
        if "naive" in args.variants:
            results["naive"] = []
            for r in range(args.repeat_old):
                print(f"running {VARIANTS['naive'][0]}, round {r + 1} of {args.repeat_old} ...", flush=True)
                wk = Worker(args, "naive", workdir, videos, clip, r)
                live.append(wk)
                wk.proc.stdin.close()
                results["naive"].append(wk.finish())
                live.remove(wk)
        variants = {v: merge(results[v]) for v in args.variants if results.get(v)}
        summary = report(args, videos, variants, prep)
        doc = {"benchmark": "pipeline", "timestamp": stamp, "host": platform.node(), "cpu_count": os.cpu_count(),
               "python": platform.python_version(), "wall_seconds": round(time.perf_counter() - started, 1),
               "config": {"videos": [str(v) for v in videos], "fps": args.fps, "models": str(args.models),
                          "detector": DETECTOR, "image_size": args.image_size, "classifier": args.classifier,
                          "pose": f"{POSE}_{POSE_MODEL}", "dlc_detector": DLC_DETECTOR, "threads": args.threads,
                          "threshold": args.threshold, "max_animals": args.max_animals, "batch_size": args.batch_size,
                          "repeat": args.repeat, "repeat_old": args.repeat_old, "warmup": args.warmup,
                          "precision": args.precision, "image": args.image},
               "models": prep["models"], "int8": prep.get("int8"), **summary, "variants": variants}
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(doc, indent=2))
        print(f"\nresults written to {out_path} (the whole run took {doc['wall_seconds']:.0f} s)")
    finally:
        for wk in live:   # only on errors: stop the workers this run started
            if wk.proc.poll() is None:
                wk.proc.kill()
                wk.proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)

