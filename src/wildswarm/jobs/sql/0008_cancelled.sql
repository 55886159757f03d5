-- A person may cancel a job: a queued one leaves the queue (its message is acknowledged without work
-- when it comes), a running one stops at its next batch of frames. 'cancelled' is final, like done
-- and failed; it can be retried or deleted.
ALTER TABLE jobs DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled'));
