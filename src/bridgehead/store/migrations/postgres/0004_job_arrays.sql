-- Job arrays: an array job is a parent (elements = its number of elements) and one job per
-- element (parent_id, array_index), created together. Elements are never claimed.
ALTER TABLE jobs ADD COLUMN parent_id TEXT;
ALTER TABLE jobs ADD COLUMN array_index INTEGER;
ALTER TABLE jobs ADD COLUMN elements INTEGER;
CREATE INDEX jobs_parent ON jobs (parent_id, state) WHERE parent_id IS NOT NULL;
