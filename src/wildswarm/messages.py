"""The queue message: what crosses from a publisher to a worker.

A frozen dataclass with a schema version, encoded as UTF-8 JSON. Anything that
cannot be decoded into a valid message raises :class:`MessageError`, so a
worker can dead-letter it with the reason instead of crashing or retrying.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from wildswarm.errors import MessageError

SCHEMA_VERSION = 1
_JOB_ID = re.compile(r"[0-9a-f]{8,64}")
MAX_NAME = 255            # bytes of a file name on every filesystem we run on
MAX_BODY = 64 * 1024      # a message is a pointer: a few hundred bytes


def plain_name(name: object) -> bool:
    """A single visible file-name component: no separator, no control character, at most 255 bytes."""
    return (isinstance(name, str) and 0 < len(name.encode("utf-8", "surrogatepass")) <= MAX_NAME
            and "/" not in name and "\\" not in name and not name.startswith(".")
            and not any(ord(c) < 32 or ord(c) == 127 for c in name))


def timestamp(when: datetime) -> str:
    return when.astimezone(timezone.utc).isoformat(timespec="seconds")


def utcnow() -> str:
    return timestamp(datetime.now(timezone.utc))


@dataclass(frozen=True)
class JobMessage:
    """Analyse ``input_name`` (a file name in ``input/``) as job ``job_id``."""

    job_id: str
    input_name: str
    submitted_at: str = field(default_factory=utcnow)
    version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if not isinstance(self.job_id, str) or not _JOB_ID.fullmatch(self.job_id):
            raise MessageError(f"job_id must be 8-64 lowercase hex characters, got {self.job_id!r}")
        if not plain_name(self.input_name):
            raise MessageError(f"input_name must be a plain file name (at most {MAX_NAME} bytes, no path, "
                               f"no control characters), got {str(self.input_name)[:80]!r}")
        if not isinstance(self.submitted_at, str) or len(self.submitted_at) > 64:
            raise MessageError("submitted_at must be a timestamp string")
        if self.version != SCHEMA_VERSION:
            raise MessageError(f"unsupported message version {self.version!r} (this worker reads {SCHEMA_VERSION})")

    @classmethod
    def for_job(cls, job) -> "JobMessage":
        """The message of a recorded job. ``submitted_at`` is when its record was made, the same on every
        message for it: the first, a retry after a failure, one published again after a lost message."""
        return cls(job.id, job.input_name, timestamp(job.created_at) if job.created_at else utcnow())

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode("utf-8")

    @classmethod
    def decode(cls, body: bytes) -> "JobMessage":
        if len(body) > MAX_BODY:
            raise MessageError(f"message is too large ({len(body)} bytes; a job message is a few hundred)")
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MessageError(f"message is not UTF-8 JSON: {exc}") from None
        except RecursionError:          # nested deeper than the interpreter allows: no job message is
            raise MessageError("message is not UTF-8 JSON: nested too deeply") from None
        if not isinstance(data, dict):
            raise MessageError("message is not a JSON object")
        known = {"job_id", "input_name", "submitted_at", "version"}
        unknown = set(data) - known
        if unknown:
            raise MessageError(f"unknown message fields: {sorted(unknown)}")
        missing = {"job_id", "input_name", "version"} - set(data)
        if missing:
            raise MessageError(f"message lacks fields: {sorted(missing)}")
        return cls(**data)
