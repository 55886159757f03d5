"""A one-time import of the job records of earlier versions (``jobs/<id>.json`` on the shared filesystem).

Run on start by the producer; it is done once per job store: a marker row in
``store_meta``, written in the same transaction as the records, says so. Queued and running records become queued
jobs whose message is published again (a worker acknowledges a second message
of a job without work, so a message still on the queue does no harm); done and
failed ones are kept as they were, with a "refused:" error turned into the
``refused`` column. The JSON files are left where they are, never changed.
"""
from __future__ import annotations

import json
import logging
import math
from datetime import datetime
from pathlib import Path

from psycopg.types.json import Jsonb

from wildswarm.jobs.model import Job, JobStatus
from wildswarm.jobs.store import JOB_ID, JobStore

log = logging.getLogger(__name__)

MARKER = "json_records_imported"
REFUSED_PREFIX = "refused:"
INT4, INT8 = 2**31 - 1, 2**63 - 1


def _count(value, high: int = INT4) -> int:
    """A whole number a column takes (0 for none); ValueError otherwise."""
    n = int(value or 0)
    if not 0 <= n <= high:
        raise ValueError(f"{n} is out of range")
    return n


def _str(value) -> str | None:
    """Text PostgreSQL takes (UTF-8, no NUL), or None; ValueError for anything else."""
    if value is None:
        return None
    if not isinstance(value, str) or "\x00" in value:
        raise ValueError("not text a column takes")
    value.encode("utf-8")          # a lone surrogate (JSON's "\\ud800"): UnicodeEncodeError, a ValueError
    return value


def _when(value) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def read_record(path: Path) -> Job | None:
    """The job in one JSON record, or None if the file is not a readable record."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        status = JobStatus(data.get("status", "queued"))
        error = data.get("error")
        refused = isinstance(error, str) and error.startswith(REFUSED_PREFIX)
        if refused:
            error = error[len(REFUSED_PREFIX):].strip()
        elif status is JobStatus.QUEUED and isinstance(error, str) and error.startswith("not queued yet"):
            error = None                       # the old pending-publish note: now a column
        if status is JobStatus.RUNNING:        # its worker belongs to the version being replaced
            status, error = JobStatus.QUEUED, None
        job_id, name = str(data["id"]), _str(str(data["input_name"]))
        if not JOB_ID.fullmatch(job_id) or not 1 <= len(name) <= 255:
            return None
        timings = {str(k): float(v) for k, v in (data.get("timings") or {}).items()}
        if not all(math.isfinite(v) for v in timings.values()):
            return None
        return Job(
            id=job_id, input_name=name, status=status,
            frames_done=_count(data.get("frames_done")), frames_total=_count(data.get("frames_total")),
            node=_str(data.get("node")), attempts=_count(data.get("attempts")),
            created_at=_when(data.get("created_at")), started_at=_when(data.get("started_at")),
            finished_at=_when(data.get("finished_at")), output=_str(data.get("output")),
            outputs=[_str(str(o)) for o in data.get("outputs") or []], error=_str(error), refused=refused,
            untrained=bool(data.get("untrained")),
            size_bytes=None if data.get("size_bytes") is None else _count(data["size_bytes"], INT8),
            timings=timings,
        )
    except (OSError, ValueError, TypeError, KeyError, AttributeError, ArithmeticError, RecursionError):
        return None


def import_json_records(store: JobStore, folder: Path) -> dict[str, int] | None:
    """Import every record in ``folder`` once per store; counts, or None if it was done before."""
    jobs, unreadable = [], 0
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        job = None if path.is_symlink() else read_record(path)
        if job is None:
            unreadable += 1
            log.warning("job record %s is unreadable; not imported", path)
        else:
            jobs.append(job)
    counts = insert_once(store, jobs, marker=MARKER)
    if counts is None:
        return None
    counts["unreadable"] = unreadable
    if any(counts.values()):
        log.info("imported the JSON job records of %s: %s", folder, counts)
    return counts


def insert_once(store: JobStore, jobs: list[Job], marker: str) -> dict[str, int] | None:
    """Insert jobs as they were (from JSON records), once: counts, or None if ``marker`` says it was done.

    One transaction under an advisory lock: two importers starting together
    import once, and a crash midway imports nothing.
    """
    with store.db.connection("importing jobs") as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (marker,))
        if conn.execute("SELECT 1 FROM store_meta WHERE key = %s", (marker,)).fetchone():
            return None
        counts = {"imported": 0, "known": 0}
        for job in jobs:
            row = conn.execute(
                "INSERT INTO jobs (id, input_name, status, frames_done, frames_total, node, attempts, "
                "created_at, started_at, finished_at, output, outputs, error, refused, publish_pending, "
                "untrained, size_bytes, timings) VALUES (%(id)s, %(input_name)s, %(status)s, %(frames_done)s, "
                "%(frames_total)s, %(node)s, %(attempts)s, coalesce(%(created_at)s, now()), %(started_at)s, "
                "%(finished_at)s, %(output)s, %(outputs)s, %(error)s, %(refused)s, %(publish)s, %(untrained)s, "
                "%(size_bytes)s, %(timings)s) ON CONFLICT (id) DO NOTHING RETURNING id",
                {"id": job.id, "input_name": job.input_name, "status": job.status.value,
                 "frames_done": job.frames_done, "frames_total": job.frames_total, "node": job.node,
                 "attempts": job.attempts, "created_at": job.created_at, "started_at": job.started_at,
                 "finished_at": job.finished_at, "output": job.output, "outputs": Jsonb(job.outputs),
                 "error": job.error, "refused": job.refused, "publish": job.status is JobStatus.QUEUED,
                 "untrained": job.untrained, "size_bytes": job.size_bytes, "timings": Jsonb(job.timings)},
            ).fetchone()
            counts["imported" if row else "known"] += 1
        conn.execute("INSERT INTO store_meta (key, value) VALUES (%s, %s)", (marker, str(counts)))
    return counts
