-- The notifier's pass (notifier.Notifications.due, every notify_seconds) asks for ended whole videos whose
-- notification waits; jobs_notify_idx held every waiting one, the queued and running included (a job with a
-- webhook waits from its upload), so a year of videos uploaded at once with their deployment's webhook had each
-- pass read the whole backlog (29 ms at 50,000 queued, growing with them). Its predicate is now the pass's own.
DROP INDEX jobs_notify_idx;
CREATE INDEX jobs_notify_idx ON jobs (notify_at NULLS FIRST, finished_at)
    WHERE notify_state = 'waiting' AND status IN ('done', 'failed', 'cancelled') AND parent_id IS NULL;
