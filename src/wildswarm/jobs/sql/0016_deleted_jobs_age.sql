-- Each deletion forgets the deletions over a day old (store.delete): without an index on their age it read every
-- deletion of the last day, once for each job deleted, so clearing out a year of videos in bulk (1,000 a request)
-- grew with the square of the jobs (28 ms a job at 100,000 deletions: 28 s a request).
CREATE INDEX deleted_jobs_deleted_idx ON deleted_jobs (deleted_at);
