-- Exact job counts by (cluster, tenant, state), kept by the transactions that change jobs, so
-- the web UI's counts and the Clusters page never count a big jobs table (bench/ui.py, 1M
-- jobs: a GROUP BY of the active jobs took 1.9 s). One counter row per key updated by every
-- writer would serialize all writers of that key (a hot row): instead each statement on jobs
-- appends its net change per key to job_count_deltas (insert-only, no index, no lock
-- between writers), and a periodic pass (the "tally" consumer, one server at a time) folds
-- the deltas into job_counts. A reader sums both in one statement: its snapshot sees a
-- writer's jobs rows and that writer's delta together, or neither, so the sum is exact.
LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE;
CREATE TABLE job_counts (
    cluster TEXT NOT NULL,
    tenant  TEXT NOT NULL,
    state   TEXT NOT NULL,
    n       BIGINT NOT NULL,
    PRIMARY KEY (cluster, tenant, state)
);
CREATE TABLE job_count_deltas (
    cluster TEXT NOT NULL,
    tenant  TEXT NOT NULL,
    state   TEXT NOT NULL,
    n       BIGINT NOT NULL
);
INSERT INTO job_counts (cluster, tenant, state, n)
    SELECT cluster, tenant, state, COUNT(*) FROM jobs GROUP BY cluster, tenant, state;

-- Statement-level triggers with transition tables: one delta row per key a statement
-- changed (a 1,000-job submit or a lease renewal of 1,000 jobs writes one or none), not one
-- per job.
CREATE FUNCTION bridgehead_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_count_deltas (cluster, tenant, state, n)
        SELECT cluster, tenant, state, COUNT(*) FROM counted_new
        GROUP BY cluster, tenant, state;
    RETURN NULL;
END
$$;
CREATE FUNCTION bridgehead_count_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_count_deltas (cluster, tenant, state, n)
        SELECT cluster, tenant, state, SUM(d) FROM (
            SELECT cluster, tenant, state, 1 AS d FROM counted_new
            UNION ALL
            SELECT cluster, tenant, state, -1 AS d FROM counted_old) AS c
        GROUP BY cluster, tenant, state HAVING SUM(d) <> 0;
    RETURN NULL;
END
$$;
CREATE FUNCTION bridgehead_count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_count_deltas (cluster, tenant, state, n)
        SELECT cluster, tenant, state, -COUNT(*) FROM counted_old
        GROUP BY cluster, tenant, state;
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS counted_new
    FOR EACH STATEMENT EXECUTE FUNCTION bridgehead_count_inserted();
CREATE TRIGGER jobs_count_update AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS counted_old NEW TABLE AS counted_new
    FOR EACH STATEMENT EXECUTE FUNCTION bridgehead_count_updated();
CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS counted_old
    FOR EACH STATEMENT EXECUTE FUNCTION bridgehead_count_deleted();
-- TRUNCATE has no transition table: it empties the counts with the jobs.
CREATE FUNCTION bridgehead_count_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM job_count_deltas;
    DELETE FROM job_counts;
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_count_truncate AFTER TRUNCATE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION bridgehead_count_truncated();

-- Each cluster's queue (jobs not started: queued, claimed, submitting, submitted) and
-- running jobs per hour, sampled from the counts by the tally pass: the highest and the
-- latest sample of the hour. Kept two days.
CREATE TABLE cluster_history (
    cluster      TEXT NOT NULL,
    hour         DOUBLE PRECISION NOT NULL,
    queued_max   BIGINT NOT NULL,
    running_max  BIGINT NOT NULL,
    queued_last  BIGINT NOT NULL,
    running_last BIGINT NOT NULL,
    sampled_at   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (cluster, hour)
);
