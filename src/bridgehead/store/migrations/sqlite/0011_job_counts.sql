-- Exact job counts by (cluster, tenant, state), kept by triggers in the transactions that
-- change jobs, so the web UI's counts and the Clusters page never count a big jobs table.
-- SQLite has one writer at a time: the triggers update job_counts in place (PostgreSQL
-- appends deltas instead, see its 0011). job_count_deltas stays empty here; it exists so
-- both stores read the counts with the same statement.
CREATE TABLE job_counts (
    cluster TEXT NOT NULL,
    tenant  TEXT NOT NULL,
    state   TEXT NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (cluster, tenant, state)
) WITHOUT ROWID;
CREATE TABLE job_count_deltas (
    cluster TEXT NOT NULL,
    tenant  TEXT NOT NULL,
    state   TEXT NOT NULL,
    n       INTEGER NOT NULL
);
INSERT INTO job_counts (cluster, tenant, state, n)
    SELECT cluster, tenant, state, COUNT(*) FROM jobs GROUP BY cluster, tenant, state;
CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO job_counts (cluster, tenant, state, n) VALUES (NEW.cluster, NEW.tenant, NEW.state, 1)
        ON CONFLICT (cluster, tenant, state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER jobs_count_update AFTER UPDATE OF cluster, tenant, state ON jobs
WHEN NEW.cluster IS NOT OLD.cluster OR NEW.tenant IS NOT OLD.tenant OR NEW.state IS NOT OLD.state
BEGIN
    UPDATE job_counts SET n = n - 1
        WHERE cluster = OLD.cluster AND tenant = OLD.tenant AND state = OLD.state;
    INSERT INTO job_counts (cluster, tenant, state, n) VALUES (NEW.cluster, NEW.tenant, NEW.state, 1)
        ON CONFLICT (cluster, tenant, state) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET n = n - 1
        WHERE cluster = OLD.cluster AND tenant = OLD.tenant AND state = OLD.state;
END;

-- Each cluster's queue (jobs not started) and running jobs per hour, sampled from the counts
-- by the tally pass: the highest and the latest sample of the hour. Kept two days.
CREATE TABLE cluster_history (
    cluster      TEXT NOT NULL,
    hour         REAL NOT NULL,
    queued_max   INTEGER NOT NULL,
    running_max  INTEGER NOT NULL,
    queued_last  INTEGER NOT NULL,
    running_last INTEGER NOT NULL,
    sampled_at   REAL NOT NULL,
    PRIMARY KEY (cluster, hour)
);
