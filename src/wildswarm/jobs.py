"""Jobs: their status, their records, and the store of records.

A job record is ``jobs/<id>.json`` on the shared filesystem, written
atomically (temporary file, then rename), so readers never see half a record.
The id is derived from the video's content: the same video is one job.

While a worker runs a job it touches the record every few seconds
(:class:`KeepAlive`); a record that stops changing belongs to a worker that is
gone. Record mtimes are compared only with each other, never with a clock, so
clock skew between nodes does not matter.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Iterator

from wildswarm.errors import JobError, UnsafePathError
from wildswarm.layout import Layout, atomic_write
from wildswarm.messages import utcnow

ID_LENGTH = 16


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED)


def job_id_for(path: Path, chunk: int = 1 << 20) -> str:
    """The job id of a video: the start of the SHA-256 of its content."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()[:ID_LENGTH]


@dataclass
class Job:
    id: str
    input_name: str
    status: JobStatus = JobStatus.QUEUED
    frames_done: int = 0
    frames_total: int = 0
    node: str | None = None
    attempts: int = 0
    created_at: str = field(default_factory=utcnow)
    started_at: str | None = None
    finished_at: str | None = None
    output: str | None = None          # folder name under output/
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    untrained: bool = False
    size_bytes: int | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def progress(self) -> float:
        if self.status is JobStatus.DONE:
            return 1.0
        return self.frames_done / self.frames_total if self.frames_total else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["status"] = self.status.value
        d["progress"] = round(self.progress, 4)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "Job":
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values["status"] = JobStatus(values.get("status", "queued"))
        return cls(**values)


class JobStore:
    """Job records in ``jobs/`` of the shared filesystem."""

    def __init__(self, layout: Layout):
        self.layout = layout

    def path(self, job_id: str) -> Path:
        return self.layout.job_file(job_id)

    def exists(self, job_id: str) -> bool:
        return self.path(job_id).exists()

    def get(self, job_id: str) -> Job:
        path = self.path(job_id)
        try:
            return Job.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise JobError(f"no job {job_id}") from None
        except (ValueError, TypeError) as exc:
            raise JobError(f"job record {path.name} is unreadable: {exc}") from None

    def save(self, job: Job) -> Job:
        atomic_write(self.path(job.id), json.dumps(job.to_dict(), indent=2, sort_keys=True))
        return job

    def create(self, job: Job) -> tuple[Job, bool]:
        """Save ``job`` unless a record with its id exists; return (record, created)."""
        if self.exists(job.id):
            return self.get(job.id), False
        return self.save(job), True

    def update(self, job_id: str, **changes) -> Job:
        return self.save(replace(self.get(job_id), **changes))

    def all(self) -> list[Job]:
        """Every readable record, newest first."""
        jobs = []
        for path in self.layout.jobs.glob("*.json"):
            try:
                jobs.append(self.get(path.stem))
            except (JobError, UnsafePathError):  # foreign or unreadable file
                continue
        return sorted(jobs, key=lambda j: j.created_at, reverse=True)

    def __iter__(self) -> Iterator[Job]:
        return iter(self.all())


class KeepAlive:
    """``with KeepAlive(store, job_id):`` touch the job's record every ``interval`` seconds."""

    def __init__(self, store: JobStore, job_id: str, interval: float = 2.0):
        self.path, self.interval = store.path(job_id), interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"keepalive-{job_id}")

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def __enter__(self) -> "KeepAlive":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 1)


def wait_while_alive(store: JobStore, job: Job, stale: float, cancel: threading.Event) -> Job | None:
    """Wait while another worker visibly runs ``job``.

    Returns the record once it is no longer RUNNING there (finished, or given
    back), or None when it has not changed for ``stale`` seconds (that worker
    is gone) or ``cancel`` is set.
    """
    path, node = store.path(job.id), job.node
    last, changed = path.stat().st_mtime_ns, time.monotonic()
    while time.monotonic() - changed < stale:
        if cancel.wait(min(1.0, stale / 4)):
            return None
        current = store.get(job.id)
        if current.status is not JobStatus.RUNNING or current.node != node:
            return current
        mtime = path.stat().st_mtime_ns
        if mtime != last:
            last, changed = mtime, time.monotonic()
    return None
