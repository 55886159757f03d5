"""The worker: take one message at a time from the queue, run its job, settle the delivery.

:class:`Worker` consumes the job queue with prefetch 1. The job runs in a
thread (:class:`~wildswarm.runner.JobRunner`: claim, analyse under a lease,
record, move the input) while the main thread keeps the connection's I/O
(heartbeats) going; the thread hands the settlement back through
``add_callback_threadsafe`` (pika's ``examples/basic_consumer_threaded.py``).

Every path settles the delivery, whatever failed: the job thread catches
everything and always hands back an outcome. The ack comes only after the
outcome is recorded, so a worker killed at any moment loses nothing: its
delivery goes back to the queue, and its lease expires.

Retries back off: a retriable failure (and a message for a job another worker
may still hold) is published again to a delay queue and the delivery acked,
instead of being nacked straight back. A malformed message, or one with no
job behind it, goes to the dead-letter queue with its reason. A message that
reaches a stopping worker is handed back the same way, uncounted: a quorum
queue counts each nack, and a message that met a few stopping workers in a row
(a rolling update) would be dead-lettered without having run.

Health: :meth:`Worker.stalled_seconds` is how long the job loop has been
unable to take work (0 while it can); the container's healthcheck reads it
from ``/metrics`` and turns the task unhealthy when it stays up.

SIGTERM/SIGINT: stop taking jobs; finish the current one within
``stop_grace_seconds`` or give it back (delivered again). Docker's
``stop_grace_period`` must exceed it.
"""
from __future__ import annotations

import importlib
import logging
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

from wildswarm import __version__, metrics
from wildswarm.broker import Backoff, Broker, Delivery
from wildswarm.config import Settings
from wildswarm.errors import JobStoreError, BrokerError, ConfigError, MessageError
from wildswarm.jobs import JobStore
from wildswarm.jobs.workers import Workers
from wildswarm.messages import JobMessage
from wildswarm.pipeline.cache import PipelineCache
from wildswarm.runner import Analyzer, JobRunner, Outcome, Verdict

log = logging.getLogger(__name__)

UNEXPECTED_PAUSE = 5.0    # seconds before a delivery whose job hit a bug goes back to the queue
STALL_AFTER = 30.0        # a job loop that cannot take work this long is reported stalled


def load_analyzer(settings: Settings) -> tuple[PipelineCache, float]:
    """The worker's pipelines, one per analysis profile in use, with the default profile's loaded
    first; and the seconds that took.

    Real :class:`~wildswarm.pipeline.run.Pipeline` s, unless ``settings.analyzer`` names a test aid
    (``module:Class``, e.g. ``wildswarm.testing:SleepAnalyzer``), built from a profile's settings.
    """
    started = time.perf_counter()
    if settings.analyzer:
        module, _, attr = settings.analyzer.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr or "Analyzer")
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"WILDSWARM_ANALYZER={settings.analyzer!r}: {exc}") from None
        log.warning("using %s as analyser: a test/benchmark aid, NOT the real pipeline", settings.analyzer)
        cache = PipelineCache(settings, factory=factory)
    else:
        cache = PipelineCache(settings)
    cache.get(settings.profile)
    return cache, time.perf_counter() - started


def seen_before(delivery: Delivery) -> bool:
    """Whether this message was delivered before, or came back through a delay queue."""
    return delivery.redelivered or delivery.delivery_count > 0 or "x-death" in delivery.headers


@dataclass
class _Current:
    delivery: Delivery
    job_id: str
    thread: threading.Thread | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    ended_at: float | None = None       # monotonic time its thread handed back an outcome
    workers: int | None = None          # consumers of the job queue when it was delivered


class Heartbeat:
    """Every ``worker_heartbeat_seconds``, this worker's row in the workers table: alive, the job it
    runs, its frames/s over the last :attr:`WINDOW` seconds (the cluster page shows them). A store that
    is down only skips beats; a clean stop is recorded."""

    WINDOW = 300.0

    def __init__(self, worker: "Worker", clock: Callable[[], float] = time.monotonic):
        self.worker, self.clock = worker, clock
        self.workers = Workers(worker.runner.store.db)
        self.interval = max(0.05, worker.settings.worker_heartbeat_seconds)
        self.samples: deque[tuple[float, int]] = deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="heartbeat")

    def rate(self, now: float, frames: int) -> float:
        """Frames per second over the samples of the last :attr:`WINDOW` seconds (``frames`` taken at ``now``)."""
        self.samples.append((now, frames))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.WINDOW:
            self.samples.popleft()
        t0, f0 = self.samples[0]
        return (frames - f0) / (now - t0) if now > t0 else 0.0

    def beat(self) -> None:
        w, runner = self.worker, self.worker.runner
        current = w.current
        try:
            self.workers.beat(runner.owner, runner.node, pid=os.getpid(), version=__version__,
                              job_id=current.job_id if current is not None else None, jobs_handled=w.handled,
                              frames=runner.frames, frames_per_s=self.rate(self.clock(), runner.frames))
        except JobStoreError as exc:
            log.warning("heartbeat not recorded: %s", exc)

    def _run(self) -> None:
        self.beat()
        while not self._stop.wait(self.interval):
            self.beat()

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 15)
        try:
            self.workers.stopped(self.worker.runner.owner)
        except JobStoreError as error:
            log.warning("stop not recorded in the workers table: %s", error)


class Worker:
    """Consumes the job queue, one job at a time, until stopped."""

    def __init__(self, settings: Settings, analyzer: Analyzer, store: JobStore, *, broker: Broker | None = None):
        self.settings = settings
        self.stopping = threading.Event()
        self.runner = JobRunner(settings, analyzer, store, self.stopping)
        self.broker = broker or Broker(settings)
        self.current: _Current | None = None
        self.handled = 0
        self._tick = time.monotonic()          # the job loop's last sign of life
        self._connected = False

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def stop(self, *_args) -> None:
        self.stopping.set()

    def _say(self, line: str) -> None:
        log.info(line)
        self.runner.layout.log(self.settings.node, line)

    def stalled_seconds(self) -> float:
        """0 while the worker can take work; otherwise how long it has not been able to.

        Stalled: the job loop has not come round for :data:`STALL_AFTER` seconds,
        or a job ended that long ago and its delivery was never settled.
        """
        now = time.monotonic()
        worst = now - self._tick
        current = self.current
        if current is not None and current.ended_at is not None:
            worst = max(worst, now - current.ended_at)
        return worst if worst > STALL_AFTER else 0.0

    def run(self) -> int:
        s = self.settings
        self._say(f"worker up: queue {s.queue} on {s.broker_host}:{s.broker_port}, pid {os.getpid()}")
        with Heartbeat(self):
            self._consume()
        self.broker.close()
        self._say(f"worker stopped after {self.handled} job(s)")
        return 0

    def _consume(self) -> None:
        backoff = Backoff()
        while not self.stopping.is_set():
            self._tick = time.monotonic()
            if not self.broker.connect_retrying(self.stopping.is_set, self._connect_failed, backoff):
                break
            try:
                self.broker.consume(self._on_delivery, prefetch=1)
                backoff.reset()
                while not self.stopping.is_set():
                    self._tick = time.monotonic()
                    self.broker.process(0.5)
                self.broker.cancel()
                self._drain()
            except BrokerError as exc:
                metrics.BROKER_RECONNECTS.labels("worker").inc()
                self._say(f"broker connection lost ({exc}); reconnecting")
                self.broker.close()
                self._wait_without_connection()

    def _connect_failed(self, exc: BrokerError, pause: float) -> None:
        self._tick = time.monotonic()          # waiting for the broker is not a stall of ours
        log.warning("%s; retrying in %.1f s", exc, pause)

    # --- on the connection's thread ---------------------------------------------
    def _on_delivery(self, delivery: Delivery) -> None:
        try:
            msg = JobMessage.decode(delivery.body)
        except MessageError as exc:
            self._reject(delivery, f"malformed message: {exc}")
            return
        if self.stopping.is_set():
            self.broker.cancel()              # first, or the message handed back comes straight back here
            self._hand_back(delivery)
            return
        if self.current is not None:
            self.broker.requeue(delivery)
            return
        current = _Current(delivery, msg.job_id, workers=self._workers())
        current.thread = threading.Thread(target=self._work, args=(current, msg), daemon=True,
                                          name=f"job-{msg.job_id}")
        self.current = current
        current.thread.start()

    def _workers(self) -> int | None:
        """How many workers consume the job queue (this one included): a long video is cut for them."""
        try:
            return self.broker.counts()[1] or None
        except BrokerError:
            return None

    def _hand_back(self, delivery: Delivery) -> None:
        """A delivery this worker will not start (it is stopping): back on the queue, uncounted."""
        try:
            self.broker.hand_back(delivery)
        except BrokerError as exc:      # not published: a nack, which the broker counts
            log.warning("message %s not handed back (%s); giving it back counted", delivery.message_id, exc)
            self.broker.requeue(delivery)

    def _reject(self, delivery: Delivery, reason: str) -> None:
        try:
            self.broker.dead_letter(delivery, reason)
        except BrokerError:            # not dead-lettered: given back (counted), never left unsettled
            self.broker.requeue(delivery)
            raise
        self.broker.ack(delivery)
        metrics.JOBS.labels(Outcome.REJECTED.value).inc()
        self._say(f"message {delivery.message_id or delivery.tag} dead-lettered: {reason}")

    def _settle(self, current: _Current, verdict: Verdict | None) -> None:
        """Tell the broker; ``verdict`` None: a bug or the store was gone: give the delivery back."""
        d = current.delivery
        try:
            if verdict is None:
                self.broker.requeue(d)
            elif verdict.outcome is Outcome.REJECTED:
                self._reject(d, verdict.reason)
            elif verdict.outcome in (Outcome.RETRIED, Outcome.DEFERRED):
                body = verdict.message.encode() if verdict.message is not None else d.body
                try:
                    self.broker.publish_later(body, verdict.delay, message_id=d.message_id)
                except BrokerError:
                    self.broker.requeue(d)
                    raise
                self.broker.ack(d)
            elif verdict.outcome is Outcome.SPLIT:
                self._publish_segments(verdict.messages)
                self.broker.ack(d)
            elif verdict.outcome is not Outcome.INTERRUPTED:
                self.broker.ack(d)
            elif not self.stopping.is_set():   # left unsettled it would hold this worker's prefetch for hours
                self.broker.requeue(d)
        except BrokerError as exc:
            log.warning("job %s: %s (the broker delivers it again)", current.job_id, exc)
        finally:
            if self.current is current:
                self.current = None

    def _publish_segments(self, messages) -> None:
        """A long video's segment jobs on the queue (recorded with their publish pending: a message the
        broker does not confirm is published by the reconciler instead, so a refusal here never keeps
        the video's delivery from being settled)."""
        for msg in messages:
            try:
                self.broker.publish(msg.encode(), message_id=msg.job_id)
            except BrokerError as exc:
                log.warning("segment job %s not published (%s); the reconciler publishes it", msg.job_id, exc)
                continue
            try:
                self.runner.store.mark_published(msg.job_id)
            except JobStoreError as exc:   # published: at worst the reconciler publishes it once more
                log.warning("segment job %s: publish not recorded: %s", msg.job_id, exc)

    # --- on the job's thread -------------------------------------------------------
    def _work(self, current: _Current, msg: JobMessage) -> None:
        started = time.perf_counter()
        verdict: Verdict | None = None
        metrics.JOBS_IN_PROGRESS.inc()
        try:
            verdict = self.runner.run(msg, seen_before(current.delivery), current.cancel, current.workers)
        except BaseException as exc:   # never leave a delivery unsettled
            log.exception("job %s: unexpected error; giving the message back", msg.job_id)
            self.runner.layout.log(self.settings.node, f"job {msg.job_id}: error, given back: "
                                                       f"{type(exc).__name__}: {exc}")
            self.stopping.wait(0 if self.stopping.is_set() else UNEXPECTED_PAUSE)
        finally:
            metrics.JOBS_IN_PROGRESS.dec()
            outcome = verdict.outcome.value if verdict else "error"
            metrics.JOBS.labels(outcome).inc()
            metrics.JOB_DURATION.labels(outcome).observe(time.perf_counter() - started)
            self.handled += 1
            try:
                self.broker.call_threadsafe(partial(self._settle, current, verdict))
            except BrokerError:
                pass   # the connection is gone; the broker delivers the job again
            finally:
                current.ended_at = time.monotonic()
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
            self.broker.process(0)      # run the settle callback
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
            self._tick = time.monotonic()
            if self.stopping.is_set():
                if not current.finished.wait(self.settings.stop_grace_seconds):
                    self._interrupt(current)
                break
        self.current = None

    def _interrupt(self, current: _Current) -> None:
        current.cancel.set()
        current.thread.join(timeout=10)
        self._say(f"job {current.job_id} left unacknowledged; the broker delivers it again")
        self.current = None
