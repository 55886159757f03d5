"""The pieces of SQL the job store's transitions share: what a change marks, what a lease is, whose a
running job is, what a retry resets. Each transition (``store``, ``long_videos``) writes its own
statement around them, its precondition in its ``WHERE`` clause."""
from __future__ import annotations

import re

JOB_ID = re.compile(r"[0-9a-f]{8,64}")
CHANGED = "seq = nextval('job_seq'), updated_at = now()"
#: A split video's progress: the sum of its segments' frames, its total raised to it where the header's
#: estimate fell short (a Matroska's duration times its rate), so its progress never passes 1.
SUM_SEGMENTS = ("UPDATE jobs SET frames_done = s.n, frames_total = greatest(jobs.frames_total, s.n){} "
                "FROM (SELECT coalesce(sum(frames_done), 0) AS n FROM jobs c WHERE c.parent_id = %(id)s) s "
                "WHERE jobs.id = %(id)s")
LEASE = "lease_until = now() + make_interval(secs => %(lease)s)"
MINE = "id = %(id)s AND status = 'running' AND lease_owner = %(owner)s"
EXPIRED = "status = 'running' AND lease_until < now()"
RESET = ("frames_done = 0, frames_total = 0, node = NULL, started_at = NULL, finished_at = NULL, "
         "lease_owner = NULL, lease_until = NULL, retry_at = NULL, error = NULL")
# A retried job notifies its webhook again when it ends.
NOTIFY_AGAIN = ("notify_state = CASE WHEN webhook_url IS NOT NULL THEN 'waiting' END, notify_attempts = 0, "
                "notify_at = NULL, notify_error = NULL, notified_at = NULL")
SPLIT_OWNER = "segments"      # the lease owner of a split job while its segment jobs run
# A segment job may run only while its video's job waits for it.
PARENT_WAITS = (f"(parent_id IS NULL OR EXISTS (SELECT 1 FROM jobs p WHERE p.id = jobs.parent_id "
                f"AND p.status = 'running' AND p.lease_owner = '{SPLIT_OWNER}'))")


def db_text(reason: str, limit: int = 4000) -> str:
    """A reason as PostgreSQL text takes it: no NUL characters, bounded length."""
    return reason.replace("\x00", "\\0")[:limit]
