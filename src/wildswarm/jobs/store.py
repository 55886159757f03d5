"""The job store: the ONLY writer of job state, through named transitions.

Each transition is one SQL statement (or one transaction) whose precondition
sits in its ``WHERE`` clause, so it either happens whole or not at all, and
two processes can never both win it:

==================  =================================  ======================================
transition          from                               to
==================  =================================  ======================================
submit              (no row)                           queued, publish pending
refuse              (no row)                           failed, refused
mark_published      queued                             queued, message confirmed
mark_publish_pending queued                            queued, publish pending
claim               queued, or running whose lease     running, leased to one worker
                    has expired
heartbeat/progress  running, leased to this worker     (lease extended)
finish              running, leased to this worker     done (never overwritten again)
fail                running, leased to this worker     failed
requeue             running, leased to this worker     queued (after a delay)
fail_abandoned      queued, or running, lease expired  failed (its message was dead-lettered)
requeue_expired     running, lease long expired        queued, publish pending
reset_for_retry     failed (not refused) or cancelled;  queued, publish pending
                    queued with no live message;
                    running, expired
cancel              queued or running (a video: with    cancelled (its worker stops at its
                    its unfinished segments)            next progress report: not its own)
split               running, leased to this worker     running, held by its segment jobs;
                                                       segment jobs queued (or done: kept)
claim_merge         split, every segment job done      running, leased to the merging worker
fail_split          split (held by its segments)       failed, with its unfinished segments
==================  =================================  ======================================

A long video is one **split** job and a **segment job** per segment (rows of
the same table, ``parent_id`` set; its transitions, split to merge, are in
``long_videos``, part of this class). Listings, counts and changes show whole
videos only. The SQL pieces the transitions share are in ``clauses``.

Times are the database's ``now()``: the clocks of the nodes never matter.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import psycopg
from psycopg.types.json import Jsonb

from wildswarm.config import Settings
from wildswarm.errors import JobConflict, JobError, JobStoreError
from wildswarm.jobs.clauses import (CHANGED, EXPIRED, JOB_ID, LEASE, MINE, NOTIFY_AGAIN, PARENT_WAITS, RESET,
                                    db_text)
from wildswarm.jobs.db import Database
from wildswarm.jobs.long_videos import LongVideos
from wildswarm.jobs.model import Job, JobStatus
from wildswarm.jobs.query import WHOLE, JobQuery

class Changes(NamedTuple):
    """:meth:`JobStore.changes`: the jobs changed (as they are now), the change number to ask from next,
    and the ids of the jobs deleted."""
    jobs: list[Job]
    seq: int
    deleted: list[str]


class JobStore(LongVideos):
    """Job records in PostgreSQL. Thread-safe: every call takes a pooled connection."""

    def __init__(self, db: Database):
        self.db = db
        self.lease_seconds = db.settings.lease_seconds

    @classmethod
    def connect(cls, settings: Settings, wait_seconds: float = 0.0, max_size: int | None = None) -> "JobStore":
        return cls(Database(settings, max_size=max_size).open(wait_seconds))

    def close(self) -> None:
        self.db.close()

    # --- plumbing ----------------------------------------------------------------------
    def _one(self, action: str, query: str, params: dict | tuple = ()) -> Job | None:
        with self.db.connection(action) as conn:
            row = conn.execute(query, params).fetchone()
        return Job.from_row(row) if row else None

    def _many(self, action: str, query: str, params: dict | tuple = ()) -> list[Job]:
        with self.db.connection(action) as conn:
            return [Job.from_row(r) for r in conn.execute(query, params).fetchall()]

    def _params(self, job_id: str, owner: str | None = None, **more) -> dict:
        return {"id": job_id, "owner": owner, "lease": float(self.lease_seconds), **more}

    # --- reading -------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        job = self.find(job_id)
        if job is None:
            raise JobError(f"no job {job_id[:64]!r}" if not JOB_ID.fullmatch(job_id) else f"no job {job_id}")
        return job

    def find(self, job_id: str) -> Job | None:
        if not JOB_ID.fullmatch(job_id):          # never a query for what cannot be an id
            return None
        return self._one("reading a job", "SELECT * FROM jobs WHERE id = %s", (job_id,))

    def unfinished_named(self, input_name: str) -> Job | None:
        """The queued or running video whose input is ``input/<input_name>`` (the name index answers it)."""
        return self._one("reading a job", f"SELECT * FROM jobs WHERE {WHOLE} AND lower(input_name) = lower(%s) "
                         "AND input_name = %s AND status IN ('queued', 'running') LIMIT 1", (input_name, input_name))

    def list(self, query: JobQuery = JobQuery()) -> list[Job]:
        where, params = query.where()
        params.update(limit=max(0, query.limit), offset=max(0, query.offset))
        return self._many("listing jobs", f"SELECT * FROM jobs{where} ORDER BY {query.order_by()} "
                                          "LIMIT %(limit)s OFFSET %(offset)s", params)

    def count(self, query: JobQuery = JobQuery(), cap: int | None = None) -> int:
        """How many jobs match (at most ``cap``: counting stops there, so it stays fast)."""
        where, params = query.where()
        inner = f"SELECT 1 FROM jobs{where}" + (" LIMIT %(cap)s" if cap else "")
        params["cap"] = cap
        with self.db.connection("counting jobs") as conn:
            return conn.execute(f"SELECT count(*) AS n FROM ({inner}) AS m", params).fetchone()["n"]

    def count_by_status(self) -> dict[str, int]:
        with self.db.connection("counting jobs") as conn:
            rows = conn.execute(f"SELECT status, count(*) AS n FROM jobs WHERE {WHOLE} GROUP BY status").fetchall()
        counts = {s.value: 0 for s in JobStatus}
        counts.update({r["status"]: r["n"] for r in rows})
        return counts

    def nodes(self) -> list[str]:
        """Every node that has run a job. A loose index scan (the next node after the last, on the node
        index): DISTINCT read the whole table, 140-170 ms at a million jobs, against under 1 ms."""
        with self.db.connection("listing nodes") as conn:
            rows = conn.execute(
                "WITH RECURSIVE n AS (SELECT min(node) AS node FROM jobs UNION ALL "
                "SELECT (SELECT min(node) FROM jobs WHERE node > n.node) FROM n WHERE n.node IS NOT NULL) "
                "SELECT node FROM n WHERE node IS NOT NULL").fetchall()
        return [r["node"] for r in rows]

    def changes(self, since: int, limit: int = 500) -> Changes:
        """What changed after change number ``since``, oldest change first, at most ``limit`` changes: the
        jobs changed (as they are now), the ids of the jobs deleted, and the number to ask from next."""
        with self.db.connection("reading changes") as conn:
            rows = conn.execute(
                "WITH c AS ((SELECT seq, id FROM jobs WHERE seq > %(since)s AND " + WHOLE + " ORDER BY seq "
                "LIMIT %(limit)s) UNION ALL (SELECT seq, id FROM deleted_jobs WHERE seq > %(since)s ORDER BY seq "
                "LIMIT %(limit)s) ORDER BY seq LIMIT %(limit)s) "
                "SELECT c.seq AS change_seq, c.id AS change_id, j.* FROM c "
                "LEFT JOIN jobs j ON j.id = c.id AND j.seq = c.seq ORDER BY c.seq",
                {"since": since, "limit": limit}).fetchall()
        jobs = [Job.from_row(r) for r in rows if r["id"] is not None]
        deleted = [r["change_id"] for r in rows if r["id"] is None]
        return Changes(jobs, rows[-1]["change_seq"] if rows else max(since, 0), deleted)

    def latest_seq(self) -> int:
        with self.db.connection("reading changes") as conn:
            return conn.execute("SELECT greatest((SELECT coalesce(max(seq), 0) FROM jobs), "
                                "(SELECT coalesce(max(seq), 0) FROM deleted_jobs)) AS s").fetchone()["s"]

    # --- admitting -------------------------------------------------------------------------
    def submit(self, job_id: str, input_name: str, size_bytes: int | None = None, *,
               deployment_id: str | None = None, media: dict | None = None,
               profile: str | None = None, webhook_url: str | None = None,
               input_mtime_ns: int | None = None) -> tuple[Job, bool]:
        """Record a new job, its message not yet published: (the job, True); (the existing one, False).
        ``input_mtime_ns``: its file's modification time when it was hashed; ``deployment_id``: a known
        deployment (:class:`JobError` if it is not); ``media``: the video's own metadata; ``profile``: the
        analysis profile it is analysed with; ``webhook_url``: notified when it ends (else its deployment's
        webhook, if that has one)."""
        try:
            job = self._one("recording a job",
                            # the admission that asked for it (jobs/admissions.py) ends in the same statement
                            "WITH asked AS (DELETE FROM admissions WHERE id = %(id)s) "
                            "INSERT INTO jobs (id, input_name, size_bytes, input_mtime_ns, publish_pending, "
                            "deployment_id, media, profile, webhook_url, notify_state) SELECT %(id)s, %(name)s, "
                            "%(size)s, %(mtime)s, true, %(dep)s, %(media)s, %(profile)s, w.url, "
                            "CASE WHEN w.url IS NOT NULL THEN 'waiting' END FROM "
                            "(SELECT coalesce(%(hook)s, (SELECT webhook_url FROM deployments WHERE id = %(dep)s)) "
                            "AS url) w ON CONFLICT (id) DO NOTHING RETURNING *",
                            {"id": job_id, "name": input_name, "size": size_bytes, "mtime": input_mtime_ns,
                             "dep": deployment_id,
                             "media": Jsonb(media or {}), "profile": profile, "hook": webhook_url})
        except JobStoreError as exc:
            if isinstance(exc.__cause__, psycopg.errors.ForeignKeyViolation):
                raise JobError(f"there is no deployment {deployment_id!r}; add it first") from None
            raise
        return (job, True) if job else (self.get(job_id), False)

    def refuse(self, job_id: str, input_name: str, size_bytes: int | None, reason: str, node: str) -> Job:
        """Record a file that is not a video we accept: failed and refused, for good (again: its new name)."""
        job = self._one("recording a refusal",
                        "INSERT INTO jobs (id, input_name, size_bytes, status, refused, error, node, finished_at) "
                        "VALUES (%s, %s, %s, 'failed', true, %s, %s, now()) ON CONFLICT (id) DO UPDATE SET "
                        f"input_name = EXCLUDED.input_name, {CHANGED} WHERE jobs.refused RETURNING *",
                        (job_id, input_name, size_bytes, db_text(reason), node))
        return job or self.get(job_id)

    def mark_published(self, job_id: str) -> Job | None:
        return self._one("recording a publish",
                         f"UPDATE jobs SET publish_pending = false, published_at = now(), {CHANGED} "
                         "WHERE id = %s AND status = 'queued' RETURNING *", (job_id,))

    def mark_publish_pending(self, job_id: str) -> Job | None:
        return self._one("recording a pending publish",
                         f"UPDATE jobs SET publish_pending = true, {CHANGED} "
                         "WHERE id = %s AND status = 'queued' AND NOT publish_pending RETURNING *", (job_id,))

    def note_input_read(self, job_id: str, size_bytes: int, mtime_ns: int) -> None:
        """The size and modification time a queued or running job's file had when its bytes were last read
        and found to be its video's (intake: a file written again unchanged). Not a change of its state."""
        with self.db.connection("recording a video's file") as conn:
            conn.execute("UPDATE jobs SET size_bytes = %s, input_mtime_ns = %s WHERE id = %s "
                         "AND status IN ('queued', 'running')", (size_bytes, mtime_ns, job_id))

    # --- a worker's transitions ------------------------------------------------------------------
    def claim(self, job_id: str, owner: str, node: str) -> Job | None:
        """Take the job for ``owner``: exactly one caller wins; None if it is not claimable now."""
        return self._one("claiming a job",
                         f"UPDATE jobs SET status = 'running', node = %(node)s, lease_owner = %(owner)s, {LEASE}, "
                         "attempts = attempts + 1, started_at = now(), finished_at = NULL, frames_done = 0, "
                         f"error = NULL, retry_at = NULL, publish_pending = false, {CHANGED} "
                         f"WHERE id = %(id)s AND (status = 'queued' OR ({EXPIRED})) AND {PARENT_WAITS} RETURNING *",
                         self._params(job_id, owner, node=node))

    def heartbeat(self, job_id: str, owner: str) -> bool:
        """Extend ``owner``'s lease; False if the job is no longer its own."""
        return self._one("extending a lease", f"UPDATE jobs SET {LEASE} WHERE {MINE} RETURNING *",
                         self._params(job_id, owner)) is not None

    def progress(self, job_id: str, owner: str, done: int, total: int) -> bool:
        """Record progress (a segment job's adds up into its video's job, whose bar sums its segments)."""
        job = self._one("recording progress",
                        "UPDATE jobs SET frames_done = %(done)s, frames_total = greatest(%(total)s, %(done)s), "
                        f"{LEASE}, {CHANGED} WHERE {MINE} RETURNING *",
                        self._params(job_id, owner, done=done, total=total))
        if job is not None and job.parent_id:
            self._sum_segments(job.parent_id)
        return job is not None

    def finish(self, job_id: str, owner: str, *, output: str, outputs: list[str], frames: int,
               untrained: bool, timings: dict[str, float], profile: str | None = None,
               profile_settings: dict | None = None, findings: dict | None = None) -> Job | None:
        """Record ``owner``'s job done; ``profile`` and ``profile_settings``: what it was analysed with
        (a job from before profiles takes the profile its worker used); ``findings``: what it found
        (``animals``, ``tracks``, ``species``; :func:`~wildswarm.jobs.model.findings_of` a summary)."""
        found = findings or {}
        job = self._one("recording a finished job",
                         "UPDATE jobs SET status = 'done', output = %(output)s, outputs = %(outputs)s, "
                         "frames_done = %(frames)s, frames_total = %(frames)s, untrained = %(untrained)s, "
                         "timings = %(timings)s, finished_at = now(), error = NULL, lease_owner = NULL, "
                         "profile = coalesce(profile, %(profile)s), "
                         "profile_settings = coalesce(%(psettings)s, profile_settings), "
                         "animals = %(animals)s, tracks = %(tracks)s, species = %(species)s, "
                         f"lease_until = NULL, {CHANGED} WHERE {MINE} RETURNING *",
                         self._params(job_id, owner, output=output, outputs=Jsonb(sorted(outputs)), frames=frames,
                                      untrained=bool(untrained), timings=Jsonb(timings), profile=profile or None,
                                      psettings=Jsonb(profile_settings) if profile_settings else None,
                                      animals=found.get("animals"), tracks=found.get("tracks"),
                                      species=Jsonb(found.get("species") or {})))
        if job is not None and job.parent_id:
            self._sum_segments(job.parent_id)
        return job

    def fail(self, job_id: str, owner: str, reason: str) -> Job | None:
        return self._one("recording a failed job",
                         "UPDATE jobs SET status = 'failed', error = %(reason)s, finished_at = now(), "
                         f"lease_owner = NULL, lease_until = NULL, {CHANGED} WHERE {MINE} RETURNING *",
                         self._params(job_id, owner, reason=db_text(reason)))

    def requeue(self, job_id: str, owner: str, reason: str, delay_seconds: float = 0.0) -> Job | None:
        """Give the job back, to be tried again after ``delay_seconds`` (its attempts stay counted)."""
        # A segment whose video no longer waits for it (the video failed meanwhile) would never be claimed
        # again: it ends with its video instead of waiting, queued, for ever.
        return self._one("requeueing a job",
                         f"UPDATE jobs SET status = CASE WHEN {PARENT_WAITS} THEN 'queued' ELSE 'failed' END, "
                         f"error = CASE WHEN {PARENT_WAITS} THEN %(reason)s ELSE 'its video failed' END, "
                         f"finished_at = CASE WHEN {PARENT_WAITS} THEN finished_at ELSE now() END, "
                         "lease_owner = NULL, lease_until = NULL, "
                         f"retry_at = CASE WHEN {PARENT_WAITS} THEN now() + make_interval(secs => %(delay)s) END, "
                         f"{CHANGED} WHERE {MINE} RETURNING *",
                         self._params(job_id, owner, reason=db_text(reason), delay=float(delay_seconds)))

    # --- the reconciler's transitions ---------------------------------------------------------------
    def fail_abandoned(self, job_id: str, reason: str) -> Job | None:
        """A dead-lettered job that nobody holds: failed. None if it finished or a live worker has it."""
        return self._one("recording a dead-lettered job",
                         "UPDATE jobs SET status = 'failed', error = %(reason)s, finished_at = now(), "
                         "lease_owner = NULL, lease_until = NULL, publish_pending = false, "
                         f"{CHANGED} WHERE id = %(id)s AND (status = 'queued' OR ({EXPIRED})) RETURNING *",
                         self._params(job_id, reason=db_text(reason)))

    def requeue_expired(self, grace_seconds: float) -> list[Job]:
        """Running jobs whose worker stopped heartbeating ``grace_seconds`` ago: queued, to be published.
        A segment whose video no longer waits for it (the video failed) is never claimed again: it fails."""
        with self.db.connection("ending abandoned segments") as conn:
            conn.execute("UPDATE jobs SET status = 'failed', error = 'its video failed', finished_at = now(), "
                         f"lease_owner = NULL, lease_until = NULL, publish_pending = false, {CHANGED} "
                         "WHERE status = 'running' AND parent_id IS NOT NULL AND lease_until < now() - "
                         f"make_interval(secs => %s) AND NOT {PARENT_WAITS}", (float(grace_seconds),))
        return self._many("requeueing abandoned jobs",
                          "UPDATE jobs SET status = 'queued', publish_pending = true, lease_owner = NULL, "
                          "lease_until = NULL, error = 'the worker running it stopped answering', "
                          f"{CHANGED} WHERE status = 'running' AND lease_until < now() - "
                          f"make_interval(secs => %s) AND {PARENT_WAITS} RETURNING *", (float(grace_seconds),))

    def pending(self, limit: int = 100) -> list[Job]:
        """Queued jobs whose message is not confirmed yet (the broker was down), oldest first."""
        return self._many("listing pending jobs", "SELECT * FROM jobs WHERE publish_pending AND status = 'queued' "
                                                  f"AND {PARENT_WAITS} ORDER BY created_at LIMIT %s", (limit,))

    def unannounced(self, older_than_seconds: float, limit: int = 100) -> list[Job]:
        """Queued jobs last published over ``older_than_seconds`` ago and due now, oldest first."""
        return self._many("listing stale jobs",
                          "SELECT * FROM jobs WHERE status = 'queued' AND NOT publish_pending "
                          "AND (published_at IS NULL OR published_at < now() - make_interval(secs => %s)) "
                          f"AND (retry_at IS NULL OR retry_at <= now()) AND {PARENT_WAITS} "
                          "ORDER BY published_at NULLS FIRST LIMIT %s",
                          (float(older_than_seconds), limit))

    # --- a person's transitions ----------------------------------------------------------------------
    def reset_for_retry(self, job_id: str, restore_input: Callable[[Job], str],
                        stale_seconds: float) -> Job:
        """Make a failed (or stranded) job queued again, publish pending; :class:`JobConflict` if it may not be.

        ``restore_input(job)`` puts a failed job's input back into input/ and
        returns its name there; it runs while the row is locked, so two retries
        of one job are one retry and one conflict.
        """
        if not JOB_ID.fullmatch(job_id):
            raise JobError(f"no job {job_id[:64]!r}")
        with self.db.connection("retrying a job") as conn, conn.transaction():
            row = conn.execute("SELECT *, lease_until < now() AS expired, published_at < now() - "
                               "make_interval(secs => %s) AS stale FROM jobs WHERE id = %s FOR UPDATE",
                               (float(stale_seconds), job_id)).fetchone()
            if row is None:
                raise JobError(f"no job {job_id}")
            job = Job.from_row(row)
            if job.is_segment:
                raise JobConflict(f"job {job.id} is segment {job.segment} of job {job.parent_id}; retry that one")
            if job.refused:
                raise JobConflict(f"job {job.id} was refused ({job.error}); upload a valid video instead")
            if job.status is JobStatus.DONE or (job.status is JobStatus.RUNNING and not row["expired"]):
                raise JobConflict(f"job {job.id} is {job.status.value}; only a failed, cancelled or stranded job "
                                  "can be retried")
            if job.status is JobStatus.QUEUED and (job.publish_pending or not row["stale"]):
                raise JobConflict(f"job {job.id} is already queued")
            ended = job.status in (JobStatus.FAILED, JobStatus.CANCELLED)
            name = restore_input(job) if ended else job.input_name
            attempts = "0" if ended else "attempts"
            row = conn.execute(f"UPDATE jobs SET status = 'queued', input_name = %s, attempts = {attempts}, "
                               f"replans = 0, {RESET}, publish_pending = true, {NOTIFY_AGAIN}, {CHANGED} "
                               "WHERE id = %s RETURNING *",
                               (name, job_id)).fetchone()
            # its unfinished segment jobs go (finished ones stay: their results are kept for the rerun)
            conn.execute("DELETE FROM jobs WHERE parent_id = %s AND status <> 'done'", (job_id,))
            conn.execute("UPDATE jobs SET input_name = %s WHERE parent_id = %s", (name, job_id))
        return Job.from_row(row)

    def cancel(self, job_id: str, reason: str) -> Job:
        """Cancel a queued or running video (and its unfinished segments): :class:`JobConflict` if it has
        ended or is a segment, :class:`JobError` if there is none. A running job's worker finds the job no
        longer its own at its next progress report or lease renewal, and stops."""
        cancel = ("UPDATE jobs SET status = 'cancelled', error = %(reason)s, finished_at = now(), lease_owner = NULL, "
                  f"lease_until = NULL, retry_at = NULL, publish_pending = false, {CHANGED} "
                  "WHERE {} AND status IN ('queued', 'running') RETURNING *")
        if not JOB_ID.fullmatch(job_id):          # never a query for what cannot be an id
            raise JobError(f"no job {job_id[:64]!r}")
        params = {"id": job_id, "reason": db_text(reason)}
        with self.db.connection("cancelling a job") as conn, conn.transaction():
            row = conn.execute(cancel.format("id = %(id)s AND parent_id IS NULL"), params).fetchone()
            if row is not None:
                conn.execute(cancel.format("parent_id = %(id)s"), params)
                return Job.from_row(row)
        raise self._refusal(job_id, "cancel", "only a queued or running job can be cancelled")

    def delete(self, job_id: str) -> Job:
        """Remove a finished video's record (and its segments'); :class:`JobConflict` unless it is done,
        failed or cancelled, :class:`JobError` if there is none. Its files are the caller's to remove."""
        if not JOB_ID.fullmatch(job_id):          # never a query for what cannot be an id
            raise JobError(f"no job {job_id[:64]!r}")
        with self.db.connection("deleting a job") as conn:        # gone, and said so to the pages that poll
            row = conn.execute("WITH gone AS (DELETE FROM jobs WHERE id = %s AND parent_id IS NULL AND "
                               "status IN ('done', 'failed', 'cancelled') RETURNING *), "
                               "said AS (INSERT INTO deleted_jobs (id, seq) SELECT id, nextval('job_seq') FROM gone "
                               "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, deleted_at = now()) "
                               "SELECT * FROM gone", (job_id,)).fetchone()
            if row is not None:
                conn.execute("DELETE FROM deleted_jobs WHERE deleted_at < now() - interval '1 day'")
                return Job.from_row(row)
        raise self._refusal(job_id, "delete", "only a done, failed or cancelled job can be deleted")

    def _refusal(self, job_id: str, verb: str, rule: str) -> JobError:
        """Why a person's ``verb`` did not happen to ``job_id``: there is no such job, it is a segment (act on
        its video), or its status is not one ``rule`` allows."""
        job = self.find(job_id)
        if job is None:
            return JobError(f"no job {job_id[:64]}")
        if job.is_segment:
            return JobConflict(f"job {job.id} is segment {job.segment} of job {job.parent_id}; {verb} that one")
        return JobConflict(f"job {job.id} is {job.status.value}; {rule}")
