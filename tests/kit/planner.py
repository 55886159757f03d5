"""A test analyser that cuts long videos into segments as the pipeline does, without models."""
from __future__ import annotations

from wildswarm.pipeline import segments
from wildswarm.testing import SleepAnalyzer


class Planner(SleepAnalyzer):
    """Cuts videos as the pipeline does (its plan and segment folder), without models."""

    def plan(self, info, workers=None):
        s = self.settings
        return segments.plan(info.sampled(s.fps), s.fps, segment_seconds=s.segment_seconds,
                             overlap_seconds=s.segment_overlap_seconds, batch_size=s.batch_size, workers=workers)

    def prepare_segments(self, video, out_root, name, seg_plan):
        return segments.prepare(out_root, name, "same video, same settings", seg_plan)
