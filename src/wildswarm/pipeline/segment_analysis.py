"""A long video analysed in segments: a segment at a time into its own partial result, then merged into
the whole video's result as one run writes it (the workers share a video's segments out; ``wildswarm
analyze`` runs them one after the other). :class:`SegmentedAnalysis` is part of
:class:`~wildswarm.pipeline.run.Pipeline`; the plan and the folder of segments are ``segments``'.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Callable

from wildswarm import __version__
from wildswarm.errors import PipelineError
from wildswarm.pipeline import outputs, segments
from wildswarm.pipeline.outputs import Result
from wildswarm.pipeline.segments import SegmentPlan
from wildswarm.pipeline.video import probe


class SegmentedAnalysis:
    """The segment steps of :class:`~wildswarm.pipeline.run.Pipeline` (whose settings, weights, pose
    model, ``_analyse_frames`` and ``_write`` they use)."""

    def results_view(self) -> dict:
        """The settings that change what a segment holds (a finished one counts only if they match)."""
        s = self.settings
        return {"detector": s.detector, "classifier": s.classifier, "pose": s.pose, "fps": s.fps,
                "detector_image_size": s.detector_image_size, "detection_threshold": s.detection_threshold,
                "max_animals": s.max_animals, "batch_size": s.batch_size, "track_lost_seconds": s.track_lost_seconds,
                "weights": [w.sha256 for w in self.weights], "version": __version__}

    def segments_key(self, video: Path, seg_plan: SegmentPlan) -> str:
        return segments.fingerprint(Path(video), self.results_view(), seg_plan)

    def prepare_segments(self, video: Path, out_root: Path, name: str, seg_plan: SegmentPlan) -> Path:
        """Make (or keep, when it was made for the same video, settings and plan) the folder the
        segments of ``video`` are written to; once per video, before its segments run."""
        return segments.prepare(out_root, name, self.segments_key(video, seg_plan), seg_plan, self.results_view())

    def check_segments(self, video: Path, out_root: Path, name: str, seg_plan: SegmentPlan) -> Path:
        """The segments folder of ``video``, if it was planned under this pipeline's key; else
        :class:`~wildswarm.pipeline.segments.PlanChanged`, saying what differs."""
        return segments.check(out_root, name, self.segments_key(video, seg_plan), self.results_view())

    def analyze_segment(self, video: Path, out_root: Path, name: str, k: int, seg_plan: SegmentPlan,
                        *, report: Callable[[int], None] | None = None) -> int:
        """Analyse segment ``k`` of ``video`` into its partial result (atomically); returns its frames.
        A segment already finished for this video, these settings and this plan is not run again.
        :meth:`prepare_segments` must have been called for the video."""
        video = Path(video)
        info = probe(video)
        plan_key = self.segments_key(video, seg_plan)
        where = segments.check(out_root, name, plan_key, self.results_view())
        if segments.finished(where, k):
            return json.loads((where / segments.part_name(k) / segments.PART_FILE).read_text())["frames"]
        first, stop = seg_plan.reads(k)
        own_first, own_stop = seg_plan.owned(k)
        outputs.clean_partial(where, segments.part_name(k))  # what a killed attempt at it left
        started = time.perf_counter()
        with outputs.OutputFolder(where, segments.part_name(k)) as tmp:
            frames, drawing = self._analyse_frames(video, info, tmp / outputs.LABELED_VIDEO, first=first,
                                                   stop=stop, label_prefix=f"{k + 1}.", report=report,
                                                   render=None if own_stop is None else own_stop - own_first)
            with drawing.finished():                      # the segment's video is finished behind this
                part = segments.save_frames(tmp / segments.FRAMES_FILE, frames)
            if frames.poster is not None:
                outputs.write_poster(tmp / outputs.POSTER, frames.poster[2])
                part["poster"] = {"animals": frames.poster[0], "frame": frames.poster[1]}
            # the segment's own wall time: its stages' timings overlap when decode and draw run in threads
            frames.timings["total"] = time.perf_counter() - started
            part.update(key=plan_key, segment=k, first=first, frames=len(frames.meta), decoded=frames.decoded,
                        read=frames.read, timings={key: round(v, 4) for key, v in frames.timings.items()},
                        host=platform.node(), pid=os.getpid())
            (tmp / segments.PART_FILE).write_text(json.dumps(part))
        return len(frames.meta)

    def merge(self, video: Path, out_root: Path, name: str, seg_plan: SegmentPlan) -> Result:
        """The result of the whole video from its finished segments, written as a whole-video run
        writes it; the segments are removed once it is in place."""
        started = time.perf_counter()
        video = Path(video)
        info = probe(video)
        where = segments.folder(out_root, name)
        missing = [k for k in range(seg_plan.count) if not segments.finished(where, k)]
        if missing:
            raise PipelineError(f"{video.name}: cannot merge, segments {missing} are not finished")
        parts, timings, made_by, part_meta = [], defaultdict(float), [], []
        for k in range(seg_plan.count):
            part = json.loads((where / segments.part_name(k) / segments.PART_FILE).read_text())
            part_meta.append(part)
            parts.append(segments.load_frames(where / segments.part_name(k) / segments.FRAMES_FILE, part,
                                              len(self.pose.bodyparts)))
            stage_times = dict(part.get("timings", {}))
            stage_times.setdefault("total", sum(stage_times.values()))  # parts written before kept no wall time
            for key, v in stage_times.items():
                timings[key] += v
            made_by.append({"segment": k + 1, "host": part.get("host"), "pid": part.get("pid"),
                            "frames": part.get("frames"), "seconds": round(stage_times["total"], 3)})
        frames, local_maps = segments.stitch(parts, seg_plan)
        frames.timings = timings
        posters = [(p["poster"]["animals"], -k, p["poster"]["frame"]) for k, p in enumerate(part_meta) if p.get("poster")]
        with outputs.OutputFolder(out_root, name) as tmp:
            t = time.perf_counter()
            segments.join_videos([where / segments.part_name(k) / outputs.LABELED_VIDEO
                                  for k in range(seg_plan.count)], tmp / outputs.LABELED_VIDEO)
            frames.timings["join"] = time.perf_counter() - t
            if posters:                                  # the fullest frame of the whole video: the earliest of the best
                best = max(posters)
                shutil.copyfile(where / segments.part_name(-best[1]) / outputs.POSTER, tmp / outputs.POSTER)
                frames.poster = (best[0], best[2], None)
            labels = [{"segment": k + 1, "label": f"{k + 1}.{local}", "id": tid}
                      for k, m in enumerate(local_maps) for local, tid in sorted(m.items())]
            result = self._write(tmp, video, info, frames, started, segmented={
                "count": seg_plan.count, "frames_each": seg_plan.length, "overlap": seg_plan.overlap,
                "parts": made_by, "labels": labels})
        # the segments stay until the video is recorded done (the runner, or _analyze_in_segments, removes
        # them): a merger killed before that leaves them for the next one to merge, not to analyse again
        return replace(result, output_dir=Path(out_root) / name, name=name)

    def _analyze_in_segments(self, video, info, out_root, name, seg_plan, progress) -> Result:
        """All segments here, one after the other (a worker of the stack may share them out instead)."""
        total = info.sampled(self.settings.fps)
        done = 0
        if progress:
            progress(0, total)
        self.prepare_segments(video, out_root, name, seg_plan)
        for k in range(seg_plan.count):
            report = (lambda n, base=done: progress(base + n, max(total, base + n))) if progress else None
            done += self.analyze_segment(video, out_root, name, k, seg_plan, report=report)
        result = self.merge(video, out_root, name, seg_plan)
        segments.remove(out_root, name)
        if progress:
            progress(result.frames_analysed, result.frames_analysed)
        return result
