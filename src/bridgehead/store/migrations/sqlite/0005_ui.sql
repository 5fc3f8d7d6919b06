-- The web UI: browser sessions, kept server-side (a cookie holds only a random secret, stored
-- here as its hash); a session lives while its token does (revoking the token ends it).
CREATE TABLE ui_sessions (
    hash       TEXT PRIMARY KEY,
    token_id   TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX ui_sessions_token ON ui_sessions (token_id);
CREATE INDEX ui_sessions_expires ON ui_sessions (expires_at);

-- An index for every filter the Jobs page offers, each ordered by id (keyset paging): state
-- (jobs_state) and time range (ids begin with their creation time) have one already.
CREATE INDEX jobs_tenant ON jobs (tenant, id);
CREATE INDEX jobs_cluster ON jobs (cluster, id);
CREATE INDEX jobs_name ON jobs (json_extract(spec, '$.name'), id);

-- A job's labels as rows, so a label filter is an index lookup rather than a JSON scan of
-- every job; filled by a trigger, so no writer of jobs has to know.
CREATE TABLE job_labels (
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (key, value, job_id)
) WITHOUT ROWID;
INSERT OR IGNORE INTO job_labels (key, value, job_id)
    SELECT l.key, l.value, jobs.id FROM jobs, json_each(jobs.spec, '$.labels') AS l;
CREATE TRIGGER jobs_labels AFTER INSERT ON jobs BEGIN
    INSERT OR IGNORE INTO job_labels (key, value, job_id)
        SELECT key, value, NEW.id FROM json_each(NEW.spec, '$.labels');
END;
