"""A job: its status, its record, its id.

The id is derived from the video's content (:func:`job_id_for`), so the same
video is one job whatever its name or how it arrived. A :class:`Job` is a
read-only snapshot of the row in the job store; only
:class:`~wildswarm.jobs.store.JobStore`'s named transitions change a job.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path

ID_LENGTH = 16


class JobStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


def job_id_for(path: Path, chunk: int = 1 << 20) -> str:
    """The job id of a video: the start of the SHA-256 of its content."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()[:ID_LENGTH]


def _iso(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    # in UTC, as the pages write times: the database answers in its session's time zone (PGTZ, or the server's
    # own setting), and the jobs page's script labels a time UTC only when it ends in +00:00
    return (value.astimezone(timezone.utc) if value.tzinfo else value).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Job:
    id: str
    input_name: str
    status: JobStatus = JobStatus.QUEUED
    frames_done: int = 0
    frames_total: int = 0
    node: str | None = None
    attempts: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    lease_until: datetime | None = None
    retry_at: datetime | None = None
    output: str | None = None          # folder name under output/
    outputs: list[str] = field(default_factory=list)
    error: str | None = None
    refused: bool = False              # never a video we accept: retrying it cannot help
    publish_pending: bool = False      # recorded, but its message is not confirmed on the queue yet
    untrained: bool = False
    size_bytes: int | None = None
    input_mtime_ns: int | None = None  # its file's modification time when hashed (intake; not in the API)
    timings: dict[str, float] = field(default_factory=dict)
    seq: int = 0                       # change sequence: larger for every later change of any job
    parent_id: str | None = None       # a segment job: the job of the whole video
    segment: int | None = None         # a segment job: its number, from 0
    segments: int = 0                  # a split job: how many segment jobs it has
    plan: dict | None = None           # a split job: its segment plan (total, length, overlap)
    replans: int = 0                   # a split job: times its segments were planned again (a rolling update)
    deployment_id: str | None = None   # where and when its video was recorded (jobs.deployments)
    media: dict = field(default_factory=dict)   # the video's own metadata, read at intake
    profile: str | None = None         # the analysis profile it is analysed with (None: from before profiles)
    profile_settings: dict = field(default_factory=dict)  # what that profile resolved to where it ran
    animals: int | None = None         # done: the most animals in one frame (0: none found)
    tracks: int | None = None          # done: distinct animals tracked
    species: dict = field(default_factory=dict)  # done: species -> tracked animals of it (with a classifier)
    webhook_url: str | None = None     # POSTed to when it ends (the producer's notifier)
    notify_state: str | None = None    # None (no webhook) | waiting | sent | gave_up
    notify_attempts: int = 0
    notify_error: str | None = None    # the last attempt's error
    notified_at: datetime | None = None

    @property
    def is_segment(self) -> bool:
        return self.parent_id is not None

    @property
    def retriable(self) -> bool:
        """Whether a retry may queue it again (failed, not refused as no video, or cancelled; the job store
        has the last word)."""
        return self.status in (JobStatus.FAILED, JobStatus.CANCELLED) and not self.refused

    @property
    def progress(self) -> float:
        if self.status is JobStatus.DONE:
            return 1.0
        return self.frames_done / self.frames_total if self.frames_total else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        del d["input_mtime_ns"]        # the producer's note of the file it read, nothing a user asks for
        d["status"] = self.status.value
        d["progress"] = round(self.progress, 4)
        for key in ("created_at", "updated_at", "started_at", "finished_at", "lease_until", "retry_at", "notified_at"):
            d[key] = _iso(d[key])
        return d

    @classmethod
    def from_row(cls, row: dict) -> "Job":
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in row.items() if k in names}
        values["status"] = JobStatus(values.get("status", "queued"))
        values["outputs"] = list(values.get("outputs") or [])
        values["timings"] = dict(values.get("timings") or {})
        values["segments"] = values.get("segments") or 0
        values["media"] = dict(values.get("media") or {})
        values["profile_settings"] = dict(values.get("profile_settings") or {})
        values["species"] = dict(values.get("species") or {})
        return cls(**values)


def segment_id(parent_id: str, k: int) -> str:
    """A segment job's id: its video's job id and the segment's number (4 hex digits)."""
    return f"{parent_id}{k:04x}"

