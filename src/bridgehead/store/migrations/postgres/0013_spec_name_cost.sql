-- bridgehead_spec_name parses a job's spec as jsonb inside an EXCEPTION block (a
-- subtransaction): about 0.2 ms a row here, against the planner's default guess for a
-- function (COST 100, a fraction of a page read). With that guess, the Jobs page's name filter
-- (ORDER BY id DESC LIMIT 51) walked the primary key backwards calling it on every row: 243 ms
-- for a prefix matching 2% of 100k jobs, where jobs_name (which stores the value, so its
-- range scan calls nothing) takes 19 ms (bench/ui.py, 'train-model-1'). COST 1000 makes the
-- planner weigh the calls; a common prefix still walks the key (1 ms for 'forecast').
ALTER FUNCTION bridgehead_spec_name(TEXT) COST 1000;
