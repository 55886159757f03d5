"""Model preparation, in its own child process, untimed: real weights where present, else untrained
stand-ins, and their ONNX exports."""
from __future__ import annotations

import json
import os
from pathlib import Path

from bench.pipeline.cli import DETECTOR, DLC_DETECTOR, DLC_DETECTOR_FILE, POSE
from bench.pipeline.common import _log


def prepare_models(args) -> dict:
    from wildswarm.pipeline import backends
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
        export = backends.export_weights(w)
        info[name] = {"file": str(path), "untrained": w.untrained, "onnx": export.name}
    path = args.models / DLC_DETECTOR_FILE
    if not path.exists():
        _log(f"building untrained DeepLabCut {DLC_DETECTOR} -> {path}")
        build_untrained_dlc_detector(path)
    info[DLC_DETECTOR] = {"file": str(path), "untrained": dlc_detector_untrained(path)}
    int8 = prepare_int8(args, names) if args.precision == "int8" else None
    return {"models": info, "int8": int8, "limits": physical_limits(args)}


def prepare_int8(args, names: list[str]) -> dict:
    """INT8 exports of the models, as `wildswarm models quantize` makes them, calibrated on the benchmark's
    own videos (``--int8-frames`` frames; the frames measured are among them, which flatters accuracy,
    never speed). Kept beside the weights for later runs."""
    from bench.pipeline.common import _settings
    from wildswarm.pipeline import backends, quantize
    from wildswarm.pipeline import models as cat
    have = {n for n in names if backends.quantized(cat.require(args.models, cat.spec(n), allow_untrained=True))}
    if set(names) <= have:
        return {n: "kept" for n in names}
    frames, source = quantize.calibration_frames(list(args.video), args.int8_frames)
    _log(f"quantizing {', '.join(sorted(set(names) - have))} to INT8 on {source['frames']} frames")
    done = quantize.quantize_pipeline(_settings(args, backend="torch"), frames, source, skip=have)
    if failed := {n: str(e) for n, e in done.items() if not isinstance(e, Path)}:
        raise SystemExit(f"INT8 quantization failed: {failed}")
    return {n: p.name for n, p in done.items()}


def physical_limits(args) -> dict:
    """FLOPs of each model at the pipeline's shapes (a seed frame), and the node's peak FLOP/s."""
    from bench.pipeline.common import _settings
    from bench.pipeline.limits import cpu_peak, model_flops
    from wildswarm.pipeline.run import Pipeline
    from wildswarm.pipeline.video import read_frames
    frame = next(read_frames(args.video[0], args.fps)).image
    pipeline = Pipeline(_settings(args, backend="torch"))
    return {"flops": model_flops(pipeline, frame), "peak": cpu_peak(args.threads)}


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
    from wildswarm.pipeline.families.superanimal import superanimal_config
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


