"""Pipeline: load models once, then analyse videos one after another.

    pipeline = Pipeline(settings)
    result = pipeline.analyze(video, out_root, progress=lambda done, total: ...)

Each video is decoded once at ``settings.fps``; frames go in batches through
MegaDetector, the optional classifier and SuperAnimal pose (top-down on the
animal boxes), are rendered once into the labeled video, and every result file
is written into a temporary folder that becomes ``out_root/<name>/`` at the end.
"""
from __future__ import annotations

import platform
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from wildswarm import __version__
from wildswarm.config import Settings
from wildswarm.errors import PipelineError, VideoError, WildswarmError
from wildswarm.layout import stem_of
from wildswarm.pipeline import models as catalogue
from wildswarm.pipeline import outputs, smooth
from wildswarm.pipeline.video import Frame, VideoWriter, probe, read_frames, sample_step

ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Result:
    name: str
    output_dir: Path
    files: tuple[str, ...]
    frames_read: int
    frames_analysed: int
    animals: int
    untrained: bool
    timings: dict[str, float] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)


def resolve_device(device: str) -> str:
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise PipelineError(f"device {device!r} asked for, but no CUDA GPU is available; use --device cpu or auto")
    return device


def ensure_weights(settings: Settings, names: list[str]) -> None:
    """Where untrained weights were asked for, build those that are missing (and rebuild the
    stand-ins an older wildswarm marked with sidecars); files of any other kind are left alone."""
    if not settings.untrained:
        return
    for name in names:
        catalogue.ensure_untrained(settings.models, catalogue.spec(name))


class Pipeline:
    def __init__(self, settings: Settings):
        from wildswarm.pipeline.detect import Classifier, Detector
        from wildswarm.pipeline.pose import PoseEstimator

        started = time.perf_counter()
        smooth.check(settings.smooth, settings.smooth_window)
        self.settings = settings
        self.device = resolve_device(settings.device)
        det_spec = catalogue.spec(settings.detector, "detector")
        cls_spec = None if settings.classifier in ("", "none") else catalogue.spec(settings.classifier, "classifier")
        pose_spec = catalogue.spec(settings.pose, "pose")
        wanted = [s.name for s in (det_spec, cls_spec, pose_spec) if s is not None]
        ensure_weights(settings, wanted)
        need = [catalogue.require(settings.models, s, allow_untrained=settings.untrained)
                for s in (det_spec, cls_spec, pose_spec) if s is not None]
        self.weights = need
        self.untrained = any(w.untrained for w in need)
        try:
            self.detector = Detector(need[0], device=self.device, image_size=settings.detector_image_size,
                                     threshold=settings.detection_threshold)
            self.classifier = Classifier(need[1], device=self.device) if cls_spec else None
            self.pose = PoseEstimator(need[-1], device=self.device, max_animals=settings.max_animals,
                                      batch_size=settings.batch_size)
        except WildswarmError:
            raise
        except Exception as exc:  # a library failing to load a file it was given
            raise PipelineError(f"could not load models {', '.join(wanted)}: {type(exc).__name__}: {exc}") from exc
        self.load_seconds = time.perf_counter() - started

    def analyze(self, video: Path, out_root: Path, *, name: str | None = None,
                progress: ProgressFn | None = None) -> Result:
        video = Path(video)
        s = self.settings
        info = probe(video)
        name = name or stem_of(video.name)
        total = info.sampled(s.fps)
        out_fps = info.fps / sample_step(info.fps, s.fps) if info.fps else s.fps or 5.0
        timings: dict[str, float] = defaultdict(float)
        frames_meta: list[tuple[int, float]] = []
        decode_stats = {"decoded": 0}
        dets, poses, ids = [], [], []
        started = time.perf_counter()

        @contextmanager
        def timed(stage: str):
            t = time.perf_counter()
            yield
            timings[stage] += time.perf_counter() - t

        if progress:
            progress(0, total)
        from wildswarm.pipeline.detect import animals
        from wildswarm.pipeline.track import Tracker
        tracker = Tracker(fps=out_fps, lost_seconds=s.track_lost_seconds)
        with outputs.OutputFolder(out_root, name) as tmp:
            from wildswarm.pipeline.render import FrameRenderer, trajectory_plot
            renderer = FrameRenderer(info.width, info.height, self.pose.skeleton,
                                     pose_threshold=s.pose_threshold, untrained=self.untrained)
            with VideoWriter(tmp / outputs.LABELED_VIDEO, out_fps, info.width, info.height) as writer:
                def run_batch(batch: list[Frame]) -> None:
                    images = [f.image for f in batch]
                    with timed("detect"):
                        bdets = self.detector.detect(images)
                    if self.classifier:
                        with timed("classify"):
                            self.classifier.classify(images, bdets, s.max_animals)
                    with timed("track"):
                        for d in bdets:
                            tracker.update(d)
                    with timed("pose"):
                        bposes = self.pose.estimate(images, bdets)
                    with timed("render"):
                        for f, d, p in zip(batch, bdets, bposes):
                            writer.write(renderer.render(f.image, d, p))
                    frames_meta.extend((f.index, f.time) for f in batch)
                    dets.extend(bdets)
                    poses.extend(bposes)
                    # the pose of animals(det)[j] belongs to that box's track
                    ids.extend(animals(d).tracker_id[: len(p)] if len(d) else np.zeros(0, int)
                               for d, p in zip(bdets, bposes))
                    if progress:
                        progress(len(frames_meta), max(total, len(frames_meta)))

                batch: list[Frame] = []
                frames = read_frames(video, s.fps, decode_stats)
                while True:
                    with timed("decode"):
                        frame = next(frames, None)
                    if frame is None:
                        break
                    batch.append(frame)
                    if len(batch) >= s.batch_size:
                        run_batch(batch)
                        batch = []
                if batch:
                    run_batch(batch)
            if not frames_meta:
                raise VideoError(f"{video.name}: no frame could be decoded")

            with timed("write"):
                animals = sum(len(p) for p in poses)
                scorer = f"wildswarm_{s.pose}_{s.detector}"
                outputs.write_detections(
                    tmp / outputs.DETECTIONS, video.name, frames_meta, dets, (info.width, info.height),
                    detector=s.detector, classifier=self.classifier.names if self.classifier else None,
                    frame_rate=out_fps, untrained=self.untrained)
                outputs.write_tracks(tmp / outputs.TRACKS, frames_meta, dets)
                table = outputs.keypoint_table(frames_meta, poses, ids, self.pose.bodyparts, scorer)
                outputs.write_keypoints(tmp, table)
                if s.smooth != "none":
                    outputs.write_keypoints(tmp, smooth.smooth_table(table, method=s.smooth, window=s.smooth_window,
                                                                     pose_threshold=s.pose_threshold),
                                            h5=outputs.FILTERED_H5, csv=outputs.FILTERED_CSV)
                trajectory_plot(tmp / outputs.TRAJECTORY, poses, ids, width=info.width,
                                height=info.height, pose_threshold=s.pose_threshold,
                                title=f"{video.name}: one path per animal", untrained=self.untrained)
            timings["total"] = time.perf_counter() - started
            tracks = tracker.summary([i for i, _ in frames_meta])
            summary = self._summary(video, info, decode_stats["decoded"], frames_meta, dets, poses, tracks,
                                    out_fps, timings)
            outputs.write_summary(tmp / outputs.SUMMARY, summary)
        if progress:
            progress(len(frames_meta), len(frames_meta))
        return Result(name=name, output_dir=Path(out_root) / name, files=outputs.expected(s.smooth != "none"),
                      frames_read=decode_stats["decoded"], frames_analysed=len(frames_meta),
                      animals=summary["animals"]["max_per_frame"], untrained=self.untrained,
                      timings=dict(timings), summary=summary)

    def _summary(self, video, info, decoded, frames_meta, dets, poses, tracks, out_fps, timings) -> dict:
        from wildswarm.pipeline.detect import ANIMAL
        s = self.settings
        per_frame = [int((d.class_id == ANIMAL).sum()) if len(d) else 0 for d in dets]
        species: dict[str, int] = defaultdict(int)
        for d in dets:
            for sp in d.data.get("species", []):
                if sp:
                    species[sp] += 1
        return {
            "video": video.name,
            "wildswarm_version": __version__,
            "untrained_weights": self.untrained,
            "warning": ("Made with UNTRAINED (random) weights: detections, species and keypoints are "
                        "meaningless.") if self.untrained else None,
            "models": {w.spec.kind: w.describe() for w in self.weights},
            "settings": {"fps": s.fps, "detector_image_size": s.detector_image_size,
                         "detection_threshold": s.detection_threshold, "pose_threshold": s.pose_threshold,
                         "max_animals": s.max_animals, "batch_size": s.batch_size, "device": self.device,
                         "track_lost_seconds": s.track_lost_seconds, "smooth": s.smooth,
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
            "bodyparts": list(self.pose.bodyparts),
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
            "model_load_s": round(self.load_seconds, 3),
            "host": platform.node(),
            "files": list(outputs.expected(s.smooth != "none")),
        }
