-- Counts the jobs page (its status tabs) and the cluster page (its queue, every 5 s for each open
-- page) ask: one pass over every row took 170-190 ms at a million jobs (bench/jobstore.py). These
-- let PostgreSQL count each status from an index: the whole videos by status from a narrow index
-- alone, and the few jobs waiting out a retry delay or dead-lettered from small partial ones (both
-- had to read every queued, or every failed, row).
CREATE INDEX jobs_whole_status_idx ON jobs (status) WHERE parent_id IS NULL;
CREATE INDEX jobs_retrying_idx ON jobs (retry_at) WHERE status = 'queued' AND retry_at IS NOT NULL;
CREATE INDEX jobs_dead_lettered_idx ON jobs (finished_at) WHERE status = 'failed' AND starts_with(error, 'dead-lettered');
