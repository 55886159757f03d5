"""A long video's transitions: its job split into segment jobs, planned again, merged once, failed whole.

A long video is one **split** job and a **segment job** per segment (rows of the same table,
``parent_id`` set): the segment jobs go through the queue and the store's transitions like any job,
while the split job waits, held by them (its lease owner ``segments``, its lease never running out),
until the worker that finishes the last one wins ``claim_merge`` -- exactly one does -- and merges.
:class:`LongVideos` is part of :class:`~wildswarm.jobs.store.JobStore`, the one writer of job state.
"""
from __future__ import annotations

from psycopg.types.json import Jsonb

from wildswarm.jobs.clauses import CHANGED, EXPIRED, LEASE, MINE, RESET, SPLIT_OWNER, SUM_SEGMENTS, db_text
from wildswarm.jobs.model import Job, segment_id


class LongVideos:
    """The split, segment and merge transitions of :class:`~wildswarm.jobs.store.JobStore` (whose
    ``db``, ``_one``, ``_many`` and ``_params`` they use)."""

    def split(self, job_id: str, owner: str, plan: dict, finished: list[bool]) -> list["Job"] | None:
        """Hand ``owner``'s running job to its segment jobs (one per entry of ``finished``): created
        queued with their publish pending, or kept as they are; a segment whose result is on disk
        (``finished[k]``) is done, one recorded done or failed whose result is not is queued again.
        The job stays running, held by its segments. Returns the segment jobs to publish (queued);
        None if the job is no longer this owner's."""
        with self.db.connection("splitting a job") as conn, conn.transaction():
            row = conn.execute(f"UPDATE jobs SET segments = %(n)s, plan = %(plan)s, frames_total = %(total)s, "
                               f"lease_owner = '{SPLIT_OWNER}', lease_until = '9999-12-31 00:00:00+00', {CHANGED} "
                               f"WHERE {MINE} RETURNING *",
                               self._params(job_id, owner, n=len(finished), plan=Jsonb(plan),
                                            total=int(plan.get("total", 0)))).fetchone()
            if row is None:
                return None
            job = Job.from_row(row)
            for k, done in enumerate(finished):
                params = {"id": segment_id(job_id, k), "parent": job_id, "k": k, "name": job.input_name,
                          "size": job.size_bytes, "done": bool(done), "profile": job.profile}
                conn.execute(
                    "INSERT INTO jobs (id, input_name, size_bytes, parent_id, segment, profile, status, "
                    "publish_pending, finished_at) VALUES (%(id)s, %(name)s, %(size)s, %(parent)s, %(k)s, %(profile)s, "
                    "CASE WHEN %(done)s THEN 'done' ELSE 'queued' END, NOT %(done)s, "
                    "CASE WHEN %(done)s THEN now() END) ON CONFLICT (id) DO NOTHING", params)
                # recorded done or failed, but its result is not (or is) on disk: the disk decides
                conn.execute(
                    f"UPDATE jobs SET status = 'queued', attempts = 0, {RESET}, publish_pending = true, {CHANGED} "
                    "WHERE id = %(id)s AND NOT %(done)s AND (status IN ('done', 'failed') OR "
                    f"({EXPIRED}))", params)
                conn.execute(
                    f"UPDATE jobs SET status = 'done', finished_at = now(), lease_owner = NULL, lease_until = NULL, "
                    f"publish_pending = false, {CHANGED} WHERE id = %(id)s AND %(done)s AND status <> 'done' "
                    "AND status <> 'running'", params)
            return self._queued_segments(conn, job_id)

    def replan(self, job_id: str, mine: str, owner: str, finished: list[bool]) -> list["Job"] | None:
        """A split job's segments planned again (``finished``: which results are on disk under the new
        plan), by the worker ``owner`` that holds its segment job ``mine`` and found the plan made
        under other settings. Every segment job not done under the new plan is queued again with its
        attempts forgiven: one that another worker runs is taken from it (it stops at its next lease
        renewal, recording nothing), and this one's own is queued like the rest. Returns the segment
        jobs to publish; None if the job no longer waits for its segments or ``owner`` lost its own."""
        with self.db.connection("planning a job's segments again") as conn, conn.transaction():
            row = conn.execute(f"UPDATE jobs SET replans = replans + 1, {CHANGED} WHERE id = %(id)s "
                               f"AND status = 'running' AND lease_owner = '{SPLIT_OWNER}' AND EXISTS "
                               "(SELECT 1 FROM jobs c WHERE c.id = %(segment)s AND c.parent_id = %(id)s "
                               "AND c.status = 'running' AND c.lease_owner = %(owner)s) RETURNING *",
                               {"id": job_id, "segment": mine, "owner": owner}).fetchone()
            if row is None:
                return None
            for k, done in enumerate(finished):
                params = {"id": segment_id(job_id, k), "done": bool(done)}
                conn.execute(f"UPDATE jobs SET status = 'queued', attempts = 0, {RESET}, publish_pending = true, "
                             f"{CHANGED} WHERE id = %(id)s AND NOT %(done)s AND status <> 'cancelled'", params)
                conn.execute(f"UPDATE jobs SET status = 'done', finished_at = now(), lease_owner = NULL, "
                             f"lease_until = NULL, publish_pending = false, {CHANGED} WHERE id = %(id)s AND %(done)s "
                             "AND status <> 'done'", params)
            return self._queued_segments(conn, job_id)

    @staticmethod
    def _queued_segments(conn, job_id: str) -> list["Job"]:
        """A split job's segment jobs that wait for a worker (to publish), its progress summed again."""
        rows = conn.execute("SELECT * FROM jobs WHERE parent_id = %s AND status = 'queued' ORDER BY segment",
                            (job_id,)).fetchall()
        conn.execute(SUM_SEGMENTS.format(""), {"id": job_id})
        return [Job.from_row(r) for r in rows]

    def claim_merge(self, job_id: str, owner: str, node: str) -> Job | None:
        """The split job, leased to ``owner`` to merge, once every segment job is done: exactly one
        caller wins (of two that finished the last segments together, the later one's view is whole)."""
        return self._one("claiming a merge",
                         f"UPDATE jobs SET lease_owner = %(owner)s, {LEASE}, node = %(node)s, {CHANGED} "
                         f"WHERE id = %(id)s AND status = 'running' AND lease_owner = '{SPLIT_OWNER}' "
                         "AND NOT EXISTS (SELECT 1 FROM jobs c WHERE c.parent_id = %(id)s AND c.status <> 'done') "
                         "RETURNING *", self._params(job_id, owner, node=node))

    def fail_split(self, job_id: str, reason: str) -> Job | None:
        """A split job whose segment failed for good: failed, with its segments not yet done or running."""
        with self.db.connection("recording a failed job") as conn, conn.transaction():
            row = conn.execute("UPDATE jobs SET status = 'failed', error = %(reason)s, finished_at = now(), "
                               f"lease_owner = NULL, lease_until = NULL, {CHANGED} WHERE id = %(id)s "
                               f"AND status = 'running' AND lease_owner = '{SPLIT_OWNER}' RETURNING *",
                               {"id": job_id, "reason": db_text(reason)}).fetchone()
            if row is not None:
                conn.execute("UPDATE jobs SET status = 'failed', error = 'its video failed', finished_at = now(), "
                             f"publish_pending = false, {CHANGED} WHERE parent_id = %s AND status = 'queued'",
                             (job_id,))
        return Job.from_row(row) if row else None

    def segment_jobs(self, job_id: str) -> list["Job"]:
        """A split job's segment jobs, in order."""
        return self._many("reading segments", "SELECT * FROM jobs WHERE parent_id = %s ORDER BY segment", (job_id,))

    def _sum_segments(self, parent_id: str) -> None:
        with self.db.connection("recording progress") as conn:
            conn.execute(SUM_SEGMENTS.format(", " + CHANGED) + " AND status = 'running'", {"id": parent_id})
