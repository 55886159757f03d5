"""A run's ``summary.json``: what was analysed, with what, what was found, how long it took."""
from __future__ import annotations

import platform
from collections import defaultdict

from wildswarm import __version__
from wildswarm.pipeline import outputs


def build_summary(p, video, info, decoded, frames_meta, dets, poses, tracks, out_fps, timings) -> dict:
    """``summary.json`` of pipeline ``p``'s run over ``video``: models, settings, input, frames,
    animals and tracks, timings and the versions of what made it."""
    from wildswarm.pipeline.detections import ANIMAL
    s = p.settings
    per_frame = [int((d.class_id == ANIMAL).sum()) if len(d) else 0 for d in dets]
    species: dict[str, int] = defaultdict(int)
    for d in dets:
        for sp in d.data.get("species", []):
            if sp:
                species[sp] += 1
    summary = {
        "video": video.name,
        "wildswarm_version": __version__,
        "untrained_weights": p.untrained,
        "warning": ("Made with UNTRAINED (random) weights: detections, species and keypoints are "
                    "meaningless.") if p.untrained else None,
        "profile": s.profile,
        "models": {w.spec.kind: {**w.describe(), "backend": _backend(p, w.spec.kind),
                                 **({"crops": getattr(p.pose.model, "crops", None)} if w.spec.kind == "pose" else {})}
                   for w in p.weights},
        "settings": {"detector": s.detector, "classifier": s.classifier, "pose": s.pose, "fps": s.fps,
                     "detector_image_size": s.detector_image_size,
                     "detection_threshold": s.detection_threshold, "pose_threshold": s.pose_threshold,
                     "max_animals": s.max_animals, "batch_size": s.batch_size, "device": p.device,
                     "track_lost_seconds": s.track_lost_seconds, "smooth": s.smooth, "pose_crops": s.pose_crops,
                     "smooth_window": s.smooth_window},
        "input": {"width": info.width, "height": info.height, "fps": info.fps, "frames": info.frames,
                  "duration_s": round(info.duration, 3), "codec": info.codec},
        "frames": {"read": decoded, "analysed": len(frames_meta),
                   "output_fps": round(out_fps, 3)},
        "animals": {"frames_with_animals": sum(1 for n in per_frame if n),
                    "max_per_frame": max(per_frame, default=0), "detections": sum(per_frame),
                    "distinct": len(tracks), "poses": sum(len(p) for p in poses),
                    "species": dict(species)},
        "tracks": tracks,
        "bodyparts": list(p.pose.bodyparts),
        "skeleton": [[int(a), int(b)] for a, b in getattr(p.pose, "skeleton", [])],
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "software": _versions(),
        "model_load_s": round(p.load_seconds, 3),
        "host": platform.node(),
        "files": list(outputs.expected(s.smooth != "none")),
    }
    times = frame_times(frames_meta, info.fps)
    if times is not None:
        summary["frame_times_s"] = times
    return summary


def frame_times(frames_meta, fps: float) -> dict[str, float] | None:
    """Each analysed frame's time (s from the first frame) by its index, where the video's frame rate
    varies (a phone's): a time half a frame or more from index / rate. Exports read them from here; at a
    constant rate (None) index / rate is the time."""
    if not fps or all(abs(t - i / fps) < 0.5 / fps for i, t in frames_meta):
        return None
    return {str(i): round(t, 4) for i, t in frames_meta}


def _versions() -> dict[str, str]:
    """The versions of what made a result (NWB and Camtrap DP exports name them)."""
    from importlib.metadata import PackageNotFoundError, version
    out = {"wildswarm": __version__}
    for dist in ("deeplabcut", "PytorchWildlife", "torch", "supervision"):
        try:
            out[dist.lower()] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def _backend(p, kind: str) -> dict | None:
    choice = getattr(p, "backends", {}).get(kind)
    return None if choice is None else {k: v for k, v in choice.describe().items() if k != "model"}
