-- The workers, as each says of itself: a heartbeat every WILDSWARM_WORKER_HEARTBEAT_SECONDS with
-- the job it runs and its recent rate, so the cluster page shows who is alive and what each does
-- without Prometheus. One row per worker process (owner: node/process, as on a job's lease); a
-- clean stop records stopped_at; a killed worker just stops being seen.
CREATE TABLE workers (
    owner         text PRIMARY KEY,
    node          text NOT NULL,
    pid           integer,
    version       text,
    started_at    timestamptz NOT NULL DEFAULT now(),
    seen_at       timestamptz NOT NULL DEFAULT now(),
    stopped_at    timestamptz,
    job_id        text,
    jobs_handled  integer NOT NULL DEFAULT 0,
    frames        bigint NOT NULL DEFAULT 0,       -- frames it analysed since it started
    frames_per_s  real NOT NULL DEFAULT 0          -- over its last few minutes
);
CREATE INDEX workers_seen_idx ON workers (seen_at DESC);
-- Throughput by the hour: finished jobs in time order.
CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE finished_at IS NOT NULL;
