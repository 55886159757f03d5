"""Publishing jobs from the web app: one lazy broker connection per process, never losing an upload.

Each gunicorn worker process holds one :class:`~wildswarm.broker.Broker`,
opened on first use and behind a lock (the connection is not thread-safe).
A publish that fails is tried once more on a fresh connection. If the broker
stays unreachable the caller keeps the video in input/ and its job record
(status queued) carries :data:`PENDING_NOTE`; :class:`Publisher` then retries
those jobs in a background thread every ``web_republish_seconds`` until they
are published, and clears the note. At start it looks for such records left
by an earlier process, so a restart loses nothing either.

Publishing a job twice is harmless: a worker acknowledges the second message
of a finished job without work (see ``worker.py``).
"""
from __future__ import annotations

import logging
import os
import threading

from wildswarm.broker import Broker
from wildswarm.config import Settings
from wildswarm.errors import BrokerError, JobError
from wildswarm.jobs import JobStatus, JobStore
from wildswarm.layout import Layout
from wildswarm.messages import JobMessage
from wildswarm.producer import publish_job

log = logging.getLogger(__name__)

PENDING_NOTE = "not queued yet: the broker was unreachable"
COMPONENT = "web"


def is_pending(job) -> bool:
    return job.status is JobStatus.QUEUED and bool(job.error) and job.error.startswith(PENDING_NOTE)


class Publisher:
    def __init__(self, settings: Settings, broker: Broker | None = None):
        self.settings = settings
        self.store = JobStore(Layout(settings.data))
        self._broker = broker
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._pending_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._scanned = False
        self.last_error: str | None = None

    # --- the connection --------------------------------------------------------------------
    def _fresh(self) -> Broker:
        """This process's broker: a forked child drops (never uses) its parent's connection."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._broker, self._thread, self._scanned = None, None, False
        if self._broker is None:
            self._broker = Broker(self.settings)
        return self._broker

    @property
    def connected(self) -> bool:
        return self._broker is not None and self._broker.connected

    def publish(self, msg: JobMessage) -> bool:
        """Publish ``msg`` (confirmed): True, or False if the broker cannot be reached now."""
        with self._lock:
            broker = self._fresh()
            for attempt in (1, 2):
                was_open = broker.connected
                try:
                    broker.connect()
                except BrokerError as exc:          # unreachable now: no point in asking again at once
                    self.last_error = str(exc)
                    broker.close()
                    log.warning("publishing job %s: %s", msg.job_id, exc)
                    return False
                try:
                    publish_job(broker, msg, component=COMPONENT)
                    self.last_error = None
                    return True
                except BrokerError as exc:          # e.g. the broker closed our idle connection: once more
                    self.last_error = str(exc)
                    broker.close()
                    log.warning("publishing job %s failed (attempt %d%s): %s", msg.job_id, attempt,
                                ", on a connection opened earlier" if was_open else "", exc)
        return False

    def close(self) -> None:
        with self._lock:
            if self._broker is not None:
                self._broker.close()

    # --- jobs saved while the broker was down ------------------------------------------------
    def add_pending(self, job_id: str) -> None:
        with self._lock:
            self._fresh()
        with self._pending_lock:
            self._pending.add(job_id)
            if self._thread is None and self.settings.web_republish_seconds > 0:
                self._thread = threading.Thread(target=self._loop, name="wildswarm-web-republish", daemon=True)
                self._thread.start()

    def pending(self) -> set[str]:
        with self._pending_lock:
            return set(self._pending)

    def scan(self) -> None:
        """Once per process: pick up pending jobs an earlier process left behind."""
        if self._scanned:
            return
        self._scanned = True
        found = [j.id for j in self.store.all() if is_pending(j)]
        for job_id in found:
            self.add_pending(job_id)

    def flush(self) -> int:
        """Try to publish every pending job; returns how many are still pending."""
        for job_id in sorted(self.pending()):
            try:
                job = self.store.get(job_id)
            except JobError:
                job = None
            if job is None or not is_pending(job):
                self._discard(job_id)
                continue
            if not self.publish(JobMessage(job.id, job.input_name)):
                break
            current = self.store.get(job_id)
            if is_pending(current):
                self.store.update(job_id, error=None)
            self._discard(job_id)
            log.info("job %s published after the broker came back", job_id)
        return len(self.pending())

    def _discard(self, job_id: str) -> None:
        with self._pending_lock:
            self._pending.discard(job_id)

    def _loop(self) -> None:
        while True:
            threading.Event().wait(self.settings.web_republish_seconds)
            try:
                self.flush()
            except Exception:  # keep trying: an upload must never be lost
                log.exception("retrying pending publications failed")
            with self._pending_lock:
                if not self._pending:
                    self._thread = None
                    return
