-- Workflow runs and their tasks, event-log consumers' cursors, leases, rules (postgres).
-- An external event's (source, id) is logged once: at-least-once sources may re-send.
CREATE UNIQUE INDEX events_source_id ON events (source, id);

CREATE TABLE workflow_runs (
    id               TEXT PRIMARY KEY,
    workflow         TEXT NOT NULL,
    tenant           TEXT NOT NULL,
    spec             TEXT NOT NULL,
    filename         TEXT NOT NULL,
    params           TEXT NOT NULL,
    state            TEXT NOT NULL,
    version          INTEGER NOT NULL DEFAULT 1,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    idempotency_key  TEXT,
    created_at       DOUBLE PRECISION NOT NULL,
    updated_at       DOUBLE PRECISION NOT NULL,
    finished_at      DOUBLE PRECISION
);
CREATE UNIQUE INDEX workflow_runs_idempotency ON workflow_runs (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX workflow_runs_state ON workflow_runs (state, id);
CREATE INDEX workflow_runs_workflow ON workflow_runs (workflow, id);

CREATE TABLE workflow_tasks (
    run_id      TEXT NOT NULL REFERENCES workflow_runs (id) ON DELETE CASCADE,
    step        TEXT NOT NULL,
    idx         INTEGER NOT NULL,
    pos         INTEGER NOT NULL,
    item        TEXT,
    state       TEXT NOT NULL,
    attempt     INTEGER NOT NULL DEFAULT 0,
    tries       INTEGER NOT NULL DEFAULT 0,
    job_id      TEXT,
    not_before  DOUBLE PRECISION,
    deadline    DOUBLE PRECISION,
    exit_code   INTEGER,
    reason      TEXT,
    ready_at    DOUBLE PRECISION,
    started_at  DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    PRIMARY KEY (run_id, step, idx)
);
CREATE INDEX workflow_tasks_job ON workflow_tasks (job_id);

CREATE TABLE cursors (
    name TEXT PRIMARY KEY,
    seq  BIGINT NOT NULL
);

CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE rules (
    name       TEXT PRIMARY KEY,
    spec       TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
