"""The worker: take one job at a time from the queue, analyse it, record it, ack it.

Two parts:

* :class:`JobRunner` does one job on the shared filesystem, with no broker:
  record it as running, analyse the video (progress into the job record, at
  most once a second), record the outcome, move the input to ``input_done/`` or
  ``input_failed/``, log each step to ``logs/<node>.log``. It returns an
  :class:`Outcome` that says what to tell the broker.
* :class:`Worker` consumes the queue with prefetch 1. The analysis runs in a
  thread while the main thread keeps the connection's I/O (heartbeats) going;
  the thread hands the ack back through ``add_callback_threadsafe`` (pika's
  ``examples/basic_consumer_threaded.py``). The ack comes only after
  everything above is done, so a worker killed at any moment loses nothing.

Failures: a :class:`VideoError` is permanent (failed at once). Any other error
requeues the job until its attempt number reaches ``delivery_limit``, then it
fails for good. A malformed message goes to the dead-letter queue with its
reason. Redeliveries of finished jobs are acknowledged without work; one of a
job whose record another worker keeps alive (it lost only its connection) waits
for that worker; so each job is done once even when the broker delivers it twice.

SIGTERM/SIGINT: stop taking jobs; finish the current one within
``stop_grace_seconds`` or leave it unacknowledged to be delivered again.
Docker's ``stop_grace_period`` must exceed it.
"""
from __future__ import annotations

import importlib
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Callable, Protocol

from wildswarm import metrics
from wildswarm.broker import Backoff, Broker, Delivery
from wildswarm.config import Settings
from wildswarm.errors import BrokerError, ConfigError, JobError, MessageError, VideoError
from wildswarm.jobs import Job, JobStatus, JobStore, KeepAlive, wait_while_alive
from wildswarm.layout import Layout, move_into, stem_of
from wildswarm.messages import JobMessage, utcnow

log = logging.getLogger(__name__)

PROGRESS_INTERVAL = 1.0   # seconds between progress writes to a job record
LEASE_TOUCH = 2.0         # a running job's record is touched this often ...
LEASE_STALE = 10.0        # ... so one unchanged this long belongs to a worker that is gone


class Analyzer(Protocol):
    """What the worker needs of :class:`~wildswarm.pipeline.run.Pipeline` (or a test aid)."""

    def analyze(self, video: Path, out_root: Path, *, name: str | None = None,
                progress: Callable[[int, int], None] | None = None): ...


class Outcome(str, Enum):
    DONE = "done"                # analysed; ack
    FAILED = "failed"            # failed for good, recorded; ack
    RETRIED = "retried"          # failed, attempts left; nack and requeue
    DUPLICATE = "duplicate"      # a redelivery of a finished job; ack
    SKIPPED = "skipped"          # a second message for a job running elsewhere; ack
    REJECTED = "rejected"        # malformed message; dead-lettered with the reason, ack
    INTERRUPTED = "interrupted"  # the worker stopped first; no ack, delivered again


class _Interrupted(BaseException):
    """Raised from the progress callback to stop an analysis (passes ``except Exception``)."""


def load_analyzer(settings: Settings) -> tuple[Analyzer, float]:
    """The analysing object and the seconds it took to load.

    The real :class:`~wildswarm.pipeline.run.Pipeline`, unless ``settings.analyzer``
    names a test aid (``module:Class``, e.g. ``wildswarm.testing:SleepAnalyzer``).
    """
    started = time.perf_counter()
    if settings.analyzer:
        module, _, attr = settings.analyzer.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr or "Analyzer")
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"WILDSWARM_ANALYZER={settings.analyzer!r}: {exc}") from None
        log.warning("using %s as analyser: a test/benchmark aid, NOT the real pipeline", settings.analyzer)
        analyzer = factory(settings)
    else:
        from wildswarm.pipeline.run import Pipeline
        analyzer = Pipeline(settings)
    return analyzer, time.perf_counter() - started


@dataclass
class JobRunner:
    """Does one job on the shared filesystem; knows nothing of the broker."""

    settings: Settings
    analyzer: Analyzer
    layout: Layout = field(init=False)
    store: JobStore = field(init=False)

    def __post_init__(self) -> None:
        self.layout = Layout(self.settings.data).ensure()
        self.store = JobStore(self.layout)
        self.node = self.settings.node

    def note(self, job: Job, line: str) -> None:
        self.layout.log(self.node, f"job {job.id} {job.input_name}: {line}")

    def run(self, msg: JobMessage, attempt: int = 1, redelivered: bool = False,
            cancel: threading.Event | None = None) -> Outcome:
        cancel = cancel or threading.Event()
        limit = max(1, int(self.settings.delivery_limit))
        job, _ = self.store.create(Job(id=msg.job_id, input_name=msg.input_name))
        if job.status is JobStatus.RUNNING and job.node != self.node:
            if attempt == 1 and not redelivered:
                self.note(job, f"another message for a job running on {job.node}; dropped")
                return Outcome.SKIPPED
            # Delivered again while its record says it runs elsewhere: that worker died, or only lost
            # its broker connection and is still at it. Wait for it while its record stays alive.
            self.note(job, f"delivered again while {job.node} has it; waiting while its record is alive")
            job = wait_while_alive(self.store, job, LEASE_STALE, cancel) or self.store.get(job.id)
            if cancel.is_set():
                return Outcome.INTERRUPTED
        if job.status.finished:
            self._tidy(job)
            self.note(job, f"delivered again after it {job.status.value}; acknowledged without work")
            return Outcome.DUPLICATE
        src = self.layout.inside(self.layout.input / msg.input_name)
        if not src.is_file():
            return self._fail(job, f"input file {msg.input_name} is not in input/")
        if attempt > limit:
            return self._fail(job, f"delivered {attempt} times; the earlier {attempt - 1} never finished "
                                   "(worker stopped, crashed or lost its connection)")
        name = stem_of(msg.input_name)
        job = self.store.update(job.id, status=JobStatus.RUNNING, node=self.node, attempts=attempt,
                                started_at=utcnow(), finished_at=None, error=None, frames_done=0)
        self.note(job, f"started (attempt {attempt} of {limit})")
        if attempt > 1:
            from wildswarm.pipeline.outputs import clean_partial  # what a dead attempt left
            clean_partial(self.layout.output, name)
        try:
            with KeepAlive(self.store, job.id, LEASE_TOUCH):
                result = self.analyzer.analyze(src, self.layout.output, name=name,
                                               progress=self._progress(job, cancel))
        except _Interrupted:
            return Outcome.INTERRUPTED
        except VideoError as exc:
            return self._fail(job, str(exc))
        except Exception as exc:  # PipelineError, or a bug: retried a bounded number of times
            if cancel.is_set():
                return Outcome.INTERRUPTED
            log.exception("job %s failed on attempt %d", job.id, attempt)
            reason = f"{type(exc).__name__}: {exc}"
            if attempt >= limit:
                return self._fail(job, f"{reason} (attempt {attempt} of {limit}, giving up)")
            self.store.update(job.id, status=JobStatus.QUEUED, error=f"attempt {attempt} failed: {reason}")
            self.note(job, f"attempt {attempt} failed, will retry: {reason}")
            return Outcome.RETRIED
        for stage, seconds in (result.timings or {}).items():
            metrics.STAGE_DURATION.labels(metrics.stage_label(stage)).observe(seconds)
        metrics.FRAMES_ANALYSED.inc(result.frames_analysed)
        job = self.store.update(job.id, status=JobStatus.DONE, frames_done=result.frames_analysed,
                                frames_total=result.frames_analysed, finished_at=utcnow(), error=None,
                                output=result.name, outputs=sorted(result.files), untrained=bool(result.untrained),
                                timings={k: round(v, 3) for k, v in (result.timings or {}).items()})
        self.note(job, f"results in output/{result.name}/ ({result.frames_analysed} frames)")
        moved = move_into(src, self.layout.input_done, job.id[:8])
        self.note(job, f"done; input moved to input_done/{moved.name if moved else '?'}")
        return Outcome.DONE

    def interrupted(self, job_id: str) -> None:
        """Record that this worker stopped before finishing ``job_id`` (delivered again)."""
        job = self.store.get(job_id)
        if job.status is JobStatus.RUNNING and job.node == self.node:
            job = self.store.update(job_id, status=JobStatus.QUEUED,
                                    error=f"interrupted: worker {self.node} stopped; will be delivered again")
            self.note(job, "interrupted by worker shutdown; left to be delivered again")

    def _progress(self, job: Job, cancel: threading.Event) -> Callable[[int, int], None]:
        last = [0.0, -1]   # time of the last write, last quarter logged

        def progress(done: int, total: int) -> None:
            if cancel.is_set():
                raise _Interrupted()
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL or (done == 0 and last[1] < 0):
                last[0] = now
                try:      # best effort: a missed progress write must not fail the job
                    self.store.update(job.id, frames_done=done, frames_total=total)
                except (JobError, OSError) as exc:
                    log.warning("job %s: progress not recorded: %s", job.id, exc)
            quarter = 4 * done // total if total else 0
            if 0 < quarter < 4 and quarter > last[1]:
                last[1] = quarter
                self.note(job, f"{25 * quarter}% ({done}/{total} frames)")
            elif last[1] < 0:
                last[1] = 0
        return progress

    def _fail(self, job: Job, reason: str) -> Outcome:
        current = self.store.get(job.id)
        if current.status is JobStatus.DONE:      # another delivery finished it meanwhile
            return Outcome.DUPLICATE
        job = self.store.update(job.id, status=JobStatus.FAILED, error=reason, finished_at=utcnow(),
                                node=self.node)
        moved = move_into(self.layout.input / job.input_name, self.layout.input_failed, job.id[:8])
        where = f"; input moved to input_failed/{moved.name}" if moved else ""
        self.note(job, f"failed: {reason}{where}")
        return Outcome.FAILED

    def _tidy(self, job: Job) -> None:
        """Move a finished job's input out of input/ if a crash left it there."""
        src = self.layout.input / job.input_name
        if src.is_file():
            dest = self.layout.input_done if job.status is JobStatus.DONE else self.layout.input_failed
            move_into(src, dest, job.id[:8])


@dataclass
class _Current:
    delivery: Delivery
    job_id: str
    thread: threading.Thread | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)


class Worker:
    """Consumes the job queue, one job at a time, until stopped."""

    def __init__(self, settings: Settings, analyzer: Analyzer, *, broker: Broker | None = None):
        self.settings = settings
        self.runner = JobRunner(settings, analyzer)
        self.broker = broker or Broker(settings)
        self.stopping = threading.Event()
        self.current: _Current | None = None
        self.handled = 0

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def stop(self, *_args) -> None:
        self.stopping.set()

    def _say(self, line: str) -> None:
        log.info(line)
        self.runner.layout.log(self.settings.node, line)

    def run(self) -> int:
        s = self.settings
        self._say(f"worker up: queue {s.queue} on {s.broker_host}:{s.broker_port}, pid {os.getpid()}")
        backoff = Backoff()
        while not self.stopping.is_set():
            if not self.broker.connect_retrying(self.stopping.is_set, self._connect_failed, backoff):
                break
            try:
                self.broker.consume(self._on_delivery, prefetch=1)
                backoff.reset()
                while not self.stopping.is_set():
                    self.broker.process(0.5)
                self.broker.cancel()
                self._drain()
            except BrokerError as exc:
                metrics.BROKER_RECONNECTS.labels("worker").inc()
                self._say(f"broker connection lost ({exc}); reconnecting")
                self.broker.close()
                self._wait_without_connection()
        self.broker.close()
        self._say(f"worker stopped after {self.handled} job(s)")
        return 0

    def _connect_failed(self, exc: BrokerError, pause: float) -> None:
        log.warning("%s; retrying in %.1f s", exc, pause)

    # --- on the connection's thread ---------------------------------------------
    def _on_delivery(self, delivery: Delivery) -> None:
        try:
            msg = JobMessage.decode(delivery.body)
        except MessageError as exc:
            reason = f"malformed message: {exc}"
            self.broker.dead_letter(delivery, reason)
            self.broker.ack(delivery)
            metrics.JOBS.labels(Outcome.REJECTED.value).inc()
            self._say(f"message {delivery.message_id or delivery.tag} dead-lettered: {reason}")
            return
        if self.stopping.is_set() or self.current is not None:
            self.broker.requeue(delivery)
            return
        current = _Current(delivery, msg.job_id)
        current.thread = threading.Thread(target=self._work, args=(current, msg), daemon=True,
                                          name=f"job-{msg.job_id}")
        self.current = current
        current.thread.start()

    def _settle(self, current: _Current, outcome: Outcome) -> None:
        try:
            if outcome is Outcome.RETRIED:
                self.broker.requeue(current.delivery)
            elif outcome is not Outcome.INTERRUPTED:
                self.broker.ack(current.delivery)
        except BrokerError as exc:
            log.warning("job %s: %s", current.job_id, exc)
        finally:
            if self.current is current:
                self.current = None

    # --- on the job's thread -------------------------------------------------------
    def _work(self, current: _Current, msg: JobMessage) -> None:
        started = time.perf_counter()
        metrics.JOBS_IN_PROGRESS.inc()
        try:
            outcome = self.runner.run(msg, current.delivery.attempt, current.delivery.redelivered, current.cancel)
        except (JobError, OSError) as exc:   # shared filesystem trouble: give it back
            log.exception("job %s: cannot record or move it", msg.job_id)
            self.runner.layout.log(self.settings.node, f"job {msg.job_id}: error, requeued: {exc}")
            outcome = Outcome.RETRIED
        except BaseException:
            log.exception("job %s: unexpected error", msg.job_id)
            outcome = Outcome.RETRIED
        finally:
            metrics.JOBS_IN_PROGRESS.dec()
        metrics.JOBS.labels(outcome.value).inc()
        metrics.JOB_DURATION.labels(outcome.value).observe(time.perf_counter() - started)
        self.handled += 1
        try:
            self.broker.call_threadsafe(partial(self._settle, current, outcome))
        except BrokerError:
            pass   # the connection is gone; the broker delivers the job again
        finally:
            current.finished.set()

    # --- stopping and reconnecting ---------------------------------------------------
    def _drain(self) -> None:
        """Stopping: let the current job finish within the grace period, else leave it."""
        current = self.current
        if current is None:
            return
        self._say(f"stopping: waiting up to {self.settings.stop_grace_seconds:g} s for job {current.job_id}")
        deadline = time.monotonic() + self.settings.stop_grace_seconds
        try:
            while not current.finished.is_set() and time.monotonic() < deadline:
                self.broker.process(0.2)
            self.broker.process(0)      # run the ack callback
        except BrokerError:
            current.finished.wait(max(0.0, deadline - time.monotonic()))
        if not current.finished.is_set():
            self._interrupt(current)

    def _wait_without_connection(self) -> None:
        """The connection is gone: wait for the running job before consuming again."""
        current = self.current
        if current is None:
            return
        while not current.finished.wait(0.5):
            if self.stopping.is_set():
                if not current.finished.wait(self.settings.stop_grace_seconds):
                    self._interrupt(current)
                break
        self.current = None

    def _interrupt(self, current: _Current) -> None:
        current.cancel.set()
        current.thread.join(timeout=5)
        metrics.JOBS.labels(Outcome.INTERRUPTED.value).inc()
        try:
            self.runner.interrupted(current.job_id)
        except (JobError, OSError) as exc:
            log.warning("job %s: cannot record the interruption: %s", current.job_id, exc)
        self._say(f"job {current.job_id} left unacknowledged; the broker delivers it again")
        self.current = None
