-- bridgehead_spec_name and bridgehead_spec_labels (0005) catch a spec PostgreSQL cannot read
-- as jsonb with an EXCEPTION block, which starts a subtransaction: PostgreSQL refuses that in
-- parallel mode ("cannot start subtransactions during a parallel operation"). Marked PARALLEL
-- SAFE, they broke a parallel build of jobs_name (REINDEX, or 0005 itself on a big jobs table:
-- bench/ui.py hit it rebuilding the index on 20,000 jobs) and may run in a parallel plan's
-- workers. PARALLEL UNSAFE keeps them out of parallel mode.
ALTER FUNCTION bridgehead_spec_name(TEXT) PARALLEL UNSAFE;
ALTER FUNCTION bridgehead_spec_labels(TEXT) PARALLEL UNSAFE;
