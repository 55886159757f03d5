#!/usr/bin/env python3
"""Benchmark: wildswarm's pipeline against the old naive sequence and the bare forward passes.

    python bench/pipeline.py [--videos DIR] [--fps 5] [--models DIR] [--classifier NAME] [--repeat N]
    make bench-pipeline

On the seed videos, in one run, it measures three variants, each in its own worker process (so
each peak-memory figure is that of one worker), all with the same torch thread count:

(a) wildswarm   ``Pipeline(settings).analyze(video)``: models loaded once per process, each video
                decoded once at ``--fps``, frames batched through MegaDetector, the classifier and
                SuperAnimal pose (top-down on MegaDetector's boxes), rendered once. The time per
                video is the wall time of ``analyze`` (decode, inference, render, all result files).
(b) old system  what the original deployment did, per video, with the same model files and the
                same requested sampling rate: PytorchWildlife's video helper
                (``PytorchWildlife.utils.misc.process_video``) with a callback running MegaDetector
                (``single_image_detection``) and the classifier on each box
                (``single_image_classification``) and drawing them, writing an annotated video;
                then DeepLabCut's ``video_inference_superanimal`` on that annotated video, with its
                own FasterRCNN detector (fasterrcnn_resnet50_fpn_v2) and its default batch sizes.
                Models are loaded per video (inside the timing); library imports are not.
(c) forward     the models' bare forward passes on the same frames as (a), nothing else: the
                detector on the letterboxed batches, the classifier on the box crops, the pose
                model on the 256x256 crops, in (a)'s batch sizes. Inputs are prepared untimed with
                the libraries' own preprocessing, from the same models loaded the same way.

It prints seconds per video and frames per second for each, the ratios (b)/(a) and (a)/(c), and
each worker's peak memory (ru_maxrss of the child process, from wait4), and writes all of it as
JSON to bench/results/pipeline-<timestamp>.json. Targets: (b)/(a) >= 1.8, (a)/(c) <= 1.15,
peak memory of (a) < 3 GB. About 7 minutes on 2 quiet cores with the defaults; (b) is most of it.

Measuring on a shared machine
-----------------------------
Other work on the machine only ever adds time, in bursts. So:
* (a) and (c) each get one worker process for the whole run. Both load their models and warm up
  before anything is timed; then the parent asks them for one video at a time, alternating which
  goes first, ``--repeat`` rounds (default 3). The waiting worker blocks on its stdin and takes no
  CPU. (a)/(c) is the median of these back-to-back pairs (same video, seconds apart); the ratio of
  the best rounds is printed beside it.
* Seconds per video are the best round of each variant, and the verdict on (a)/(c) uses them; the
  JSON keeps every round and the median. When the back-to-back pairs disagree by more than 1.5x,
  the output says NOISY.
* (a) also times, with forward hooks, the wall time spent inside its models' forward calls during
  ``analyze``. (a) over that time, in the same runs, is what (a) adds around the forward passes,
  and it is untouched by load that comes and goes between runs.
* Beside wall seconds, each run records CPU seconds (all threads of the worker, and any processes
  it started); their ratios are printed too, as a cross-check less sensitive to other load.
* (b) takes 3-4 minutes a round on 2 cores and clears its target by a wide margin, so it runs
  ``--repeat-old`` rounds (default 1), after (a) and (c), each round a fresh worker.

Choices, and why
----------------
* Weights. Real weights cannot be downloaded everywhere (not on the machines this project is
  built on). Where ``--models`` holds the real files (the names the libraries use), they are used.
  Otherwise untrained (random) stand-ins are built there once, through the libraries' own classes
  and in the real file formats (wildswarm's ``models.build_untrained``; DeepLabCut's detector via
  its own ``DETECTORS.build`` from ``PoseConfig.build_for_superanimal_inference``, saved as
  ``{"model": state_dict}``), and loaded through the real loading code. The compute per frame and
  per box is the same as with real weights; what the models output is meaningless, and the output
  says so.
* Boxes. With random weights every candidate box scores about 0.004, so at the usual threshold
  (0.2) nothing is detected and no pose model would ever run. The detection threshold is lowered
  to ``--threshold`` (0.001) in all three variants, and each frame gets exactly ``--max-animals``
  (3) animal boxes everywhere: for (a) and (b) MegaDetector's own NMS options are set on its
  ultralytics predictor, ``classes=[0]`` (animals) and ``max_det=3`` - without that cap NMS returns
  up to 300 random boxes per frame, and drawing, classifying and writing 300 boxes per frame is a
  load no real video gives; (c) keeps the same 3 boxes. DeepLabCut in (b) gets
  ``max_individuals=3`` and its detector's ``box_score_thresh`` (which is what filters its
  detections; ``bbox_threshold`` only filters what it draws) set to the same low value through
  ``customized_model_config`` (its own SuperAnimal config, that one value changed), so its pose
  model also runs on 3 boxes per frame.
* Same models, same sizes. The detector is MDV6-yolov9-c at the pipeline's default image size
  (640) in (a) and (b) (PytorchWildlife's MDV6 default is 1280; (b) sets ``predictor.args.imgsz``
  like wildswarm does). The classifier (default AI4GSnapshotSerengeti) runs in both (a) and (b):
  the old system had one, and (a) uses the same for a fair comparison (wildswarm's default has
  none). The pose model file is the same for (a) and (b).
* Sampling. Both get ``--fps`` (5, the old system's rate). PytorchWildlife's helper rounds the frame
  stride down (24 fps / 5 -> every 4th frame: 20-21 frames per seed video), wildswarm samples on the
  exact 5 fps grid (17-18 frames). The ratio (b)/(a) is printed both per video and per frame; the
  target is checked on the per-frame ratio, the conservative one.
* Warm-up. Before timing, each worker runs its variant once on a 1-second clip cut from the
  first video (``--no-warmup`` skips it), so one-time costs (first-call allocations, lazy
  imports) are out of every variant's per-video figure. (b) still loads its models inside each
  video's timing: that is what the old system did.
* Threads. Every worker calls ``torch.set_num_threads(--threads)`` (default: all cores) before
  loading anything, and again after each model load: ultralytics' ``select_device`` (run when
  PytorchWildlife loads MegaDetector v6) sets ``torch.set_num_threads(min(8, cores - 1))``, which
  is 1 on a 2-core machine. The output notes the count the libraries had left, and the count each
  worker ended with.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DETECTOR = "MDV6-yolov9-c"
POSE = "superanimal_quadruped"
POSE_MODEL = "hrnet_w32"
DLC_DETECTOR = "fasterrcnn_resnet50_fpn_v2"
DLC_DETECTOR_FILE = f"{POSE}_{DLC_DETECTOR}.pt"   # DeepLabCut's own name for it
VARIANTS = {"a": "(a) wildswarm pipeline", "b": "(b) old naive sequence", "c": "(c) bare forward passes"}
TARGETS = {"b_over_a": 1.8, "a_over_c": 1.15, "peak_gb": 3.0}


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------
def default_videos() -> Path:
    """The two real seed videos beside a checkout (WILDSWARM_SEED_VIDEOS overrides)."""
    return Path(os.environ.get("WILDSWARM_SEED_VIDEOS") or ROOT.parent / "shared" / "data" / "seed-examples")


def default_models() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "wildswarm" / "bench-models"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=Path, default=None,
                   help="folder of .mp4 videos (default: WILDSWARM_SEED_VIDEOS, or ../shared/data/seed-examples)")
    p.add_argument("--fps", type=float, default=5.0, help="sampling rate, frames per second (default 5)")
    p.add_argument("--models", type=Path, default=None,
                   help="weights folder; real files there are used, missing ones are built untrained "
                        f"(default {default_models()})")
    p.add_argument("--classifier", default="AI4GSnapshotSerengeti",
                   help="classifier for (a) and (b) ('none' for detector only; default AI4GSnapshotSerengeti)")
    p.add_argument("--repeat", type=int, default=3,
                   help="rounds of (a) and (c), interleaved video by video (default 3)")
    p.add_argument("--repeat-old", type=int, default=1,
                   help="rounds of (b), the old sequence, each in a fresh worker (3-4 minutes each on 2 cores; default 1)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads in every worker")
    p.add_argument("--threshold", type=float, default=0.001, help="detection threshold (see docstring)")
    p.add_argument("--max-animals", type=int, default=3, help="boxes per frame for classifier and pose")
    p.add_argument("--batch-size", type=int, default=4, help="wildswarm's batch size (frames)")
    p.add_argument("--image-size", type=int, default=None,
                   help="detector image size (default: the pipeline's default, 640)")
    p.add_argument("--variants", default="acb", help="which variants to run (default acb: all three)")
    p.add_argument("--no-warmup", dest="warmup", action="store_false", help="skip the untimed warm-up")
    p.add_argument("--out", type=Path, default=None, help="JSON result file (default bench/results/pipeline-<ts>.json)")
    # internal: run one variant in this (child) process
    p.add_argument("--variant", choices=["a", "b", "c", "prepare"], help=argparse.SUPPRESS)
    p.add_argument("--video", type=Path, action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--warmup-clip", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--workdir", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.image_size is None:
        from wildswarm.config import Settings
        args.image_size = Settings().detector_image_size
    if args.classifier.lower() == "none":
        args.classifier = "none"
    return args


# ------------------------------------------------------------------------------------------------
# worker side: common
# ------------------------------------------------------------------------------------------------
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


def _settings(args):
    from wildswarm.config import Settings
    return Settings(data=args.workdir / "data", models_dir=args.models, untrained=True, device="cpu",
                    detector=DETECTOR, classifier=args.classifier, pose=POSE, fps=args.fps,
                    batch_size=args.batch_size, detector_image_size=args.image_size,
                    detection_threshold=args.threshold, max_animals=args.max_animals)


def _cap_boxes(predictor, max_animals: int) -> None:
    """MegaDetector's own NMS options: animals only, at most ``max_animals`` (see module doc)."""
    predictor.args.classes = [0]
    predictor.args.max_det = max_animals


def _enforce_threads(args, out: dict, where: str) -> None:
    """Re-apply the thread count: loading an ultralytics model calls its ``select_device``, which
    sets ``torch.set_num_threads(min(8, cpu_count - 1))`` (1 on a 2-core machine)."""
    import torch
    seen = torch.get_num_threads()
    if seen != args.threads:
        out.setdefault("threads_reset_by_libraries", {})[where] = seen
        torch.set_num_threads(args.threads)


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
    if args.variant == "prepare":
        out.update(prepare_models(args))
    elif args.variant == "b":
        run_old_system(args, out)
    else:
        one = {"a": setup_wildswarm, "c": setup_forward}[args.variant](args, out)
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


# ------------------------------------------------------------------------------------------------
# model preparation (own child process, untimed)
# ------------------------------------------------------------------------------------------------
def prepare_models(args) -> dict:
    from wildswarm.pipeline import models as cat
    args.models.mkdir(parents=True, exist_ok=True)
    names = [DETECTOR, POSE] + ([args.classifier] if args.classifier != "none" else [])
    info = {}
    for name in names:
        s = cat.spec(name)
        path = cat.weights_path(args.models, s)
        done = cat.ensure_untrained(args.models, s)  # builds missing ones; real files are left alone
        if done in ("built", "rebuilt"):
            _log(f"{done} untrained {name} -> {path}")
        w = cat.require(args.models, s, allow_untrained=True)
        info[name] = {"file": str(path), "untrained": w.untrained}
    path = args.models / DLC_DETECTOR_FILE
    if not path.exists():
        _log(f"building untrained DeepLabCut {DLC_DETECTOR} -> {path}")
        build_untrained_dlc_detector(path)
    info[DLC_DETECTOR] = {"file": str(path), "untrained": dlc_detector_untrained(path)}
    return {"models": info}


def dlc_detector_untrained(path: Path) -> bool:
    """Whether the sidecar build_untrained_dlc_detector wrote still names this file (the detector is
    not in wildswarm's catalogue, so not in its weights.lock.json; (b) loads it through DeepLabCut)."""
    from wildswarm.pipeline import models as cat
    try:
        side = json.loads(path.with_name(path.name + ".untrained.json").read_text())
    except (OSError, ValueError):
        return False
    return side.get("sha256") == cat.sha256_of(path)


def build_untrained_dlc_detector(path: Path, seed: int = 0) -> None:
    """DeepLabCut's SuperAnimal detector with random weights, in DeepLabCut's snapshot format."""
    import torch
    from deeplabcut.pose_estimation_pytorch.models.detectors import DETECTORS
    from wildswarm.pipeline import models as cat
    from wildswarm.pipeline.pose import superanimal_config
    torch.manual_seed(seed)
    cfg = superanimal_config(cat.spec(POSE), max_individuals=1, device="cpu")
    det_cfg = cfg["detector"]["model"]
    if "pretrained" in det_cfg:
        det_cfg["pretrained"] = False
    model = DETECTORS.build(det_cfg)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"model": model.state_dict()}, tmp)
    digest = cat.sha256_of(tmp)
    os.replace(tmp, path)
    # a sidecar of its own (wildswarm's catalogue models are recorded in weights.lock.json instead)
    path.with_name(path.name + ".untrained.json").write_text(
        json.dumps({"untrained": True, "model": f"{POSE}_{DLC_DETECTOR}", "seed": seed, "sha256": digest}, indent=2))


# ------------------------------------------------------------------------------------------------
# (a) wildswarm
# ------------------------------------------------------------------------------------------------
def setup_wildswarm(args, out: dict):
    from wildswarm.pipeline.run import Pipeline
    t = time.perf_counter()
    pipeline = Pipeline(_settings(args))
    out["load_seconds"] = round(time.perf_counter() - t, 3)
    _enforce_threads(args, out, "after Pipeline()")
    out["untrained"] = pipeline.untrained
    _cap_boxes(pipeline.detector._md.predictor, args.max_animals)
    # time inside the models' forward calls during analyze (a cross-check of (a)/(c) measured in
    # the same runs, so untouched by other load between runs); hooks cost microseconds a call
    modules = {"detect": [pipeline.detector._md.predictor.model], "pose": [pipeline.pose.runner.model]}
    if pipeline.classifier:   # wildswarm calls its .forward() directly, which hooks on it would miss
        net = pipeline.classifier.model.net
        modules["classify"] = [net.feature, net.classifier]
    inside = _time_forwards(modules)
    if args.warmup_clip:
        pipeline.analyze(args.warmup_clip, args.workdir / "a-warmup")

    def one(video: Path, rnd: int) -> dict:
        out_root = args.workdir / f"a-{rnd}"
        before = dict(inside)
        t, cpu = time.perf_counter(), _cpu()
        res = pipeline.analyze(video, out_root)
        seconds, cpu = time.perf_counter() - t, _cpu() - cpu
        shutil.rmtree(out_root, ignore_errors=True)
        _log(f"(a) {video.name}: {res.frames_analysed} frames in {seconds:.1f} s")
        forward = {k: round(inside[k] - before[k], 4) for k in inside}
        return {"video": video.name, "round": rnd, "seconds": seconds, "cpu_seconds": cpu,
                "frames": res.frames_analysed, "boxes": res.summary["animals"]["poses"],
                "timings": {k: round(v, 4) for k, v in res.timings.items()},
                "forward_inside": forward, "forward_inside_seconds": sum(forward.values())}
    return one


# ------------------------------------------------------------------------------------------------
# (c) bare forward passes
# ------------------------------------------------------------------------------------------------
def setup_forward(args, out: dict):
    import numpy as np
    import torch
    from PIL import Image
    from ultralytics.utils import nms, ops
    from wildswarm.pipeline.pose import _clip
    from wildswarm.pipeline.run import Pipeline
    from wildswarm.pipeline.video import read_frames

    pipeline = Pipeline(_settings(args))  # the same models, loaded the same way as (a)
    _enforce_threads(args, out, "after Pipeline()")
    out["untrained"] = pipeline.untrained
    predictor = pipeline.detector._md.predictor
    _cap_boxes(predictor, args.max_animals)
    classifier = pipeline.classifier.model if pipeline.classifier else None
    runner = pipeline.pose.runner
    pose_model = runner.model
    # let ultralytics set itself up (image size, letterbox) through one ordinary call
    first = next(read_frames(args.video[0], args.fps)).image
    pipeline.detector.detect([first])

    def one_video(video: Path) -> dict:
        frames = [f.image for f in read_frames(video, args.fps)]   # decode: untimed
        timed = {"detect": 0.0, "classify": 0.0, "pose": 0.0}
        cpu = 0.0
        boxes_total = 0
        for start in range(0, len(frames), args.batch_size):
            batch = frames[start:start + args.batch_size]
            # detector: letterboxed batch as ultralytics prepares it; only model(im) is timed
            bgr = [np.ascontiguousarray(f[..., ::-1]) for f in batch]
            predictor.args.batch = len(bgr)
            with torch.inference_mode():
                im = predictor.preprocess(bgr)
                t, c = time.perf_counter(), _cpu()
                preds = predictor.model(im)
                timed["detect"] += time.perf_counter() - t
                cpu += _cpu() - c
                kept = nms.non_max_suppression(preds, predictor.args.conf, predictor.args.iou, predictor.args.classes,
                                               predictor.args.agnostic_nms, max_det=predictor.args.max_det)
            per_frame = []
            for f, p in zip(batch, kept):
                xyxy = ops.scale_boxes(im.shape[2:], p[:, :4].clone(), f.shape).cpu().numpy()
                per_frame.append(xyxy[: args.max_animals])   # already sorted by confidence
            # classifier: one forward on this batch's crops, as wildswarm's Classifier does
            if classifier is not None:
                crops = []
                for f, xyxy in zip(batch, per_frame):
                    for x1, y1, x2, y2 in xyxy.astype(int):
                        crop = f[max(y1, 0):max(y2, y1 + 1), max(x1, 0):max(x2, x1 + 1)]
                        if crop.size:
                            crops.append(classifier.transform(Image.fromarray(crop)))
                if crops:
                    x = torch.stack(crops)
                    with torch.inference_mode():
                        t, c = time.perf_counter(), _cpu()
                        classifier.forward(x)
                        timed["classify"] += time.perf_counter() - t
                        cpu += _cpu() - c
            # pose: DeepLabCut's top-down crops of the same boxes, in the runner's batch size
            crops = []
            for f, xyxy in zip(batch, per_frame):
                b = _clip(xyxy, f.shape[1], f.shape[0])
                if not len(b):
                    continue
                ctx = {"bboxes": np.column_stack([b[:, :2], b[:, 2:] - b[:, :2]]).astype(np.float32),
                       "bbox_scores": np.ones(len(b), np.float32)}
                inputs, _ = runner.preprocessor(f, ctx)
                crops.extend(list(inputs))
            boxes_total += len(crops)
            for i in range(0, len(crops), runner.batch_size):
                x = torch.stack(crops[i:i + runner.batch_size])
                with torch.inference_mode():
                    t, c = time.perf_counter(), _cpu()
                    pose_model(x)
                    timed["pose"] += time.perf_counter() - t
                    cpu += _cpu() - c
        return {"frames": len(frames), "boxes": boxes_total, "seconds": sum(timed.values()), "cpu_seconds": cpu,
                "timings": {k: round(v, 4) for k, v in timed.items()}}

    if args.warmup_clip:
        one_video(args.warmup_clip)

    def one(video: Path, rnd: int) -> dict:
        res = one_video(video)
        _log(f"(c) {video.name}: {res['frames']} frames in {res['seconds']:.1f} s of forward passes")
        return {"video": video.name, "round": rnd, **res}
    return one


# ------------------------------------------------------------------------------------------------
# (b) the old system
# ------------------------------------------------------------------------------------------------
def run_old_system(args, out: dict) -> None:
    # library imports once, before any timing (the old worker imported them once too)
    import supervision as sv
    from PytorchWildlife.models import classification as pw_classification
    from PytorchWildlife.models import detection as pw_detection
    from PytorchWildlife.utils.misc import process_video
    from deeplabcut.modelzoo.video_inference import video_inference_superanimal
    from deeplabcut.pose_estimation_pytorch.config import PoseConfig
    from wildswarm.pipeline import models as cat

    det_path = cat.weights_path(args.models, cat.spec(DETECTOR))
    cls_spec = cat.spec(args.classifier) if args.classifier != "none" else None
    pose_path = cat.weights_path(args.models, cat.spec(POSE))
    dlc_det_path = args.models / DLC_DETECTOR_FILE
    specs = [cat.spec(DETECTOR), cat.spec(POSE)] + ([cls_spec] if cls_spec else [])
    out["untrained"] = (any(cat.require(args.models, s, allow_untrained=True).untrained for s in specs)
                        or dlc_detector_untrained(dlc_det_path))

    def one_video(video: Path, dest: Path) -> dict:
        dest.mkdir(parents=True, exist_ok=True)
        t0, cpu0 = time.perf_counter(), _cpu()
        # --- step 1: PytorchWildlife: detector + classifier, annotated video -----------------------
        detector = pw_detection.MegaDetectorV6(weights=str(det_path), device="cpu", pretrained=False,
                                               version=cat.spec(DETECTOR).options["version"])
        _enforce_threads(args, out, "after MegaDetectorV6()")
        detector.predictor.args.imgsz = args.image_size
        detector.predictor.args.verbose = False
        _cap_boxes(detector.predictor, args.max_animals)
        classifier = None
        if cls_spec:
            classifier = getattr(pw_classification, cls_spec.options["module"])(
                weights=str(cat.weights_path(args.models, cls_spec)), device="cpu", pretrained=False)
        boxes = sv.BoxAnnotator(thickness=2)
        labels = sv.LabelAnnotator(text_scale=0.5, text_thickness=1)
        frames = 0

        def callback(frame, index):
            nonlocal frames
            frames += 1
            rgb = frame[..., ::-1].copy()   # process_video hands over BGR; the models expect RGB
            res = detector.single_image_detection(rgb, img_path=str(index), det_conf_thres=args.threshold)
            det = res["detections"]
            texts = []
            for xyxy, label in zip(det.xyxy, res["labels"]):
                if classifier is not None:
                    crop = sv.crop_image(image=rgb, xyxy=xyxy)
                    c = classifier.single_image_classification(crop)
                    label = f"{c['prediction']} {c['confidence']:.2f}"
                texts.append(label)
            annotated = labels.annotate(boxes.annotate(rgb, det), det, labels=texts)
            return annotated                # process_video converts RGB -> BGR when writing

        annotated_video = dest / f"{video.stem}_annotated.mp4"
        process_video(str(video), str(annotated_video), callback, target_fps=args.fps)
        t1 = time.perf_counter()
        del detector, classifier
        # --- step 2: DeepLabCut SuperAnimal on the annotated video, with its own detector --------
        cfg = PoseConfig.build_for_superanimal_inference(POSE, model_name=POSE_MODEL, detector_name=DLC_DETECTOR,
                                                         max_individuals=args.max_animals, device="cpu")
        cfg["detector"]["model"]["box_score_thresh"] = args.threshold
        with open(dest / "deeplabcut.log", "a") as log, contextlib.redirect_stdout(log):  # its chatter
            video_inference_superanimal([str(annotated_video)], POSE, model_name=POSE_MODEL,
                                        detector_name=DLC_DETECTOR, dest_folder=str(dest),
                                        max_individuals=args.max_animals, bbox_threshold=args.threshold,
                                        device="cpu", customized_pose_checkpoint=str(pose_path),
                                        customized_detector_checkpoint=str(dlc_det_path),
                                        customized_model_config=cfg)
        t2 = time.perf_counter()
        return {"frames": frames, "seconds": t2 - t0, "cpu_seconds": _cpu() - cpu0,
                "timings": {"pytorchwildlife": round(t1 - t0, 4), "deeplabcut": round(t2 - t1, 4)}}

    if args.warmup_clip:
        one_video(args.warmup_clip, args.workdir / "b-warmup")
    for video in args.video:
        res = one_video(video, args.workdir / f"b-{args.round}")
        out["runs"].append({"video": video.name, "round": args.round, **res})
        _log(f"(b) {video.name}: {res['frames']} frames in {res['seconds']:.1f} s "
             f"(PytorchWildlife {res['timings']['pytorchwildlife']:.1f} s, "
             f"DeepLabCut {res['timings']['deeplabcut']:.1f} s)")


# ------------------------------------------------------------------------------------------------
# parent side
# ------------------------------------------------------------------------------------------------
class Worker:
    """A variant's worker process; its peak memory is read with wait4 when it ends."""

    def __init__(self, args, variant: str, workdir: Path, videos: list[Path], clip: Path | None, rnd: int = 0):
        self.variant = variant
        self.result = workdir / f"result-{variant}-{rnd}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--variant", variant, "--workdir", str(workdir),
               "--result", str(self.result), "--models", str(args.models), "--fps", str(args.fps),
               "--classifier", args.classifier, "--round", str(rnd), "--threads", str(args.threads),
               "--threshold", str(args.threshold), "--max-animals", str(args.max_animals),
               "--batch-size", str(args.batch_size), "--image-size", str(args.image_size)]
        for v in videos:
            cmd += ["--video", str(v)]
        if clip is not None:
            cmd += ["--warmup-clip", str(clip)]
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     bufsize=1, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def _read_until(self, marker: str) -> str:
        for line in self.proc.stdout:
            if line.startswith(marker):
                return line[len(marker):]
            print(line, end="", flush=True)
        raise SystemExit(f"worker {self.variant} ended early (see its output above)")

    def ready(self) -> None:
        self._read_until(READY)

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
    loads = [c["load_seconds"] for c in children if "load_seconds" in c]
    if loads:
        out["load_seconds"] = min(loads)
    resets = [c["threads_reset_by_libraries"] for c in children if c.get("threads_reset_by_libraries")]
    if resets:
        out["threads_reset_by_libraries"] = resets[0]
    return out


def summarise(runs: list[dict]) -> dict[str, dict]:
    """Per video: the best (least disturbed) and the median seconds over rounds; frames per second."""
    by_video: dict[str, list[dict]] = {}
    for r in runs:
        by_video.setdefault(r["video"], []).append(r)
    out = {}
    for name, rs in by_video.items():
        best = min(rs, key=lambda r: r["seconds"])
        secs = best["seconds"]
        frames = best["frames"]
        cpus = [r["cpu_seconds"] for r in rs if r.get("cpu_seconds") is not None]
        out[name] = {"seconds": secs, "median_seconds": statistics.median(r["seconds"] for r in rs),
                     "forward_inside": best.get("forward_inside"),
                     "cpu_seconds": min(cpus) if cpus else None,
                     "frames": frames, "fps": frames / secs if secs else 0.0,
                     "seconds_per_frame": secs / frames if frames else 0.0, "boxes": best.get("boxes"),
                     "best_round": best["round"], "timings": best.get("timings", {}),
                     "all_seconds": [round(r["seconds"], 3) for r in rs]}
    return out


def paired(variants: dict[str, dict], num: str, den: str, key: str) -> list[float]:
    """num/den for each (video, round) both measured, back to back."""
    d = {(r["video"], r["round"]): r[key] for r in variants[den]["runs"] if r.get(key)}
    return [r[key] / d[(r["video"], r["round"])] for r in variants[num]["runs"]
            if r.get(key) and (r["video"], r["round"]) in d]


def report(args, videos, variants: dict[str, dict]) -> dict:
    summ = {v: summarise(res["runs"]) for v, res in variants.items()}
    names = [v.name for v in videos]
    untrained = any(res.get("untrained") for res in variants.values())
    lines: list[str] = []
    w = lines.append
    w("")
    w("wildswarm pipeline benchmark" + ("  --  UNTRAINED (random) weights: outputs are meaningless; the compute "
                                        "is the same as with real weights" if untrained else ""))
    w(f"host {platform.node()}, {os.cpu_count()} cores, torch threads {args.threads} in every worker; detector "
      f"{DETECTOR} at {args.image_size} px, classifier {args.classifier}, pose {POSE}_{POSE_MODEL}; sampling "
      f"{args.fps:g} fps; {args.max_animals} boxes/frame (threshold {args.threshold:g})"
      f"{'' if args.warmup else '; no warm-up'}")
    w(f"rounds: (a) and (c) {args.repeat}, interleaved video by video; (b) {args.repeat_old}. s/video and cpu s "
      f"are each the best round (noise on a shared machine only adds time)")
    w("")
    w(f"{'variant':<26} {'video':<14} {'frames':>6} {'boxes':>5} {'s/video':>8} {'frames/s':>8} "
      f"{'s/frame':>7} {'cpu s':>7}  all rounds (s)")

    def total(v, key="seconds"):
        return sum(summ[v][n][key] or 0.0 for n in names), sum(summ[v][n]["frames"] for n in names)

    for v in variants:
        for name in names:
            s = summ[v][name]
            boxes = "-" if s["boxes"] is None else str(s["boxes"])
            w(f"{VARIANTS[v]:<26} {name:<14} {s['frames']:>6} {boxes:>5} {s['seconds']:>8.2f} {s['fps']:>8.3f} "
              f"{s['seconds_per_frame']:>7.3f} {s['cpu_seconds'] or 0:>7.1f}  "
              f"{' '.join(f'{x:.1f}' for x in s['all_seconds'])}")
        secs, frames = total(v)
        cpu, _ = total(v, "cpu_seconds")
        w(f"{VARIANTS[v]:<26} {'mean/video':<14} {frames / len(names):>6.1f} {'':>5} {secs / len(names):>8.2f} "
          f"{frames / secs:>8.3f} {secs / frames:>7.3f} {cpu / len(names):>7.1f}")
    w("")
    ratios: dict[str, object] = {}
    checks = []
    if "a" in summ and "b" in summ:
        (sa, fa), (sb, fb) = total("a"), total("b")
        (ca, _), (cb, _) = total("a", "cpu_seconds"), total("b", "cpu_seconds")
        ratios["b_over_a_per_video"] = sb / sa
        ratios["b_over_a_per_frame"] = (sb / fb) / (sa / fa)
        ratios["b_over_a_cpu_per_frame"] = (cb / fb) / (ca / fa) if ca and cb else None
        ok = ratios["b_over_a_per_frame"] >= TARGETS["b_over_a"]
        checks.append(ok)
        w(f"(b)/(a) = {ratios['b_over_a_per_frame']:.2f} per frame ({ratios['b_over_a_per_video']:.2f} per video; "
          f"(b) analyses {int(fb)} frames, (a) {int(fa)}), in CPU seconds per frame "
          f"{ratios['b_over_a_cpu_per_frame'] or float('nan'):.2f}; target >= {TARGETS['b_over_a']}: "
          f"{'met' if ok else 'MISSED'}")
    if "a" in summ and "c" in summ:
        (sa, fa), (sc, _) = total("a"), total("c")
        (ca, _), (cc, _) = total("a", "cpu_seconds"), total("c", "cpu_seconds")
        ratios["a_over_c"] = sa / sc
        ratios["a_over_c_cpu"] = ca / cc if ca and cc else None
        pairs = paired(variants, "a", "c", "seconds")
        ratios["a_over_c_pairs"] = pairs
        ratios["a_over_c_pairs_median"] = statistics.median(pairs) if pairs else None
        inside = [r["seconds"] / r["forward_inside_seconds"] for r in variants["a"]["runs"]
                  if r.get("forward_inside_seconds")]
        ratios["a_over_own_forward"] = statistics.median(inside) if inside else None
        ok = ratios["a_over_c"] <= TARGETS["a_over_c"]
        checks.append(ok)
        noisy = bool(pairs) and max(pairs) / min(pairs) > 1.5
        ratios["a_over_c_noisy"] = noisy
        w(f"(a)/(c) = {ratios['a_over_c']:.2f} (best rounds; same {int(fa)} frames, pose boxes "
          f"(a) {sum(summ['a'][n]['boxes'] or 0 for n in names)}, (c) {sum(summ['c'][n]['boxes'] or 0 for n in names)}),"
          f" in CPU seconds {ratios['a_over_c_cpu'] or float('nan'):.2f}; target <= {TARGETS['a_over_c']}: "
          f"{'met' if ok else 'MISSED'}{' (unreliable, see NOISY below)' if noisy else ''}")
        w(f"        back-to-back pairs {' '.join(f'{x:.2f}' for x in pairs)} (median "
          f"{ratios['a_over_c_pairs_median'] or float('nan'):.2f}); (a) over the time inside its own forward passes, "
          f"same runs: {ratios['a_over_own_forward'] or float('nan'):.2f} (median of {len(inside)})")
        if noisy:
            w("        NOISY: the back-to-back pairs disagree by more than 1.5x, so other load on the machine "
              "dominates these timings; rerun on a quieter machine or with a higher --repeat")
    for v, res in variants.items():
        gb = res["peak_rss_bytes"] / 1e9
        extra = ""
        if v == "a":
            ok = gb < TARGETS["peak_gb"]
            checks.append(ok)
            extra = (f"; target < {TARGETS['peak_gb']:g} GB: {'met' if ok else 'MISSED'}"
                     + (f" (classifier {args.classifier} loaded too)" if args.classifier != "none" else ""))
        w(f"peak memory of a worker, {VARIANTS[v]:<26} {gb:5.2f} GB{extra}")
    w("")
    if "a" in summ:
        st_a: dict[str, float] = {}
        st_c: dict[str, float] = {}
        st_in: dict[str, float] = {}
        for n in names:
            for k, val in summ["a"][n]["timings"].items():
                st_a[k] = st_a.get(k, 0.0) + val
            for k, val in (summ["a"][n].get("forward_inside") or {}).items():
                st_in[k] = st_in.get(k, 0.0) + val
            for k, val in (summ["c"][n]["timings"] if "c" in summ else {}).items():
                st_c[k] = st_c.get(k, 0.0) + val
        tot = st_a.get("total") or 1.0
        w(f"(a) where the time went (best rounds, both videos; model load {variants['a'].get('load_seconds', 0):.1f} s "
          f"once per worker, not included):")
        for k, val in st_a.items():
            if k == "total":
                continue
            fwd = f"   of which forward {st_in[k]:6.2f} s (x{val / st_in[k]:.2f})" if st_in.get(k) else ""
            fwd += f";  (c) forward {st_c[k]:6.2f} s (x{val / st_c[k]:.2f})" if st_c.get(k) else ""
            w(f"    {k:<9} {val:6.2f} s {100 * val / tot:4.0f}%{fwd}")
        other = tot - sum(v for k, v in st_a.items() if k != "total")
        w(f"    {'(rest)':<9} {other:6.2f} s {100 * other / tot:4.0f}%   total {tot:.2f} s")
    if "b" in summ:
        st_b: dict[str, float] = {}
        for n in names:
            for k, val in summ["b"][n]["timings"].items():
                st_b[k] = st_b.get(k, 0.0) + val
        w("(b) steps (best rounds, both videos, model loading included): "
          + ", ".join(f"{k} {v:.1f} s" for k, v in st_b.items()))
    threads = {v: res.get("torch_threads") for v, res in variants.items()}
    w(f"torch threads at the end of each worker: {threads}")
    resets = {v: res["threads_reset_by_libraries"] for v, res in variants.items() if res.get("threads_reset_by_libraries")}
    if resets:
        w(f"note: loading the models had changed torch's thread count (ultralytics select_device; re-applied to "
          f"{args.threads}): {resets}")
    print("\n".join(lines), flush=True)
    return {"summary": summ, "ratios": ratios, "targets": TARGETS, "all_targets_met": all(checks) if checks else None,
            "untrained_weights": untrained, "table": lines}


def parent(args) -> None:
    args.videos = args.videos or default_videos()
    args.models = (args.models or default_models()).resolve()
    videos = sorted(args.videos.glob("*.mp4")) if args.videos.is_dir() else []
    if not videos:
        raise SystemExit(f"no .mp4 videos in {args.videos} (give --videos DIR)")
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad:
        raise SystemExit(f"unknown variants {bad}; choose from a, b, c")
    if args.repeat < 1 or args.repeat_old < 1:
        raise SystemExit("--repeat and --repeat-old must be at least 1")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out_path = args.out or RESULTS / f"pipeline-{stamp}.json"
    workdir = Path(tempfile.mkdtemp(prefix="wildswarm-bench-"))
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
        # (a) and (c): one worker each, both loaded and warmed up before anything is timed, then
        # asked for one video at a time, alternating which goes first, so that the machine's
        # other load hits both alike; the idle one waits on its stdin and takes no CPU.
        persistent = [v for v in "ac" if v in args.variants]
        if persistent:
            print(f"starting {' and '.join(VARIANTS[v] for v in persistent)} (load, warm-up) ...", flush=True)
            workers = {v: Worker(args, v, workdir, videos, clip) for v in persistent}
            live += workers.values()
            for wk in workers.values():
                wk.ready()
            k = 0
            for r in range(args.repeat):
                for video in videos:
                    order = persistent if k % 2 == 0 else persistent[::-1]
                    k += 1
                    for v in order:
                        workers[v].run(video, r)
            for v, wk in workers.items():
                results[v] = [wk.finish()]
                live.remove(wk)
        if "b" in args.variants:
            results["b"] = []
            for r in range(args.repeat_old):
                print(f"running {VARIANTS['b']}, round {r + 1} of {args.repeat_old} ...", flush=True)
                wk = Worker(args, "b", workdir, videos, clip, r)
                live.append(wk)
                wk.proc.stdin.close()
                results["b"].append(wk.finish())
                live.remove(wk)
        variants = {v: merge(results[v]) for v in args.variants if results.get(v)}
        summary = report(args, videos, variants)
        doc = {"benchmark": "pipeline", "timestamp": stamp, "host": platform.node(), "cpu_count": os.cpu_count(),
               "python": platform.python_version(), "wall_seconds": round(time.perf_counter() - started, 1),
               "config": {"videos": [str(v) for v in videos], "fps": args.fps, "models": str(args.models),
                          "detector": DETECTOR, "image_size": args.image_size, "classifier": args.classifier,
                          "pose": f"{POSE}_{POSE_MODEL}", "dlc_detector": DLC_DETECTOR, "threads": args.threads,
                          "threshold": args.threshold, "max_animals": args.max_animals, "batch_size": args.batch_size,
                          "repeat": args.repeat, "repeat_old": args.repeat_old, "warmup": args.warmup},
               "models": prep["models"], **summary, "variants": variants}
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(doc, indent=2))
        print(f"\nresults written to {out_path} (the whole run took {doc['wall_seconds']:.0f} s)")
    finally:
        for wk in live:   # only on errors: stop the workers this run started
            if wk.proc.poll() is None:
                wk.proc.kill()
                wk.proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.variant:
        worker(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
