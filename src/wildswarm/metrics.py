"""Every Prometheus metric of wildswarm, defined once.

Names follow ``wildswarm_<noun>_<unit|total>``; labels take a few fixed values
(an outcome, a stage, a component), never a video or job name. Each process
serves the default registry on its own port with :func:`serve`.
"""
from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

#: Seconds, from a trivial job to a multi-hour video.
JOB_BUCKETS = (0.05, 0.25, 1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
STAGE_BUCKETS = (0.01, 0.05, 0.25, 1, 5, 15, 60, 300, 900, 3600)

# --- worker ------------------------------------------------------------------
#: outcome: done | failed | retried | duplicate | skipped | deferred | lost | rejected | interrupted | split |
#: cancelled | error
JOBS = Counter("wildswarm_jobs_total", "Jobs a worker finished handling, by outcome (failed: also those the "
               "producer's reconciler failed, dead-lettered)", ["outcome"])
JOB_OUTCOMES = ("done", "failed", "retried", "duplicate", "skipped", "deferred", "lost", "rejected", "interrupted",
                "split", "cancelled", "error")
for _outcome in JOB_OUTCOMES:    # exported as 0 from the start: increase() and rate() of a series born at 1 miss it
    JOBS.labels(_outcome)
JOB_DURATION = Histogram("wildswarm_job_duration_seconds", "Wall time of handling one job, by outcome",
                         ["outcome"], buckets=JOB_BUCKETS)
STAGE_DURATION = Histogram("wildswarm_stage_duration_seconds", "Time spent per pipeline stage of a job",
                           ["stage"], buckets=STAGE_BUCKETS)
FRAMES_ANALYSED = Counter("wildswarm_frames_analysed_total", "Video frames analysed by this worker")
SEGMENTS = Counter("wildswarm_segments_total",
                   "Segments of long videos: planned (to analyse), replanned (queued again under this worker's "
                   "settings), done and failed, by this worker", ["outcome"])
MERGES = Counter("wildswarm_merges_total", "Merges of a long video's segments by this worker, by outcome",
                 ["outcome"])
JOBS_IN_PROGRESS = Gauge("wildswarm_inprogress_jobs", "Jobs this worker is analysing now (0 or 1)")
MODEL_LOAD = Gauge("wildswarm_model_load_seconds", "Time the worker took to load its models at start")
PIPELINES = Counter("wildswarm_pipelines_total",
                    "Pipelines for a job's analysis profile: loaded, reused from the worker's cache, or dropped "
                    "from it to make room", ["result"])
PIPELINE_CACHE_BYTES = Gauge("wildswarm_pipeline_cache_bytes", "Memory of the models in the worker's pipeline cache")
#: 0 while the worker's job loop can take work; else how long it has not been able to (its healthcheck reads it)
WORKER_STALLED = Gauge("wildswarm_worker_stalled_seconds",
                       "Seconds the worker's job loop has been unable to take work (0: healthy)")

# --- producer ----------------------------------------------------------------
#: result: queued | known | duplicate | refused
FILES_SEEN = Counter("wildswarm_files_seen_total", "Settled files the producer looked at, by result", ["result"])
JOBS_PUBLISHED = Counter("wildswarm_jobs_published_total", "Jobs published to the queue and confirmed",
                         ["component"])
PUBLISH_FAILURES = Counter("wildswarm_publish_failures_total", "Publishes the broker did not confirm",
                           ["component"])

# --- both --------------------------------------------------------------------
NOTIFICATIONS = Counter("wildswarm_notifications_total", "Webhook notifications of ended jobs, by result",
                        ["result"])   # sent | failed (tried again later) | gave_up
BROKER_RECONNECTS = Counter("wildswarm_broker_reconnects_total", "Times a connection to the broker was lost",
                            ["component"])

#: Stage names the pipeline reports; any other is counted as "other" to bound the label.
KNOWN_STAGES = frozenset({"load", "decode", "detect", "classify", "pose", "render", "write", "total"})


def stage_label(name: str) -> str:
    return name if name in KNOWN_STAGES else "other"


def serve(port: int, addr: str = "0.0.0.0") -> int:
    """Serve ``/metrics`` on ``port`` (0: any free port); return the port, or -1 if disabled (< 0)."""
    if port < 0:
        return -1
    server, _thread = start_http_server(port, addr=addr)
    actual = server.server_address[1]
    log.info("metrics on http://%s:%d/metrics", addr, actual)
    return actual
