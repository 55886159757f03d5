-- What the analysis of a video found, recorded when its job is done, so listings can filter on it
-- (camera-trap users first set aside the empty videos, then look for a species): the most animals
-- in one frame (0: none; NULL: not analysed, or before this column), the distinct animals tracked,
-- and each species the classifier named with how many tracked animals it was the species of.
ALTER TABLE jobs ADD COLUMN animals integer;
ALTER TABLE jobs ADD COLUMN tracks integer;
ALTER TABLE jobs ADD COLUMN species jsonb NOT NULL DEFAULT '{}';
CREATE INDEX jobs_species_idx ON jobs USING gin (species) WHERE parent_id IS NULL AND species <> '{}';
CREATE INDEX jobs_empty_idx ON jobs (created_at DESC, id DESC) WHERE parent_id IS NULL AND animals = 0;
CREATE INDEX jobs_found_idx ON jobs (created_at DESC, id DESC) WHERE parent_id IS NULL AND animals > 0;
