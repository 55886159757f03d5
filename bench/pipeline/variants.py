"""The timed variants: wildswarm's pipeline on one backend, and the bare forward passes of a backend."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from bench.pipeline.common import _cap_boxes, _cpu, _enforce_threads, _log, _settings, _time_forwards


def _time_runtimes(pipeline, spent: dict[str, float]) -> None:
    """Accumulate the wall time inside each exported runtime's calls, per stage."""
    stage = {"detector": "detect", "classifier": "classify", "pose": "pose"}
    for kind, runtime in pipeline.runtimes.items():
        if runtime is None:
            continue
        run, name = runtime._run, stage[kind]

        def timed(x, run=run, name=name):
            t = time.perf_counter()
            try:
                return run(x)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
        runtime._run = timed


def _load(args, out: dict, options: dict):
    from wildswarm.pipeline.run import Pipeline
    t = time.perf_counter()
    pipeline = Pipeline(_settings(args, **options))
    out["load_seconds"] = round(pipeline.load_seconds, 3)
    out["backend_seconds"] = round(pipeline.backend_seconds, 3)
    out["pipeline_seconds"] = round(time.perf_counter() - t, 3)
    _enforce_threads(args, out, "after Pipeline()", pipeline.torch_threads)
    out["untrained"] = pipeline.untrained
    out["backends"] = {k: c.describe() for k, c in pipeline.backends.items()}
    out["overlap"] = pipeline.overlap
    out["threads"] = pipeline.threads
    out["torch_threads_for_processing"] = pipeline.torch_threads
    _cap_boxes(pipeline.detector.model.predictor, args.max_animals)
    return pipeline


def setup_wildswarm(args, out: dict, options: dict):
    """``Pipeline.analyze`` per video, timing the whole call and, inside it, every forward pass."""
    pipeline = _load(args, out, options)
    # time inside the models' forward calls during analyze (the same runs, so untouched by other
    # load between runs); hooks and wrappers cost microseconds a call
    modules = {}
    if pipeline.runtimes.get("detector") is None:
        modules["detect"] = [pipeline.detector.model.predictor.model]
    if pipeline.runtimes.get("pose") is None:
        modules["pose"] = [pipeline.pose.model.net.torch]
    if pipeline.classifier and pipeline.runtimes.get("classifier") is None:
        net = pipeline.classifier.model.model.net   # called through .forward(), which hooks on it would miss
        modules["classify"] = [net.feature, net.classifier]
    inside = _time_forwards(modules)
    _time_runtimes(pipeline, inside)
    if args.warmup_clip:
        pipeline.analyze(args.warmup_clip, args.workdir / f"{args.variant}-warmup")

    def one(video: Path, rnd: int) -> dict:
        out_root = args.workdir / f"{args.variant}-{rnd}"
        before = dict(inside)
        t, cpu = time.perf_counter(), _cpu()
        res = pipeline.analyze(video, out_root)
        seconds, cpu = time.perf_counter() - t, _cpu() - cpu
        shutil.rmtree(out_root, ignore_errors=True)
        _log(f"{args.variant} {video.name}: {res.frames_analysed} frames in {seconds:.1f} s")
        forward = {k: round(inside.get(k, 0.0) - before.get(k, 0.0), 4) for k in inside}
        return {"video": video.name, "round": rnd, "seconds": seconds, "cpu_seconds": cpu,
                "frames": res.frames_analysed, "boxes": res.summary["animals"]["poses"],
                "timings": {k: round(v, 4) for k, v in res.timings.items()},
                "forward_inside": forward, "forward_inside_seconds": sum(forward.values())}
    return one


def setup_forward(args, out: dict, options: dict):
    """The models' bare forward passes on one backend, on the frames and boxes the pipeline gives:
    inputs are prepared untimed with the libraries' own preprocessing (the detector's letterbox,
    the classifier's crops, DeepLabCut's top-down crops), in the pipeline's batch sizes."""
    import numpy as np
    import torch
    from wildswarm.pipeline.pose import _clip
    from wildswarm.pipeline.detections import animals
    from wildswarm.pipeline.video import read_frames

    pipeline = _load(args, out, options)
    det, cls, pose = pipeline.detector.model, pipeline.classifier, pipeline.pose.model
    rts = pipeline.runtimes
    runner = pose.runner

    def one_video(video: Path) -> dict:
        frames = [f.image for f in read_frames(video, args.fps)]   # decode: untimed
        timed = {"detect": 0.0, "classify": 0.0, "pose": 0.0}
        cpu = 0.0
        boxes_total = 0

        def clock(stage, fn):
            nonlocal cpu
            with torch.inference_mode():
                t, c = time.perf_counter(), _cpu()
                fn()
                timed[stage] += time.perf_counter() - t
                cpu += _cpu() - c

        for start in range(0, len(frames), args.batch_size):
            batch = frames[start:start + args.batch_size]
            x = det.probe(batch)                                       # the letterboxed batch
            clock("detect", lambda: det.raw(x, rts.get("detector")))
            with torch.inference_mode():
                dets = pipeline.detector.detect(batch)                 # the same boxes as the pipeline: untimed
            if cls is not None:
                crops, _ = cls.model._crops(batch, dets, args.max_animals, annotate=False)
                if crops:
                    xc = torch.stack(crops).numpy()
                    clock("classify", lambda: cls.model._logits(xc, rts.get("classifier")))
            crops = []
            for f, d in zip(batch, dets):
                b = _clip(animals(d).xyxy[: args.max_animals], f.shape[1], f.shape[0])
                if not len(b):
                    continue
                ctx = {"bboxes": np.column_stack([b[:, :2], b[:, 2:] - b[:, :2]]).astype(np.float32),
                       "bbox_scores": np.ones(len(b), np.float32)}
                inputs, _ = runner.preprocessor(f, ctx)
                crops.extend(list(inputs))
            boxes_total += len(crops)
            for i in range(0, len(crops), runner.batch_size):
                xp = torch.stack(crops[i:i + runner.batch_size]).numpy()
                clock("pose", lambda: pose.raw(xp, rts.get("pose")))
        return {"frames": len(frames), "boxes": boxes_total, "seconds": sum(timed.values()), "cpu_seconds": cpu,
                "timings": {k: round(v, 4) for k, v in timed.items()}}

    if args.warmup_clip:
        one_video(args.warmup_clip)

    def one(video: Path, rnd: int) -> dict:
        res = one_video(video)
        _log(f"{args.variant} {video.name}: {res['frames']} frames in {res['seconds']:.1f} s of forward passes")
        return {"video": video.name, "round": rnd, **res}
    return one
