-- The job store. One row per video (the id is a hash of its content).
-- Only wildswarm.jobs.store writes these rows, through named transitions.

CREATE SEQUENCE job_seq;

CREATE TABLE jobs (
    id              text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{8,64}$'),
    input_name      text NOT NULL CHECK (length(input_name) BETWEEN 1 AND 255),
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'done', 'failed')),
    frames_done     integer NOT NULL DEFAULT 0,
    frames_total    integer NOT NULL DEFAULT 0,
    node            text,
    attempts        integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    -- the worker that holds a running job, and until when (it heartbeats the lease)
    lease_owner     text,
    lease_until     timestamptz,
    -- a retriable failure waits until then before it is tried again
    retry_at        timestamptz,
    -- when a message for it was last confirmed by the broker
    published_at    timestamptz,
    publish_pending boolean NOT NULL DEFAULT false,
    refused         boolean NOT NULL DEFAULT false,
    output          text,
    outputs         jsonb NOT NULL DEFAULT '[]',
    error           text,
    untrained       boolean NOT NULL DEFAULT false,
    size_bytes      bigint,
    timings         jsonb NOT NULL DEFAULT '{}',
    -- larger for every later change of any job: "what changed since" is seq > n
    seq             bigint NOT NULL DEFAULT nextval('job_seq'),
    CHECK (status <> 'running' OR (lease_owner IS NOT NULL AND lease_until IS NOT NULL))
);

-- Listing newest first, all or by status or node; paging by (created_at, id).
CREATE INDEX jobs_created_idx ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_status_created_idx ON jobs (status, created_at DESC, id DESC);
CREATE INDEX jobs_node_created_idx ON jobs (node, created_at DESC, id DESC);
-- What changed since the last poll.
CREATE UNIQUE INDEX jobs_seq_idx ON jobs (seq);
-- Name search (substring, any case).
CREATE INDEX jobs_name_trgm_idx ON jobs USING gin (lower(input_name) gin_trgm_ops);
-- The reconciler's questions, each a small partial index.
CREATE INDEX jobs_pending_idx ON jobs (created_at) WHERE publish_pending;
CREATE INDEX jobs_queued_idx ON jobs (published_at) WHERE status = 'queued';
CREATE INDEX jobs_running_idx ON jobs (lease_until) WHERE status = 'running';

-- One-time facts about this store (e.g. that the JSON records of earlier versions were imported).
CREATE TABLE store_meta (
    key   text PRIMARY KEY,
    value text NOT NULL,
    at    timestamptz NOT NULL DEFAULT now()
);
