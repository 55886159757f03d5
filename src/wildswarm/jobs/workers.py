"""The workers table: each worker's heartbeat, and who is alive (the cluster page reads it).

A worker writes :meth:`Workers.beat` every ``worker_heartbeat_seconds`` from a thread of its own
(:class:`wildswarm.worker.Heartbeat`) and :meth:`Workers.stopped` when it stops cleanly. A worker
not seen for :data:`LOST_AFTER` heartbeats is ``lost`` (killed, or its node is gone); rows not
seen for :data:`FORGET_DAYS` days are removed.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

LOST_AFTER = 3            # heartbeats missed before a worker counts as lost
FORGET_DAYS = 7


@dataclass(frozen=True)
class WorkerState:
    owner: str
    node: str
    pid: int | None
    version: str | None
    started_at: datetime
    seen_at: datetime
    stopped_at: datetime | None
    job_id: str | None
    job_name: str | None       # its video's name
    jobs_handled: int
    frames: int
    frames_per_s: float
    seen_seconds_ago: float
    state: str                 # running | idle | stopped | lost

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for k in ("started_at", "seen_at", "stopped_at"):
            out[k] = out[k].isoformat() if out[k] else None
        out["seen_seconds_ago"] = round(self.seen_seconds_ago, 1)
        out["frames_per_s"] = round(self.frames_per_s, 2)
        return out


class Workers:
    """The workers table, on the job store's connection pool."""

    def __init__(self, db):
        self.db = db

    def beat(self, owner: str, node: str, *, pid: int, version: str, job_id: str | None, jobs_handled: int,
             frames: int, frames_per_s: float) -> None:
        values = dict(owner=owner, node=node, pid=pid, version=version, job_id=job_id, jobs_handled=jobs_handled,
                      frames=frames, fps=frames_per_s)
        with self.db.connection("recording a worker's heartbeat") as conn, conn.transaction():
            conn.execute("INSERT INTO workers (owner, node, pid, version, job_id, jobs_handled, frames, frames_per_s) "
                         "VALUES (%(owner)s, %(node)s, %(pid)s, %(version)s, %(job_id)s, %(jobs_handled)s, "
                         "%(frames)s, %(fps)s) ON CONFLICT (owner) DO UPDATE SET seen_at = now(), "
                         "stopped_at = NULL, job_id = EXCLUDED.job_id, jobs_handled = EXCLUDED.jobs_handled, "
                         "frames = EXCLUDED.frames, frames_per_s = EXCLUDED.frames_per_s", values)
            conn.execute("DELETE FROM workers WHERE seen_at < now() - make_interval(days => %s)", (FORGET_DAYS,))

    def stopped(self, owner: str) -> None:
        with self.db.connection("recording a worker's stop") as conn:
            conn.execute("UPDATE workers SET stopped_at = now(), seen_at = now(), job_id = NULL, frames_per_s = 0 "
                         "WHERE owner = %s", (owner,))

    def recent(self, heartbeat_seconds: float, within_seconds: float = 3600.0) -> list[WorkerState]:
        """Workers seen in the last ``within_seconds``, alive ones first, then by node."""
        with self.db.connection("listing the workers") as conn:
            rows = conn.execute("SELECT w.*, j.input_name, extract(epoch FROM now() - w.seen_at)::float AS ago "
                                "FROM workers w LEFT JOIN jobs j ON j.id = w.job_id "
                                "WHERE w.seen_at > now() - make_interval(secs => %s) ORDER BY w.node, w.started_at",
                                (within_seconds,)).fetchall()
        out = []
        for r in rows:
            if r["stopped_at"] is not None:
                state = "stopped"
            elif r["ago"] > LOST_AFTER * heartbeat_seconds:
                state = "lost"
            else:
                state = "running" if r["job_id"] else "idle"
            out.append(WorkerState(r["owner"], r["node"], r["pid"], r["version"], r["started_at"], r["seen_at"],
                                   r["stopped_at"], r["job_id"] if state == "running" else None,
                                   r["input_name"] if state == "running" else None, r["jobs_handled"],
                                   r["frames"], r["frames_per_s"] if state in ("running", "idle") else 0.0,
                                   r["ago"], state))
        out.sort(key=lambda w: (w.state in ("stopped", "lost"), w.node, w.owner))
        return out
