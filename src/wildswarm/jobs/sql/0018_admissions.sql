-- An admission under way: what an upload, a `wildswarm submit` or a file in a profile folder asked for, written
-- before its video moves into input/ and deleted by the statement that records its job. A process killed between
-- the two left a video in input/ and no job, and the producer then queued it as a file someone dropped there:
-- the default profile, no deployment, no recording time, no webhook. The producer now finishes the admission
-- with what it asked for (Intake.admit_dropped).
CREATE TABLE admissions (
    id text PRIMARY KEY,                    -- the job id its video will have: the hash of its content
    input_name text NOT NULL,               -- the name it asked for
    asked jsonb NOT NULL,                   -- source, profile, deployment_id, recorded_at, webhook
    asked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX admissions_asked_at_idx ON admissions (asked_at);
