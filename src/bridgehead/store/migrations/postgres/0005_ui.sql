-- The web UI: browser sessions, kept server-side (a cookie holds only a random secret, stored
-- here as its hash); a session lives while its token does (revoking the token ends it).
CREATE TABLE ui_sessions (
    hash       TEXT PRIMARY KEY,
    token_id   TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX ui_sessions_token ON ui_sessions (token_id);
CREATE INDEX ui_sessions_expires ON ui_sessions (expires_at);

-- A job's name and labels read from its spec text, or nothing when the text is not JSON that
-- PostgreSQL takes (jsonb refuses e.g. a lone UTF-16 surrogate escape, which rows stored before
-- the API's checks may hold): such a row is left out of these filters instead of breaking an
-- insert, this migration or an index build. PARALLEL UNSAFE: the EXCEPTION block is a
-- subtransaction, which parallel mode refuses (see 0010).
CREATE FUNCTION bridgehead_spec_name(spec TEXT) RETURNS TEXT
LANGUAGE plpgsql IMMUTABLE PARALLEL UNSAFE AS $$
BEGIN
    RETURN spec::jsonb ->> 'name';
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;
CREATE FUNCTION bridgehead_spec_labels(spec TEXT) RETURNS TABLE (key TEXT, value TEXT)
LANGUAGE plpgsql IMMUTABLE PARALLEL UNSAFE AS $$
BEGIN
    RETURN QUERY SELECT l.key, l.value FROM jsonb_each_text(spec::jsonb -> 'labels') AS l;
EXCEPTION WHEN others THEN
    RETURN;
END
$$;

-- An index for every filter the Jobs page offers, each ordered by id (keyset paging): state
-- (jobs_state) and time range (ids begin with their creation time) have one already. The
-- name index compares bytes (text_pattern_ops) so a prefix is a range whatever the collation.
CREATE INDEX jobs_tenant ON jobs (tenant, id);
CREATE INDEX jobs_cluster ON jobs (cluster, id);
CREATE INDEX jobs_name ON jobs (bridgehead_spec_name(spec) text_pattern_ops, id);

-- A job's labels as rows, so a label filter is an index lookup rather than a JSON scan of
-- every job; filled by a trigger, so no writer of jobs has to know.
CREATE TABLE job_labels (
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (key, value, job_id)
);
INSERT INTO job_labels (key, value, job_id)
    SELECT l.key, l.value, jobs.id FROM jobs, bridgehead_spec_labels(jobs.spec) AS l
    ON CONFLICT DO NOTHING;
CREATE FUNCTION bridgehead_job_labels() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_labels (key, value, job_id)
        SELECT l.key, l.value, NEW.id FROM bridgehead_spec_labels(NEW.spec) AS l
        ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_labels AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION bridgehead_job_labels();
