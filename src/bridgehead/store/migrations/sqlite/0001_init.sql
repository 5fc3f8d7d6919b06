-- Bridgehead schema v1 (SQLite). Times are UNIX seconds (REAL); JSON is TEXT.
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
    lease_expires_at REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    usage            TEXT,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    submitted_at     REAL,
    started_at       REAL,
    finished_at      REAL
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_cluster_state ON jobs (cluster, state, id);
CREATE INDEX jobs_state ON jobs (state, id);
CREATE INDEX jobs_agent ON jobs (agent_id, state);

CREATE TABLE events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    id      TEXT NOT NULL,
    type    TEXT NOT NULL,
    source  TEXT NOT NULL,
    subject TEXT NOT NULL,
    time    REAL NOT NULL,
    data    TEXT NOT NULL
);
CREATE INDEX events_subject ON events (subject, seq);

CREATE TABLE job_logs (
    job_id TEXT NOT NULL,
    stream TEXT NOT NULL,
    pos    INTEGER NOT NULL,
    size   INTEGER NOT NULL,
    data   BLOB NOT NULL,
    PRIMARY KEY (job_id, stream, pos)
);

CREATE TABLE clusters (
    name           TEXT PRIMARY KEY,
    backend        TEXT NOT NULL,
    labels         TEXT NOT NULL DEFAULT '{}',
    agent_id       TEXT,
    last_heartbeat REAL,
    info           TEXT NOT NULL DEFAULT '{}'
);

CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL,
    cluster    TEXT,
    tenant     TEXT,
    created_at REAL NOT NULL,
    revoked_at REAL
);
