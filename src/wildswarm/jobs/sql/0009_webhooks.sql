-- Notifications: a webhook URL given with a job (or its deployment's, when the job names none) gets a
-- JSON POST when the job finishes, fails or is cancelled. The producer's notifier sends it, retried
-- with a doubling backoff; nothing waits for it. notify_state: NULL (no webhook), 'waiting' (to send
-- once the job has ended, not before notify_at), 'sent', 'gave_up' (notify_error says why).
ALTER TABLE jobs ADD COLUMN webhook_url text;
ALTER TABLE jobs ADD COLUMN notify_state text CHECK (notify_state IN ('waiting', 'sent', 'gave_up'));
ALTER TABLE jobs ADD COLUMN notify_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN notify_at timestamptz;
ALTER TABLE jobs ADD COLUMN notify_error text;
ALTER TABLE jobs ADD COLUMN notified_at timestamptz;
CREATE INDEX jobs_notify_idx ON jobs (notify_at NULLS FIRST) WHERE notify_state = 'waiting';
ALTER TABLE deployments ADD COLUMN webhook_url text;
