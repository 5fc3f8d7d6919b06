-- An attempt lost to the infrastructure (its node, worker or cluster died) gets one new
-- attempt: the job is queued again with attempt + 1. Its logs go on after the lost attempt's
-- (and a marker line): log_base is where the current attempt's bytes start, per stream, as
-- JSON ({"stdout": n, "stderr": n}); NULL for a first attempt.
ALTER TABLE jobs ADD COLUMN log_base TEXT;
