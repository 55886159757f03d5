"""Worker side: what every variant's process shares (settings, threads, clocks, memory)."""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

from bench.pipeline.cli import DETECTOR, POSE, VARIANTS


def _quiet() -> None:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("TQDM_DISABLE", "1")
    import logging
    import warnings
    warnings.filterwarnings("ignore")
    for name in ("deeplabcut", "ultralytics", "PytorchWildlife", "matplotlib", "numexpr"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _settings(args, **options):
    from wildswarm.config import Settings
    options = {k: v for k, v in options.items() if k in ("backend", "overlap", "pose_crops")}
    if options.get("backend", "auto") != "torch":
        options["precision"] = args.precision
    return Settings(data=args.workdir / "data", models_dir=args.models, untrained=True, device="cpu",
                    detector=DETECTOR, classifier=args.classifier, pose=POSE, fps=args.fps,
                    batch_size=args.batch_size, detector_image_size=args.image_size,
                    detection_threshold=args.threshold, max_animals=args.max_animals, threads=args.threads,
                    backend_cache=args.workdir / "cache", **options)


def _cap_boxes(predictor, max_animals: int) -> None:
    """MegaDetector's own NMS options: animals only, at most ``max_animals`` (see module doc)."""
    predictor.args.classes = [0]
    predictor.args.max_det = max_animals


def _enforce_threads(args, out: dict, where: str, want: int | None = None) -> None:
    """Re-apply the thread count (``want``, default ``--threads``): loading an ultralytics model
    calls its ``select_device``, which sets ``torch.set_num_threads(min(8, cpu_count - 1))`` (1 on
    a 2-core machine). A Pipeline sets its own (one where exported runtimes run every model)."""
    import torch
    want = args.threads if want is None else want
    seen = torch.get_num_threads()
    if seen != want:
        out.setdefault("threads_reset_by_libraries", {})[where] = seen
        torch.set_num_threads(want)


def _cpu() -> float:
    """CPU seconds of this process (all its threads) and of its finished children."""
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + c.ru_utime + c.ru_stime


def _time_forwards(modules: dict[str, list]) -> dict[str, float]:
    """Accumulate the wall time spent inside these modules' forward calls, per stage (hooks)."""
    spent = {stage: 0.0 for stage in modules}
    for stage, mods in modules.items():
        for m in mods:
            def pre(mod, _inputs):
                mod._bench_t0 = time.perf_counter()

            def post(mod, _inputs, _output, stage=stage):
                spent[stage] += time.perf_counter() - mod._bench_t0
            m.register_forward_pre_hook(pre)
            m.register_forward_hook(post)
    return spent


def _vm_hwm_kib() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _log(msg: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {msg}", flush=True)


READY, DONE = "@@bench-ready", "@@bench-done "


def worker(args) -> None:
    """One variant in this process. (a) and (c) load once, warm up, then serve one video per
    command read from stdin (so the parent can interleave them); (b) runs its videos and exits."""
    _quiet()
    import torch
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    out = {"variant": args.variant, "runs": []}
    kind = VARIANTS[args.variant][1] if args.variant in VARIANTS else args.variant
    options = VARIANTS[args.variant][2] if args.variant in VARIANTS else {}
    if kind == "prepare":
        from bench.pipeline.prepare import prepare_models
        out.update(prepare_models(args))
    elif kind == "naive":
        from bench.pipeline.naive import run_old_system
        run_old_system(args, out)
    else:
        if options.get("whole_libraries"):
            # as workers did before families/_lean.py: every package of both libraries, whole
            import deeplabcut.pose_estimation_pytorch.apis.utils  # noqa: F401
            import PytorchWildlife.models.detection  # noqa: F401
        from bench.pipeline.variants import setup_forward, setup_wildswarm
        one = {"pipeline": setup_wildswarm, "forward": setup_forward}[kind](args, out, options)
        print(READY, flush=True)
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd.get("quit"):
                break
            run = one(Path(cmd["video"]), cmd["round"])
            out["runs"].append(run)
            print(DONE + json.dumps(run), flush=True)
    out["torch_threads"] = torch.get_num_threads()
    out["worker_seconds"] = round(time.perf_counter() - started, 3)
    out["vm_hwm_kib"] = _vm_hwm_kib()
    out["children_maxrss_kib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    args.result.write_text(json.dumps(out, indent=2))


