-- Bridgehead schema v1 (PostgreSQL). Times are UNIX seconds (DOUBLE PRECISION); JSON is TEXT.
CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    cluster          TEXT NOT NULL,
    tenant           TEXT NOT NULL,
    state            TEXT NOT NULL,
    idempotency_key  TEXT,
    spec             TEXT NOT NULL,
    version          INTEGER NOT NULL DEFAULT 1,
    attempt          INTEGER NOT NULL DEFAULT 1,
    native_id        TEXT,
    exit_code        INTEGER,
    reason           TEXT,
    agent_id         TEXT,
    lease_expires_at DOUBLE PRECISION,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    usage            TEXT,
    created_at       DOUBLE PRECISION NOT NULL,
    updated_at       DOUBLE PRECISION NOT NULL,
    submitted_at     DOUBLE PRECISION,
    started_at       DOUBLE PRECISION,
    finished_at      DOUBLE PRECISION
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_cluster_state ON jobs (cluster, state, id);
CREATE INDEX jobs_state ON jobs (state, id);
CREATE INDEX jobs_agent ON jobs (agent_id, state);

-- Readers by cursor see only events whose transaction is older than every running one
-- (tx < pg_snapshot_xmin): a BIGSERIAL committed late can never be skipped by a cursor.
CREATE TABLE events (
    seq     BIGSERIAL PRIMARY KEY,
    id      TEXT NOT NULL,
    type    TEXT NOT NULL,
    source  TEXT NOT NULL,
    subject TEXT NOT NULL,
    time    DOUBLE PRECISION NOT NULL,
    data    TEXT NOT NULL,
    tx      xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX events_subject ON events (subject, seq);

CREATE TABLE job_logs (
    job_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    pos    BIGINT NOT NULL,
    size   INTEGER NOT NULL,
    data   BYTEA NOT NULL,
    PRIMARY KEY (job_id, stream, pos)
);

CREATE TABLE clusters (
    name           TEXT PRIMARY KEY,
    backend        TEXT NOT NULL,
    labels         TEXT NOT NULL DEFAULT '{}',
    agent_id       TEXT,
    last_heartbeat DOUBLE PRECISION,
    info           TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL,
    cluster    TEXT,
    tenant     TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION
);
