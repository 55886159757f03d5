-- The analysis profile a job is analysed with (wildswarm/profiles.py), chosen when it is submitted
-- (NULL: a job from before profiles), and the settings that profile resolved to on the worker
-- that analysed it (recorded when it finishes).
ALTER TABLE jobs ADD COLUMN profile text;
ALTER TABLE jobs ADD COLUMN profile_settings jsonb NOT NULL DEFAULT '{}';
