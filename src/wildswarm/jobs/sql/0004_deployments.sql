-- Where and when videos were recorded (a camera-trap deployment: one camera at one place for a
-- while), kept with the jobs of its videos; and each video's own metadata, read at intake.
-- Fields follow Camtrap DP 1.0.2's deployments table; everything but the id is optional here (an
-- export that needs a field asks for it rather than inventing it).
CREATE TABLE deployments (
    id                     text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
    location_id            text,
    location_name          text,
    latitude               double precision CHECK (latitude BETWEEN -90 AND 90),
    longitude              double precision CHECK (longitude BETWEEN -180 AND 180),
    coordinate_uncertainty integer CHECK (coordinate_uncertainty >= 1),      -- metres
    deployment_start       timestamptz,
    deployment_end         timestamptz,
    camera_id              text,
    camera_model           text,
    camera_height          real CHECK (camera_height >= 0),                 -- metres
    habitat                text,
    comments               text,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CHECK ((latitude IS NULL) = (longitude IS NULL)),
    CHECK (deployment_end IS NULL OR deployment_start IS NULL OR deployment_end >= deployment_start)
);
ALTER TABLE jobs ADD COLUMN deployment_id text REFERENCES deployments (id) ON UPDATE CASCADE;
ALTER TABLE jobs ADD COLUMN media jsonb NOT NULL DEFAULT '{}';           -- creation time, camera, given time
CREATE INDEX jobs_deployment_idx ON jobs (deployment_id) WHERE deployment_id IS NOT NULL;
