-- Every attempt of every job that ran, with what it held and when (the cost ledger): a row
-- is written when the attempt ends (its job's end, or an attempt the infrastructure lost
-- and that was queued again). Costs are derived from these rows, never sampled.
CREATE TABLE attempts (
    job_id     TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    cluster    TEXT NOT NULL,
    tenant     TEXT NOT NULL,
    state      TEXT NOT NULL,
    cores      INTEGER NOT NULL,
    nodes      INTEGER NOT NULL,
    memory_mb  INTEGER,
    gpus       INTEGER NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    ended_at   DOUBLE PRECISION NOT NULL,
    usage      TEXT,
    PRIMARY KEY (job_id, attempt)
);
CREATE INDEX attempts_ended ON attempts (ended_at);
CREATE INDEX attempts_tenant_ended ON attempts (tenant, ended_at);
