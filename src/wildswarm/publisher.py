"""Publishing job messages from a process: one lazy broker connection behind a lock, never raising.

Used by intake (the producer, ``wildswarm submit``, the web app) and the reconciler.
"""
from __future__ import annotations

import logging
import os
import threading

from wildswarm.broker import Broker
from wildswarm.config import Settings
from wildswarm.errors import BrokerError

log = logging.getLogger(__name__)


class Publisher:
    """Publishes job messages for one process: a lazy connection behind a lock, never raising.

    Thread-safe (the connection is not, so one lock serialises publishes) and
    fork-aware (a forked gunicorn worker opens its own connection). A publish
    that fails is tried once more on a fresh connection (the broker may have
    closed an idle one); if the broker stays unreachable :meth:`publish` returns
    False, and the caller leaves the job's publish pending for the reconciler.
    """

    def __init__(self, settings: Settings, component: str, broker: Broker | None = None):
        self.settings, self.component = settings, component
        self._broker = broker
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self.last_error: str | None = None
        from wildswarm import metrics
        metrics.JOBS_PUBLISHED.labels(component)     # 0 from the start, so the alert on its first failure fires
        metrics.PUBLISH_FAILURES.labels(component)

    def _fresh(self) -> Broker:
        if self._pid != os.getpid():
            self._pid, self._broker = os.getpid(), None
        if self._broker is None:
            self._broker = Broker(self.settings)
        return self._broker

    @property
    def connected(self) -> bool:
        return self._broker is not None and self._broker.connected

    def publish(self, msg, delay_seconds: float = 0.0) -> bool:
        """Publish ``msg`` (a :class:`~wildswarm.messages.JobMessage`), confirmed: True, or False."""
        from wildswarm import metrics
        with self._lock:
            broker = self._fresh()
            for attempt in (1, 2):
                try:
                    broker.connect()
                except BrokerError as exc:          # unreachable now: no point in asking again at once
                    return self._failed(broker, msg, exc, metrics)
                try:
                    if delay_seconds > 0:
                        broker.publish_later(msg.encode(), delay_seconds, message_id=msg.job_id)
                    else:
                        broker.publish(msg.encode(), message_id=msg.job_id)
                except BrokerError as exc:          # e.g. the broker closed our idle connection: once more
                    if attempt == 2:
                        return self._failed(broker, msg, exc, metrics)
                    broker.close()
                    continue
                self.last_error = None
                metrics.JOBS_PUBLISHED.labels(self.component).inc()
                return True
        return False

    def _failed(self, broker: Broker, msg, exc: BrokerError, metrics) -> bool:
        self.last_error = str(exc)
        broker.close()
        metrics.PUBLISH_FAILURES.labels(self.component).inc()
        log.warning("publishing job %s: %s", msg.job_id, exc)
        return False

    def close(self) -> None:
        with self._lock:
            if self._broker is not None:
                self._broker.close()
