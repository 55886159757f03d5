-- The jobs page's filters by deployment, profile and weights, each read newest first from an index (as status
-- and node are): with only the deployment's id indexed, last year's deployment was found by walking every newer
-- video (150 ms at 300,000 jobs), and a profile used for a few videos, or untrained weights, read every row (75-120
-- ms), for the page and again for its count. The deployment's index also serves its export and a renamed
-- deployment's cascade (segment jobs name no deployment, so it is not limited to whole videos).
DROP INDEX jobs_deployment_idx;
CREATE INDEX jobs_deployment_created_idx ON jobs (deployment_id, created_at DESC, id DESC) WHERE deployment_id IS NOT NULL;
CREATE INDEX jobs_profile_created_idx ON jobs (profile, created_at DESC, id DESC) WHERE parent_id IS NULL;
CREATE INDEX jobs_untrained_created_idx ON jobs (untrained, created_at DESC, id DESC) WHERE parent_id IS NULL;
