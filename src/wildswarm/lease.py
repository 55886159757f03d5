"""A worker's claim on a job, renewed in a thread while it works: lost, the work stops unrecorded."""
from __future__ import annotations

import logging
import threading
from typing import Callable

from wildswarm.errors import JobStoreError
from wildswarm.jobs import JobStore

log = logging.getLogger(__name__)


class Lease:
    """``with Lease(store, job, owner, on_lost):`` renew the claim every quarter lease."""

    def __init__(self, store: JobStore, job_id: str, owner: str, on_lost: Callable[[], None]):
        self.store, self.job_id, self.owner, self.on_lost = store, job_id, owner, on_lost
        self.interval = max(0.05, store.lease_seconds / 4)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"lease-{job_id}")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self.store.heartbeat(self.job_id, self.owner):
                    self.lost.set()
                    self.on_lost()
                    return
            except JobStoreError as exc:      # the store is down: keep working, try again next time
                log.warning("job %s: lease not renewed: %s", self.job_id, exc)

    def __enter__(self) -> "Lease":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)
