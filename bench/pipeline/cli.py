"""The benchmark's command line, what it compares and its targets."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
DETECTOR = "MDV6-yolov9-c"
POSE = "superanimal_quadruped"
POSE_MODEL = "hrnet_w32"
DLC_DETECTOR = "fasterrcnn_resnet50_fpn_v2"
DLC_DETECTOR_FILE = f"{POSE}_{DLC_DETECTOR}.pt"   # DeepLabCut's own name for it

# name -> (label, kind, options). Kinds: pipeline (wildswarm's Pipeline.analyze), forward (the bare
# forward passes of one backend on the same frames and boxes), naive (the old system).
VARIANTS = {
    "torch": ("wildswarm, PyTorch (before)", "pipeline", {"backend": "torch", "overlap": "off"}),
    "onnxruntime": ("wildswarm, ONNX Runtime", "pipeline", {"backend": "onnxruntime", "overlap": "off"}),
    "openvino": ("wildswarm, OpenVINO", "pipeline", {"backend": "openvino", "overlap": "off"}),
    "auto": ("wildswarm, auto, in turn", "pipeline", {"backend": "auto", "overlap": "off"}),
    "overlap": ("wildswarm, auto, overlapped", "pipeline", {"backend": "auto", "overlap": "on"}),
    "default": ("wildswarm, default profile", "pipeline", {}),
    "container": ("default profile, container", "pipeline", {"container": True}),
    "device-crops": ("default profile, pose crops on the device", "pipeline", {"pose_crops": "device"}),
    "torch-device-crops": ("PyTorch, pose crops on the device", "pipeline",
                           {"backend": "torch", "overlap": "off", "pose_crops": "device"}),
    "whole-libraries": ("default profile, libraries imported whole", "pipeline", {"whole_libraries": True}),
    "forward-auto": ("bare forward, auto's choice", "forward", {"backend": "auto"}),
    "forward-torch": ("bare forward, PyTorch", "forward", {"backend": "torch"}),
    "forward-onnxruntime": ("bare forward, ONNX Runtime", "forward", {"backend": "onnxruntime"}),
    "forward-openvino": ("bare forward, OpenVINO", "forward", {"backend": "openvino"}),
    "naive": ("old naive sequence", "naive", {}),
}
# In groups of --parallel, in this order: the figures compared with each other run side by side.
DEFAULT_VARIANTS = ("torch,default,forward-auto,container,auto,overlap,onnxruntime,openvino,"
                    "forward-torch,forward-onnxruntime,forward-openvino,naive")
TARGETS = {"speedup_over_torch": 2.0, "wall_over_forward": 1.10, "container_over_host": 1.10, "peak_gb": 3.0,
           "naive_over_default": 1.8}


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
    p.add_argument("--variants", default=DEFAULT_VARIANTS,
                   help=f"comma-separated variants (default: all of them: {DEFAULT_VARIANTS})")
    p.add_argument("--parallel", type=int, default=4,
                   help="variants loaded and interleaved at a time (each holds its models: ~1.5 GB; default 4)")
    p.add_argument("--image", default="wildswarm/worker:latest", help="worker image for the container variant")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "int8"],
                   help="precision of the ONNX backends (fp32; bf16 on OpenVINO; int8: the models' INT8 exports, "
                        "quantized on the benchmark's videos first where missing)")
    p.add_argument("--int8-frames", type=int, default=64, help="frames INT8 is calibrated on (default 64)")
    p.add_argument("--no-warmup", dest="warmup", action="store_false", help="skip the untimed warm-up")
    p.add_argument("--out", type=Path, default=None, help="JSON result file (default bench/results/pipeline-<ts>.json)")
    # internal: run one variant in this (child) process
    p.add_argument("--variant", choices=[*VARIANTS, "prepare"], help=argparse.SUPPRESS)
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
    if not args.variant:
        args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        bad = [v for v in args.variants if v not in VARIANTS]
        if bad:
            raise SystemExit(f"unknown variants {bad}; choose from {', '.join(VARIANTS)}")
    return args


