"""One job on one worker: claim it, analyse it under a lease, record the outcome, move the input.

:class:`JobRunner` knows nothing of the broker. It returns a :class:`Verdict`
that says what the worker should tell the broker; every state change goes
through the job store's named transitions:

* **claim** first, in one SQL statement: exactly one worker wins a job. A
  finished job is never claimed again, so a second message for it is
  acknowledged without work; a message for a job another worker holds under a
  live lease waits that lease out on a delay queue (that worker may be dead).
* While analysing, a :class:`Lease` thread renews the claim; if it is lost
  (another worker took the job after this one stopped answering), the
  analysis stops and nothing is recorded by this worker.
* A :class:`~wildswarm.errors.VideoError` fails the job at once; any other
  error gives it back with a growing delay, until ``delivery_limit`` attempts
  have been made; then it fails for good.

The shared filesystem may fail at any step (full, read-only): the outcome is
recorded in the job store regardless, moving the input is best effort (the
producer tidies an input left behind), and node-log lines never fail a job.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

from wildswarm import metrics
from wildswarm.broker import retry_delay
from wildswarm.config import Settings
from wildswarm.errors import JobStoreError, JobStoreUnavailable, ModelError, VideoError
from wildswarm.jobs import Job, JobStatus, JobStore
from wildswarm.jobs.findings import findings_of
from wildswarm.layout import Layout, move_into, remove_partial_results, stem_of
from wildswarm.lease import Lease
from wildswarm.messages import JobMessage
from wildswarm.pipeline.cache import Fixed, Loaded, PipelineCache
from wildswarm.profiles import ProfileError
from wildswarm.segment_runs import SegmentRuns
from wildswarm.verdict import Analyzer, Outcome, Verdict

__all__ = ["Analyzer", "JobRunner", "Lease", "Outcome", "Verdict"]

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 1.0   # seconds between progress writes to the job store


class _Stop(BaseException):
    """Raised from the progress callback to stop an analysis (passes ``except Exception``)."""


class JobRunner(SegmentRuns):
    """Does one job on the shared filesystem; knows nothing of the broker."""

    def __init__(self, settings: Settings, analyzer: "Analyzer | PipelineCache", store: JobStore,
                 stopping: threading.Event | None = None):
        """``analyzer``: a :class:`~wildswarm.pipeline.cache.PipelineCache` (a pipeline per analysis
        profile, as a worker has), or one analyser for every job whatever its profile."""
        self.settings, self.store = settings, store
        self.analyzers = analyzer if isinstance(analyzer, (PipelineCache, Fixed)) else Fixed(analyzer)
        self.stopping = stopping or threading.Event()
        self.layout = Layout(settings.data)
        self.node = settings.node
        self.owner = f"{settings.node}/{uuid.uuid4().hex[:12]}"   # this process: a restarted one is another
        self.limit = max(1, int(settings.delivery_limit))
        self.frames = 0          # frames analysed by this runner, as its jobs report progress (the heartbeat's rate)

    def note(self, job: Job, line: str) -> None:
        self.layout.log(self.node, f"job {job.id} {job.input_name}: {line}")

    def call(self, fn: Callable, *args, **kwargs):
        """A job-store transition, tried again while the store is unreachable (until the worker stops).

        A worker that has analysed a video keeps its result until the store
        answers again, rather than giving the job up: nothing to redo then.
        """
        pause = 0.5
        while True:
            try:
                return fn(*args, **kwargs)
            except JobStoreUnavailable as exc:
                if self.stopping.is_set():
                    raise
                log.warning("%s; trying again in %.0f s", exc, pause)
                if self.stopping.wait(pause):
                    raise
                pause = min(pause * 2, 15.0)

    def run(self, msg: JobMessage, redelivered: bool = False, cancel: threading.Event | None = None,
            workers: int | None = None) -> Verdict:
        """Do the job of ``msg``; ``workers``: how many take jobs off the queue now (a long video is cut
        into a multiple of them), None when not known."""
        cancel = cancel or threading.Event()
        job = self.call(self.store.claim, msg.job_id, self.owner, self.node)
        if job is None:
            return self._not_claimed(msg, redelivered, cancel)
        if job.attempts > self.limit:
            return self._fail(job, f"claimed {job.attempts} times; the earlier {job.attempts - 1} never finished "
                                   "(worker stopped, crashed or lost its connection)")
        src = self.layout.input / job.input_name
        if not src.is_file():
            return self._fail(job, f"input file {job.input_name} is not in input/")
        video = job
        if job.is_segment:                      # analysed with its video's profile and plan
            video = self.call(self.store.find, job.parent_id)
            if video is None or not video.plan:
                return self._fail(job, "its video's job has no segment plan")
        loaded, verdict = self._leased(job, cancel, lambda: self.analyzers.get(video.profile))
        if verdict is not None:
            return verdict
        if job.is_segment:
            return self._segment(job, video, src, loaded, cancel)
        try:
            seg_plan = self._plan(job, src, workers, loaded.analyzer)
        except VideoError as exc:
            return self._fail(job, str(exc))
        if seg_plan is not None:
            return self._split(job, src, seg_plan, loaded, cancel)
        self.note(job, f"started (attempt {job.attempts} of {self.limit})"
                       + (f", profile {loaded.profile}" if loaded.profile else ""))
        name = stem_of(job.input_name)
        # what a dead attempt left, on any attempt: a person's retry counts the attempts from 1 again
        remove_partial_results(self.layout.output, name)
        result, verdict = self._leased(job, cancel, lambda: loaded.analyzer.analyze(
            src, self.layout.output, name=name, progress=self._progress(job, cancel)))
        return verdict or self._finish(job, src, result, loaded)

    def _leased(self, job: Job, cancel: threading.Event, work: Callable[[], object]) -> tuple[object, Verdict | None]:
        """``work()`` while this worker renews ``job``'s lease: (its result, None), or (None, the verdict)
        when it was stopped, the video is bad, it failed (tried again, a bounded number of times), or
        the lease was lost."""
        try:
            with Lease(self.store, job.id, self.owner, cancel.set) as lease:
                result = work()
        except _Stop:
            return None, self._stopped(job, lease)
        except (VideoError, ProfileError, ModelError) as exc:   # the input, its profile or the weights: for good
            return None, self._fail(job, str(exc))
        except Exception as exc:  # PipelineError, the filesystem, or a bug: tried again a bounded number of times
            if cancel.is_set():
                return None, self._stopped(job, lease)
            log.exception("job %s failed on attempt %d", job.id, job.attempts)
            return None, self._retry(job, f"{type(exc).__name__}: {exc}")
        if lease.lost.is_set():
            return None, self._stopped(job, lease)
        return result, None

    def _end_split(self, job: Job, cancel: threading.Event) -> Verdict | None:
        """The step a stopped worker left undone on ``job``'s long video, taken by the message that comes
        again (the segment's, or the video's after its split): a video whose segments are all done is merged,
        one whose segment failed for good fails. Without this, a worker killed (or cut off from the store)
        between recording a segment and that step left the video running for ever, held by segments that
        had all ended. None: nothing of the kind to do (``claim_merge`` and ``fail_split`` match only a
        video still held by its segments)."""
        if not ((job.is_segment and job.status.finished) or (job.segments and job.plan)):
            return None
        video = self.call(self.store.find, job.parent_id) if job.is_segment else job
        if video is None or video.status is not JobStatus.RUNNING or not video.plan:
            return None
        if job.is_segment and job.status is JobStatus.FAILED:
            failed = self.call(self.store.fail_split, video.id, f"segment {job.segment}: {job.error}")
            if failed is None:
                return None
            self.note(job, f"segment {job.segment} had failed; its video fails with it")
            return self._failed_video(failed, f"segment {job.segment}: {job.error}")
        merging = self.call(self.store.claim_merge, video.id, self.owner, self.node)
        if merging is None:
            return None
        self.note(video, "every segment done, its merge left undone; merging")
        loaded, verdict = self._leased(merging, cancel, lambda: self.analyzers.get(video.profile))
        if verdict is not None:
            return verdict
        from wildswarm.pipeline.segments import SegmentPlan
        return self._merge(merging, self.layout.input / video.input_name, SegmentPlan(**video.plan), loaded, cancel)

    def _not_claimed(self, msg: JobMessage, redelivered: bool, cancel: threading.Event) -> Verdict:
        job = self.call(self.store.find, msg.job_id)
        if job is None:
            return Verdict(Outcome.REJECTED, reason=f"no job {msg.job_id} in the job store")
        ended = self._end_split(job, cancel)
        if ended is not None:
            return ended
        if job.is_segment and job.status is JobStatus.QUEUED:
            video = self.call(self.store.find, job.parent_id)
            if video is None or video.status.finished:
                self.note(job, f"segment {job.segment} of a video that is {video.status.value if video else 'gone'}; "
                               "acknowledged without work")
                return Verdict(Outcome.DUPLICATE)
        if job.status.finished:
            self._tidy(job)
            self.note(job, f"another message after it {job.status.value}; acknowledged without work")
            return Verdict(Outcome.DUPLICATE)
        if job.status is JobStatus.RUNNING and job.segments and job.plan:
            self.note(job, "another message while its segments run; acknowledged without work")
            return Verdict(Outcome.SKIPPED)
        if job.status is JobStatus.RUNNING and not redelivered:
            self.note(job, f"another message while {job.node} runs it; dropped")
            return Verdict(Outcome.SKIPPED)
        # Delivered again while another worker's lease lives (that worker may have died), or the job is
        # waiting out a retry delay: look again once that has passed.
        self.note(job, f"delivered again while {job.status.value} on {job.node or 'no node'}; looking again later")
        return Verdict(Outcome.DEFERRED, delay=self.store.lease_seconds)

    def _progress(self, job: Job, cancel: threading.Event) -> Callable[[int, int], None]:
        last = [0.0, -1, 0]   # time of the last write, last quarter logged, frames done at the last call

        def progress(done: int, total: int) -> None:
            if cancel.is_set():
                raise _Stop()
            if done > last[2]:
                self.frames += done - last[2]
                last[2] = done
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL or (done == 0 and last[1] < 0):
                last[0] = now
                try:      # best effort: a missed progress write must not fail the job
                    if not self.store.progress(job.id, self.owner, done, total):
                        cancel.set()
                        raise _Stop()
                except JobStoreError as exc:
                    log.warning("job %s: progress not recorded: %s", job.id, exc)
            quarter = 4 * done // total if total else 0
            if 0 < quarter < 4 and quarter > last[1]:
                last[1] = quarter
                self.note(job, f"{25 * quarter}% ({done}/{total} frames)")
            elif last[1] < 0:
                last[1] = 0
        return progress

    def _finish(self, job: Job, src: Path, result, loaded: Loaded) -> Verdict:
        timings = {k: round(v, 3) for k, v in (result.timings or {}).items()}
        done = self.call(self.store.finish, job.id, self.owner, output=result.name, outputs=list(result.files),
                         frames=result.frames_analysed, untrained=bool(result.untrained), timings=timings,
                         profile=loaded.profile, profile_settings=loaded.settings,
                         findings=findings_of(getattr(result, "summary", None) or {}))
        if done is None:
            if self._was_cancelled(job):
                self.note(job, f"cancelled as it finished; its results stay in output/{result.name}/")
                return Verdict(Outcome.CANCELLED)
            self.note(job, "finished, but another worker had taken the job over meanwhile; its record stands")
            return Verdict(Outcome.LOST)
        for stage, seconds in timings.items():
            metrics.STAGE_DURATION.labels(metrics.stage_label(stage)).observe(seconds)
        metrics.FRAMES_ANALYSED.inc(result.frames_analysed)
        moved = self._move(src, self.layout.input_done, job)
        self.note(done, f"done: results in output/{result.name}/ ({result.frames_analysed} frames); "
                        f"input moved to input_done/{moved}")
        return Verdict(Outcome.DONE)

    def _fail(self, job: Job, reason: str) -> Verdict:
        failed = self.call(self.store.fail, job.id, self.owner, reason)
        if failed is None:
            return Verdict(Outcome.LOST)
        if job.is_segment:                 # its video cannot be whole without it
            metrics.SEGMENTS.labels("failed").inc()
            video = self.call(self.store.fail_split, job.parent_id, f"segment {job.segment}: {reason}")
            self.note(job, f"segment {job.segment} failed: {reason}")
            return Verdict(Outcome.FAILED) if video is None else self._failed_video(video, reason)
        return self._failed_video(failed, reason)

    def _failed_video(self, failed: Job, reason: str) -> Verdict:
        job = failed
        moved = self._move(self.layout.input / job.input_name, self.layout.input_failed, job)
        self.note(failed, f"failed: {reason}; input moved to input_failed/{moved}")
        return Verdict(Outcome.FAILED)

    def _retry(self, job: Job, reason: str) -> Verdict:
        if job.attempts >= self.limit:
            return self._fail(job, f"{reason} (attempt {job.attempts} of {self.limit}, giving up)")
        delay = retry_delay(self.settings, job.attempts)
        if self.call(self.store.requeue, job.id, self.owner, f"attempt {job.attempts} failed: {reason}", delay) is None:
            return Verdict(Outcome.LOST)
        self.note(job, f"attempt {job.attempts} failed, tried again in {delay} s: {reason}")
        return Verdict(Outcome.RETRIED, delay=delay, message=JobMessage.for_job(job))

    def _was_cancelled(self, job: Job) -> bool:
        try:
            current = self.store.find(job.id)
        except JobStoreError:
            return False
        return current is not None and current.status is JobStatus.CANCELLED

    def _stopped(self, job: Job, lease: Lease) -> Verdict:
        if self._was_cancelled(job):      # the job is no longer this worker's: a person cancelled it
            if not job.is_segment:
                remove_partial_results(self.layout.output, stem_of(job.input_name))
            self.note(job, ("segment " + str(job.segment) + ": " if job.is_segment else "")
                      + "cancelled while it ran; stopped, nothing recorded")
            return Verdict(Outcome.CANCELLED)
        taken = "another worker took the job over (this one stopped answering); stopped"
        if lease.lost.is_set():
            self.note(job, taken)
            return Verdict(Outcome.LOST)
        try:
            given_back = self.store.requeue(job.id, self.owner, f"interrupted: worker {self.node} stopped")
        except JobStoreError as exc:      # its lease expires and another worker takes it
            log.warning("job %s: interruption not recorded: %s", job.id, exc)
            return Verdict(Outcome.INTERRUPTED)
        if given_back is None:            # no longer this worker's: a progress write saw the take-over first
            self.note(job, taken)
            return Verdict(Outcome.LOST)
        self.note(job, "interrupted by worker shutdown; left to be delivered again")
        return Verdict(Outcome.INTERRUPTED)

    def _move(self, src: Path, dest_dir: Path, job: Job) -> str:
        """Move an input on; best effort (the job's outcome is already recorded): its new name, or why not."""
        try:
            moved = move_into(src, dest_dir, job.id[:8])
        except OSError as exc:
            log.warning("job %s: input not moved: %s", job.id, exc)
            return f"? (not moved: {exc.strerror or exc}; the producer moves it later)"
        return moved.name if moved else "?"

    def _tidy(self, job: Job) -> None:
        """Move a finished job's input out of input/ if a crash left it there (a segment's input is its
        video's, still needed by its other segments: never)."""
        if job.is_segment:
            return
        if job.status is JobStatus.DONE and job.segments and job.output:   # merged; its merger died after
            self._remove_segments(job.output)
        src = self.layout.input / job.input_name
        if src.is_file() and not src.is_symlink():
            other = self.call(self.store.unfinished_named, job.input_name)
            if other is not None and other.id != job.id:     # the name's file is now another job's video
                return
            self._move(src, self.layout.input_done if job.status is JobStatus.DONE else self.layout.input_failed, job)
