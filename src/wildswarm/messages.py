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


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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
        if not isinstance(self.input_name, str) or not self.input_name \
                or "/" in self.input_name or "\\" in self.input_name or self.input_name.startswith("."):
            raise MessageError(f"input_name must be a plain file name, got {self.input_name!r}")
        if self.version != SCHEMA_VERSION:
            raise MessageError(f"unsupported message version {self.version!r} (this worker reads {SCHEMA_VERSION})")

    def encode(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode("utf-8")

    @classmethod
    def decode(cls, body: bytes) -> "JobMessage":
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MessageError(f"message is not UTF-8 JSON: {exc}") from None
        if not isinstance(data, dict):
            raise MessageError("message is not a JSON object")
        known = {"job_id", "input_name", "submitted_at", "version"}
        unknown = set(data) - known
        if unknown:
            raise MessageError(f"unknown message fields: {sorted(unknown)}")
        missing = {"job_id", "input_name", "version"} - set(data)
        if missing:
            raise MessageError(f"message lacks fields: {sorted(missing)}")
        if not isinstance(data.get("submitted_at", ""), str):
            raise MessageError("submitted_at must be a string")
        return cls(**data)
