-- The modification time (ns) of a video's file when intake hashed it, beside its size_bytes: a restarted
-- producer that finds a queued job's file in input/ with both unchanged knows it without reading it all
-- again (a stack update otherwise re-read every video waiting for a worker, and the producer every upload
-- the web app had already hashed).
ALTER TABLE jobs ADD COLUMN input_mtime_ns bigint;
