-- What a page polling for changes (?since=<seq>) must take off: a deleted video's id and the change
-- number of its deletion, drawn from job_seq like every other change. Kept for a day: a page that
-- has not polled for that long loads itself again anyway (its rows are a day old).
CREATE TABLE deleted_jobs (
    id          text PRIMARY KEY,
    seq         bigint NOT NULL,
    deleted_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deleted_jobs_seq_idx ON deleted_jobs (seq);
