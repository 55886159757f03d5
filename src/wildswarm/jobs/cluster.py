"""What the job store says of the whole cluster's work: the queue, the backlog and the throughput.

Read by the cluster page (``web/cluster.py``) every few seconds; each is one query over small
partial indexes (queued and running jobs, finished jobs of the last hours).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

# A split video does no analysis itself: its segments do (and count their frames).
WORKS = "NOT (parent_id IS NULL AND segments > 0)"


@dataclass(frozen=True)
class Queue:
    queued: int              # waiting for a worker (segments included)
    retrying: int            # of those, waiting out a retry delay
    pending_publish: int     # recorded while the broker was unreachable
    running: int
    dead_lettered: int       # failed because the broker gave up on their messages
    failed: int
    done: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Backlog:
    frames: int              # frames still to analyse, estimated where a job has not started
    jobs: int
    estimated_jobs: int      # jobs whose frames are an estimate from the video's header (or unknown)
    unknown_jobs: int        # jobs whose video did not say how long it is

    def eta_seconds(self, frames_per_s: float) -> float | None:
        if self.frames == 0:
            return 0.0
        return self.frames / frames_per_s if frames_per_s > 0 else None


class ClusterStats:
    def __init__(self, db):
        self.db = db

    def queue(self) -> Queue:
        with self.db.connection("counting the queue") as conn:
            # one count a status, each read from an index of its own (jobs_queued_idx, jobs_pending_idx,
            # jobs_running_idx, jobs_status_created_idx, jobs_whole_status_idx): one pass over every row,
            # as this was, took 190 ms at a million jobs for each open cluster page every 5 s
            r = conn.execute(
                "SELECT (SELECT count(*) FROM jobs WHERE status = 'queued') AS queued, "
                "(SELECT count(*) FROM jobs WHERE status = 'queued' AND retry_at > now()) AS retrying, "
                "(SELECT count(*) FROM jobs WHERE publish_pending) AS pending_publish, "
                f"(SELECT count(*) FROM jobs WHERE status = 'running' AND {WORKS}) AS running, "
                "(SELECT count(*) FROM jobs WHERE status = 'failed' AND starts_with(error, 'dead-lettered')) "
                "AS dead_lettered, "
                "(SELECT count(*) FROM jobs WHERE status = 'failed' AND parent_id IS NULL) AS failed, "
                "(SELECT count(*) FROM jobs WHERE status = 'done' AND parent_id IS NULL) AS done").fetchone()
        return Queue(**r)

    def backlog(self, sampling_fps: Callable[[str | None], float]) -> Backlog:
        """Frames left to analyse: a started job's own count, else its video's frames (from its header,
        read at intake) at the sampling rate ``sampling_fps(profile)`` its profile analyses at."""
        from wildswarm.pipeline.video import sample_step      # PyAV: the web image has it
        with self.db.connection("measuring the backlog") as conn:
            rows = conn.execute(
                "SELECT frames_done, frames_total, profile, media->>'frames' AS frames, media->>'fps' AS fps "
                f"FROM jobs WHERE status IN ('queued', 'running') AND {WORKS}").fetchall()
        frames = estimated = unknown = 0
        for r in rows:
            if r["frames_total"]:
                frames += max(0, r["frames_total"] - r["frames_done"])
                continue
            estimated += 1
            try:
                n, fps = int(r["frames"]), float(r["fps"])
            except (TypeError, ValueError):
                unknown += 1
                continue
            frames += math.ceil(n / sample_step(fps, sampling_fps(r["profile"])) - 1e-9)   # as read_frames samples
        return Backlog(frames, len(rows), estimated, unknown)

    def throughput(self, hours: float = 6.0, bucket_minutes: int = 10) -> list[dict]:
        """Per ``bucket_minutes`` over the last ``hours``, oldest first: videos finished per hour and frames
        analysed per second (a job's frames counted when it finished), empty buckets included."""
        with self.db.connection("measuring the throughput") as conn:
            rows = conn.execute(
                "WITH b AS (SELECT date_bin(make_interval(mins => %(m)s), finished_at, timestamptz '2000-01-01') AS t, "
                "parent_id, frames_done, segments FROM jobs "
                "WHERE finished_at > now() - make_interval(secs => %(s)s) AND status = 'done') "
                "SELECT t, count(*) FILTER (WHERE parent_id IS NULL) AS videos, "
                f"coalesce(sum(frames_done) FILTER (WHERE {WORKS}), 0) AS frames FROM b "
                "GROUP BY t ORDER BY t", {"m": bucket_minutes, "s": hours * 3600}).fetchall()
            now = conn.execute("SELECT date_bin(make_interval(mins => %s), now(), timestamptz '2000-01-01') AS last, "
                               "now() AS now", (bucket_minutes,)).fetchone()
        seen = {round(r["t"].timestamp()): r for r in rows}
        width = bucket_minutes * 60
        last = round(now["last"].timestamp())
        out = []
        for k in range(max(1, int(hours * 60 // bucket_minutes)) - 1, -1, -1):
            t = last - k * width
            r = seen.get(t)
            videos, frames = (r["videos"], int(r["frames"])) if r else (0, 0)
            span = width if k else max(60.0, now["now"].timestamp() - last)     # the current bucket: so far
            out.append({"t": t, "videos_per_hour": round(videos * 3600 / span, 2),
                        "frames_per_s": round(frames / span, 3), "videos": videos, "frames": frames})
        return out
