-- Long videos: a job split into segment jobs. A segment job is a row of this table too (so the
-- claims, leases, retries, delays and the reconciler work for it unchanged), with the split job as
-- its parent. The worker that finishes the last segment merges them (jobs.store: claim_merge).
ALTER TABLE jobs ADD COLUMN parent_id text REFERENCES jobs (id) ON DELETE CASCADE;
ALTER TABLE jobs ADD COLUMN segment integer CHECK (segment >= 0);        -- a segment job: its number
ALTER TABLE jobs ADD COLUMN segments integer NOT NULL DEFAULT 0;         -- a split job: how many
ALTER TABLE jobs ADD COLUMN plan jsonb;                                  -- a split job: its segment plan
ALTER TABLE jobs ADD CHECK ((parent_id IS NULL) = (segment IS NULL));
CREATE INDEX jobs_parent_idx ON jobs (parent_id, segment) WHERE parent_id IS NOT NULL;
