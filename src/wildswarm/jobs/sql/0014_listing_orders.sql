-- The jobs page's other orders (jobs.query: ORDERS), each read in order from an index of its own: with none,
-- a page sorted by most animals, longest or name read and sorted every video (270-340 ms at 300,000 jobs,
-- for each page and each change of a filter). Each key is the order's ORDER BY, word for word.
CREATE INDEX jobs_animals_order_idx ON jobs (animals DESC NULLS LAST, tracks DESC NULLS LAST, created_at DESC, id DESC)
    WHERE parent_id IS NULL;
CREATE INDEX jobs_longest_order_idx ON jobs (((media->>'duration_s')::float) DESC NULLS LAST, created_at DESC, id DESC)
    WHERE parent_id IS NULL;
CREATE INDEX jobs_name_order_idx ON jobs (lower(input_name), id) WHERE parent_id IS NULL;
