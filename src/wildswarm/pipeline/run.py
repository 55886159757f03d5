"""Pipeline: load models once, then analyse videos one after another.

    pipeline = Pipeline(settings)
    result = pipeline.analyze(video, out_root, progress=lambda done, total: ...)

Each video is decoded once at ``settings.fps``; frames go in batches through
MegaDetector, the optional classifier and SuperAnimal pose (top-down on the
animal boxes), are rendered once into the labeled video, and every result file
is written into a temporary folder that becomes ``out_root/<name>/`` at the end.
"""
from __future__ import annotations

import contextlib
import json
import logging
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable

from wildswarm import __version__
from wildswarm.config import Settings
from wildswarm.errors import PipelineError, VideoError, WildswarmError
from wildswarm.layout import stem_of
from wildswarm.leftovers import sweep_leftovers
from wildswarm.pipeline import models as catalogue
from wildswarm.pipeline import backends, outputs, segments, smooth, stages
from wildswarm.pipeline.frames import Frames
from wildswarm.pipeline.outputs import Result
from wildswarm.pipeline.segment_analysis import SegmentedAnalysis
from wildswarm.pipeline.segments import SegmentPlan
from wildswarm.pipeline.summary import build_summary
from wildswarm.pipeline.video import Frame, VideoInfo, probe, read_frames, sample_step
from wildswarm.pipeline.video_writer import VideoWriter
from wildswarm.profiles import check_settings

ProgressFn = Callable[[int, int], None]
log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (a GPU if there is one), checked here: the libraries
    would each guess or fail in their own words (ultralytics takes an empty device for any)."""
    import re

    import torch
    device = device.strip().lower()
    if not re.fullmatch(r"cpu|cuda(:\d+)?|auto", device):
        raise PipelineError(f"unknown device {device!r}: use cpu, cuda, cuda:N or auto")
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


class Pipeline(SegmentedAnalysis):
    def __init__(self, settings: Settings):
        from wildswarm.pipeline.detect import Classifier, Detector
        from wildswarm.pipeline.pose import PoseEstimator

        started = time.perf_counter()
        smooth.check(settings.smooth, settings.smooth_window)
        check_settings(settings)
        self.settings = settings
        self.device = resolve_device(settings.device)
        det_spec = catalogue.spec(settings.detector, "detector")
        cls_spec = None if settings.classifier in ("", "none") else catalogue.spec(settings.classifier, "classifier")
        pose_spec = catalogue.spec(settings.pose, "pose")
        wanted = [s.name for s in (det_spec, cls_spec, pose_spec) if s is not None]
        # what a process killed mid-download or mid-export left (a read-only models/ is left alone)
        sweep_leftovers([settings.models, settings.cache])
        ensure_weights(settings, wanted)
        need = [catalogue.require(settings.models, s, allow_untrained=settings.untrained)
                for s in (det_spec, cls_spec, pose_spec) if s is not None]
        self.weights = need
        self.untrained = any(w.untrained for w in need)
        backends.check_choice(settings.backend, settings.precision)
        self.threads = self._set_threads(settings.threads)
        stages.cap_malloc_arenas()    # before the libraries' thread pools and ours allocate
        try:
            self.detector = Detector(need[0], device=self.device, image_size=settings.detector_image_size,
                                     threshold=settings.detection_threshold)
            self.classifier = Classifier(need[1], device=self.device) if cls_spec else None
            self.pose = PoseEstimator(need[-1], device=self.device, max_animals=settings.max_animals,
                                      batch_size=settings.batch_size, crops=settings.pose_crops)
        except WildswarmError:
            raise
        except Exception as exc:  # a library failing to load a file it was given
            raise PipelineError(f"could not load models {', '.join(wanted)}: {type(exc).__name__}: {exc}") from exc
        self.load_seconds = time.perf_counter() - started
        started = time.perf_counter()
        self.backends = self._choose_backends()
        self.backend_seconds = time.perf_counter() - started
        self.torch_threads = self._settle_torch_threads()
        self.overlap = stages.overlap_wanted(settings.overlap, self.device)

    @staticmethod
    def _set_threads(threads: int) -> int:
        """Inference threads: as set, or (0) the cores this process may use, a container's CPU
        limit included (torch's default counts the host's cores, and oversubscribes a limited one)."""
        import torch
        n = threads if threads > 0 else stages.usable_cpus()
        torch.set_num_threads(n)
        return n

    def _settle_torch_threads(self) -> int:
        """torch's intra-op threads once the backends are chosen: one on a CPU node where every model
        runs on an exported runtime, else the inference threads.

        There torch only runs the libraries' pre- and post-processing (the letterbox's conversion,
        non-maximum suppression, the classifier's crops, heatmap decoding): small ops whose OpenMP
        fork and join, beside the runtime's own thread pool and the decode and draw threads, cost
        more than they save. Measured on 2 cores (both seed videos, 8 rounds alternated in one
        process): 4.6 % more frames/s in bf16, 2.3 % in fp32. The runtimes keep every thread."""
        import torch
        if self.device.startswith("cpu") and self.runtimes and all(r is not None for r in self.runtimes.values()):
            torch.set_num_threads(1)
        return torch.get_num_threads()

    def _choose_backends(self) -> dict[str, backends.Choice]:
        """Each model on the fastest backend of this node that gives PyTorch's outputs (backends.py)."""
        s = self.settings
        ranking = backends.Ranking(s.cache / "backends.json")
        chosen = {}
        self.runtimes: dict[str, backends.Runtime | None] = {}
        for part in (self.detector, self.classifier, self.pose):
            if part is None:
                continue
            choice, runtime = backends.choose(part.model, part.weights, wanted=s.backend, precision=s.precision,
                                              device=self.device, threads=self.threads, ranking=ranking,
                                              export_folder=s.cache / "exports", compiled_cache=s.cache / "openvino")
            self.runtimes[part.weights.spec.kind] = runtime
            if runtime is not None:
                backends.release_torch(part.model)
            chosen[part.weights.spec.kind] = choice
            log.info("%s runs on %s (%s)%s", choice.model, choice.backend, choice.precision,
                     "".join(f"; not {b}: {why}" for b, why in choice.refused.items()))
        return chosen

    # --- one video ------------------------------------------------------------------------------
    def analyze(self, video: Path, out_root: Path, *, name: str | None = None,
                progress: ProgressFn | None = None) -> Result:
        """Analyse ``video`` into ``out_root/<name>/``: in one pass, or, when it is longer than
        ``segment_seconds``, segment by segment (a finished segment is never analysed again) and
        merged."""
        video = Path(video)
        info = probe(video)
        name = name or stem_of(video.name)
        seg_plan = self.plan(info)
        if seg_plan is not None:
            return self._analyze_in_segments(video, info, out_root, name, seg_plan, progress)
        started = time.perf_counter()
        total = info.sampled(self.settings.fps)
        if progress:
            progress(0, total)
        report = (lambda done: progress(done, max(total, done))) if progress else None
        with outputs.OutputFolder(out_root, name) as tmp:
            frames, drawing = self._analyse_frames(video, info, tmp / outputs.LABELED_VIDEO, report=report)
            result = self._write(tmp, video, info, frames, started, segmented=None, drawing=drawing)
        if progress:
            progress(len(frames.meta), len(frames.meta))
        return replace(result, output_dir=Path(out_root) / name, name=name)

    def plan(self, info: VideoInfo, workers: int | None = None) -> SegmentPlan | None:
        """The segments of a long video (None: a short one), for ``workers`` taking them off the queue."""
        s = self.settings
        return segments.plan(info.sampled(s.fps), self.out_fps(info), segment_seconds=s.segment_seconds,
                             overlap_seconds=s.segment_overlap_seconds, batch_size=s.batch_size, workers=workers)

    def out_fps(self, info: VideoInfo) -> float:
        s = self.settings
        return info.fps / sample_step(info.fps, s.fps) if info.fps else s.fps or 5.0

    # --- the work ----------------------------------------------------------------------------------
    def _analyse_frames(self, video: Path, info: VideoInfo, labeled: Path, *, first: int = 0,
                        stop: int | None = None, render: int | None = None, label_prefix: str = "",
                        report: Callable[[int], None] | None = None) -> tuple["Frames", "_Drawing"]:
        """Analysed frames ``first <= m < stop`` of ``video``: decode, detect, classify, track, pose;
        the first ``render`` of them (all: None) drawn into ``labeled``. Overlapped, the last frames
        are still being drawn and encoded when this returns: the caller writes its results meanwhile,
        inside ``drawing.finished()``, and reads ``frames.poster`` and the render time after it."""
        from wildswarm.pipeline.detections import animals
        from wildswarm.pipeline.render import FrameRenderer
        from wildswarm.pipeline.track import Tracker
        s = self.settings
        out_fps = self.out_fps(info)
        codec_threads = stages.codec_threads(self.device)    # the decoder's and the encoder's
        frames = Frames(meta=[], dets=[], poses=[], keypoints=len(self.pose.bodyparts), decoded=0)
        timings = frames.timings
        decode_stats = {"decoded": 0}

        @contextmanager
        def timed(stage: str):
            t = time.perf_counter()
            yield
            timings[stage] += time.perf_counter() - t

        tracker = Tracker(fps=out_fps, lost_seconds=s.track_lost_seconds)
        renderer = FrameRenderer(info.width, info.height, self.pose.skeleton, pose_threshold=s.pose_threshold,
                                 untrained=self.untrained, label_prefix=label_prefix)

        def decoded_batches():
            reader = read_frames(video, s.fps, decode_stats, first=first, stop=stop, threads=codec_threads)
            batch: list[Frame] = []
            while True:
                with timed("decode"):
                    frame = next(reader, None)
                if frame is None:
                    break
                batch.append(frame)
                if len(batch) >= s.batch_size:
                    yield batch
                    batch = []
            if batch:
                yield batch

        writer = VideoWriter(labeled, out_fps, info.width, info.height, threads=codec_threads,
                             pixel_aspect=info.pixel_aspect)

        origin: list[float] = []    # the first drawn frame's time: the labeled video (or segment's) starts there

        def draw(batch: list[Frame], bdets: list, bposes: list, start: int) -> None:
            with timed("render"):
                for n, (f, d, p) in enumerate(zip(batch, bdets, bposes), start=start):
                    if render is None or n < render:
                        drawn = renderer.render(f.image, d, p)
                        origin[:] = origin or [f.time]
                        # at the source frame's own time: a variable frame rate's frames are not evenly spaced
                        writer.write(drawn, f.time - origin[0])
                        count = len(animals(d)) if len(d) else 0
                        if frames.poster is None or count > frames.poster[0]:
                            frames.poster = (count, f.index, drawn)   # a fresh array per frame

        # Overlapped: decode ahead and draw behind in threads, bounded queues between (stages.py); the
        # draw thread also flushes the encoder and closes the video, while the results are written.
        drawing = _Drawing(writer, None)
        source = decoded_batches()
        try:
            if self.overlap:
                source = stages.Ahead(source)
                drawing.drawer = stages.Behind(draw, last=writer.close)
            drawer = drawing.drawer
            for batch in source:
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
                start = len(frames.meta)
                frames.meta.extend((f.index, f.time) for f in batch)
                frames.dets.extend(bdets)
                frames.poses.extend(bposes)
                if drawer is not None:
                    drawer.put(batch, bdets, bposes, start)
                else:
                    draw(batch, bdets, bposes, start)
                if report:
                    report(len(frames.meta))
            if drawer is not None:
                drawer.end()
        except BaseException:
            drawing.abandon()
            raise
        finally:
            if isinstance(source, stages.Ahead):
                source.close()
        frames.decoded = decode_stats["decoded"]
        frames.read = decode_stats.get("last", -1) + 1
        if not frames.meta and first == 0:
            drawing.abandon()
            raise VideoError(f"{video.name}: no frame could be decoded")
        return frames, drawing

    def _write(self, tmp: Path, video: Path, info: VideoInfo, frames: "Frames", started: float, *,
               segmented: dict | None, drawing: "_Drawing | None" = None) -> Result:
        """Every result file but the labeled video, from the analysed frames, into ``tmp``; the labeled
        video (``drawing``) is finished behind the tables and the plot."""
        from wildswarm.pipeline.render import trajectory_plot
        from wildswarm.pipeline.track import track_summary
        s = self.settings
        out_fps = self.out_fps(info)
        timings = frames.timings
        with drawing.finished() if drawing is not None else contextlib.nullcontext():
            if not frames.meta:
                raise VideoError(f"{video.name}: no frame could be decoded")
            t = time.perf_counter()
            ids = frames.pose_ids()
            scorer = f"wildswarm_{s.pose}_{s.detector}"
            outputs.write_detections(
                tmp / outputs.DETECTIONS, video.name, frames.meta, frames.dets, (info.width, info.height),
                frame_rate=info.fps or out_fps, classifier=self.classifier.names if self.classifier else None,
                info=self.md_info())
            outputs.write_tracks(tmp / outputs.TRACKS, frames.meta, frames.dets)
            table = outputs.keypoint_table(frames.meta, frames.poses, ids, self.pose.bodyparts, scorer)
            outputs.write_keypoints(tmp, table)
            if s.smooth != "none":
                outputs.write_keypoints(tmp, smooth.smooth_table(table, method=s.smooth, window=s.smooth_window,
                                                                 pose_threshold=s.pose_threshold),
                                        h5=outputs.FILTERED_H5, csv=outputs.FILTERED_CSV)
            trajectory_plot(tmp / outputs.TRAJECTORY, frames.poses, ids, width=info.width,
                            height=info.height, pose_threshold=s.pose_threshold,
                            title=f"{video.name}: one path per animal", untrained=self.untrained)
            timings["write"] += time.perf_counter() - t
        # a segmented video: its segments' wall times (on whichever workers ran them) and the merge's
        timings["total"] = (0.0 if segmented is None else timings.get("total", 0.0)) + (time.perf_counter() - started)
        tracks = track_summary(frames.meta, frames.dets)
        summary = build_summary(self, video, info, frames.read, frames.meta, frames.dets, frames.poses, tracks,
                                out_fps, timings)
        summary["frames"]["decoded"] = frames.decoded
        if frames.poster is not None:
            if frames.poster[2] is not None:
                outputs.write_poster(tmp / outputs.POSTER, frames.poster[2])
            summary["poster"] = {"file": outputs.POSTER, "frame": frames.poster[1], "animals": frames.poster[0]}
        if segmented is not None:
            summary["segments"] = segmented
        outputs.write_summary(tmp / outputs.SUMMARY, summary)
        return Result(name="", output_dir=tmp, files=outputs.expected(s.smooth != "none"),
                      frames_read=frames.read, frames_analysed=len(frames.meta),
                      animals=summary["animals"]["max_per_frame"], untrained=self.untrained,
                      timings=dict(timings), summary=summary)

    def md_info(self) -> dict:
        """The ``info`` of this pipeline's MegaDetector JSON: its models and threshold."""
        from wildswarm.exporters import megadetector as md
        s = self.settings
        return md.info(detector=s.detector, image_size=s.detector_image_size, threshold=s.detection_threshold,
                       untrained=self.untrained, classifier=s.classifier if self.classifier else None,
                       extra={"wildswarm": {"version": __version__, "profile": s.profile, "sampled_fps": s.fps}})


class _Drawing:
    """The labeled video of one run: overlapped, its last frames are drawn and encoded, and the file
    is closed, in the draw thread while the caller writes the other results (measured on 2 cores,
    the encoder's flush alone took ~60 ms a seed video that the other core sat idle through)."""

    def __init__(self, writer: VideoWriter, drawer: "stages.Behind | None"):
        self.writer, self.drawer = writer, drawer

    @contextmanager
    def finished(self):
        """Run the block, then wait for the video (raising what failed in it); on an error in the
        block, or in the video, abandon it."""
        try:
            yield
            if self.drawer is not None:
                self.drawer.close()
            self.writer.close()       # in turn, here; overlapped, the draw thread closed it already
        except BaseException:
            self.abandon()
            raise

    def abandon(self) -> None:
        """Stop drawing and close the file (its folder is thrown away with the failed run)."""
        if self.drawer is not None:
            self.drawer.abandon()
        with contextlib.suppress(Exception):
            self.writer.close()
