"""A long video on the workers: split into segment jobs, a segment analysed, planned again, merged once.

The worker that takes a long video's job plans its segments and hands them to segment jobs, whose
messages any worker takes; the worker that finishes the last one wins the merge (the job store's
``claim_merge``: exactly one does). :class:`SegmentRuns` is part of :class:`~wildswarm.runner.JobRunner`.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from wildswarm import metrics
from wildswarm.errors import PlanChanged
from wildswarm.jobs import Job
from wildswarm.layout import remove_partial_results, stem_of
from wildswarm.lease import Lease
from wildswarm.messages import JobMessage
from wildswarm.pipeline.cache import Loaded
from wildswarm.verdict import Outcome, Verdict

log = logging.getLogger(__name__)

MAX_REPLANS = 10          # a long video's segments planned again at most this often, then it fails


class SegmentRuns:
    """The long-video steps of :class:`~wildswarm.runner.JobRunner` (whose store, layout, owner, node,
    ``call``, ``note``, ``_leased``, ``_progress``, ``_finish``, ``_fail`` and ``_retry`` they use)."""

    def _plan(self, job: Job, src: Path, workers: int | None, analyzer):
        """The segment plan of a long video, or None (a short one, or an analyser without segments).
        A video split before (a retry, a split cut short) keeps its plan, and so its finished segments,
        whatever the number of workers now."""
        planner = getattr(analyzer, "plan", None)
        if planner is None:
            return None
        if job.plan:
            from wildswarm.pipeline.segments import SegmentPlan
            return SegmentPlan(**job.plan)
        from wildswarm.pipeline.video import probe
        return planner(probe(src), workers=workers)

    def _split(self, job: Job, src: Path, seg_plan, loaded: Loaded, cancel: threading.Event) -> Verdict:
        """Hand a long video to its segment jobs: their messages go on the queue, any worker takes one."""
        from wildswarm.pipeline import segments
        name = stem_of(job.input_name)
        try:
            where = loaded.analyzer.prepare_segments(src, self.layout.output, name, seg_plan)
            finished = [segments.finished(where, k) for k in range(seg_plan.count)]
        except OSError as exc:
            return self._retry(job, f"cannot prepare its segments: {exc}")
        plan = {"total": seg_plan.total, "length": seg_plan.length, "overlap": seg_plan.overlap}
        todo = self.call(self.store.split, job.id, self.owner, plan, finished)
        if todo is None:
            return Verdict(Outcome.LOST)
        metrics.SEGMENTS.labels("planned").inc(len(todo))
        self.note(job, f"split into {seg_plan.count} segments of {seg_plan.length} frames "
                       f"({seg_plan.count - len(todo)} already done)")
        if todo:
            return Verdict(Outcome.SPLIT, messages=tuple(JobMessage.for_job(c) for c in todo))
        video = self.call(self.store.claim_merge, job.id, self.owner, self.node)
        return self._merge(video, src, seg_plan, loaded, cancel) if video is not None else Verdict(Outcome.SKIPPED)

    def _segment(self, job: Job, video: Job, src: Path, loaded: Loaded, cancel: threading.Event) -> Verdict:
        """Analyse one segment of a long video; the worker that finishes the last one merges them."""
        from wildswarm.pipeline.segments import SegmentPlan
        seg_plan = SegmentPlan(**video.plan)
        name = stem_of(video.input_name)
        first, stop = seg_plan.owned(job.segment)
        total = (stop if stop is not None else seg_plan.total) - first
        checker = getattr(loaded.analyzer, "check_segments", None)
        try:
            if checker is not None:
                checker(src, self.layout.output, name, seg_plan)
        except PlanChanged as exc:
            return self._replan(job, video, src, seg_plan, loaded, exc.differs)
        except OSError as exc:
            return self._retry(job, f"cannot read its video's segment plan: {exc}")
        self.note(job, f"segment {job.segment + 1} of {seg_plan.count} started (attempt {job.attempts})")
        progress = self._progress(job, cancel)
        frames, verdict = self._leased(job, cancel, lambda: loaded.analyzer.analyze_segment(
            src, self.layout.output, name, job.segment, seg_plan, report=lambda n: progress(min(n, total), total)))
        if verdict is not None:
            return verdict
        owned = min(frames, total) if stop is not None else frames
        done = self.call(self.store.finish, job.id, self.owner, output=name, outputs=[], frames=owned,
                         untrained=bool(getattr(loaded.analyzer, "untrained", False)), timings={})
        if done is not None:
            metrics.SEGMENTS.labels("done").inc()
            self.note(job, f"segment {job.segment + 1} of {seg_plan.count} done ({owned} frames)")
        # Claimed even when the finish matched nothing: the store may have recorded it and lost its answer,
        # or another worker's record stands; either way the merge is due once every segment is done.
        merging = self.call(self.store.claim_merge, video.id, self.owner, self.node)
        if merging is None:
            return Verdict(Outcome.DONE if done is not None else Outcome.LOST)
        return self._merge(merging, src, seg_plan, loaded, cancel)

    def _replan(self, job: Job, video: Job, src: Path, seg_plan, loaded: Loaded, differs: str) -> Verdict:
        """``job``'s video was planned under another key than this worker's: a rolling update (a new
        image, new weights or new settings) left workers of both kinds, or one node differs. A result
        made of both kinds' segments would not be one analysis, so this worker plans the video again
        under its own key (its segments on disk are dropped) and queues every segment again; the
        attempts of none are counted. Workers that disagree for good would plan it back and forth:
        after ``MAX_REPLANS`` the video fails, saying what differs."""
        name = stem_of(video.input_name)
        if video.replans >= MAX_REPLANS:
            return self._fail(job, f"its segments were planned {video.replans + 1} times by workers that "
                                   f"disagree ({differs}); give every worker the same version, weights and settings")
        try:
            from wildswarm.pipeline import segments
            where = loaded.analyzer.prepare_segments(src, self.layout.output, name, seg_plan)
            finished = [segments.finished(where, k) for k in range(seg_plan.count)]
        except OSError as exc:
            return self._retry(job, f"cannot plan its video's segments again: {exc}")
        todo = self.call(self.store.replan, video.id, job.id, self.owner, finished)
        if todo is None:
            return Verdict(Outcome.LOST)
        metrics.SEGMENTS.labels("replanned").inc(len(todo))
        self.note(video, f"segments planned again by {self.node}, as planned under other settings ({differs}); "
                         f"{len(todo)} of {seg_plan.count} queued again")
        return Verdict(Outcome.SPLIT, messages=tuple(JobMessage.for_job(c) for c in todo))

    def _merge(self, video: Job, src: Path, seg_plan, loaded: Loaded, cancel: threading.Event) -> Verdict:
        """Every segment is done and this worker won the merge: the video's result, as one run's."""
        self.note(video, f"merging its {seg_plan.count} segments")
        name = stem_of(video.input_name)
        remove_partial_results(self.layout.output, name)       # what a merger killed midway left
        try:
            with Lease(self.store, video.id, self.owner, cancel.set) as lease:
                result = loaded.analyzer.merge(src, self.layout.output, name, seg_plan)
        except Exception as exc:
            metrics.MERGES.labels("failed").inc()
            if lease.lost.is_set():
                return Verdict(Outcome.LOST)
            log.exception("job %s: merge failed", video.id)
            return self._retry(video, f"merge failed: {type(exc).__name__}: {exc}")
        metrics.MERGES.labels("done").inc()
        verdict = self._finish(video, src, result, loaded)
        if verdict.outcome is Outcome.DONE:     # recorded: the segments are no longer needed
            self._remove_segments(name)
        return verdict

    def _remove_segments(self, name: str) -> None:
        from wildswarm.pipeline import segments
        segments.remove(self.layout.output, name)
