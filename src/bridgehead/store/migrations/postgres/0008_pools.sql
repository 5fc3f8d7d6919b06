-- Elastic pools (issue 15): every node the scaler asked for or adopted, its state changes
-- with their time (the node ledger: node cost and idle cost are derived from it), and each
-- pool's standing (backoff after failed boots, failures in a row, quarantine, recent
-- launches for the rate limit).
CREATE TABLE pool_nodes (
    id          TEXT PRIMARY KEY,
    pool        TEXT NOT NULL,
    cluster     TEXT NOT NULL,
    state       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    since       DOUBLE PRECISION NOT NULL,
    launched_at DOUBLE PRECISION,
    ready_at    DOUBLE PRECISION,
    ended_at    DOUBLE PRECISION,
    provider_id TEXT,
    adopted     INTEGER NOT NULL DEFAULT 0,
    jobs        INTEGER NOT NULL DEFAULT 0,
    job_ids     TEXT NOT NULL DEFAULT '{}',
    reported_at DOUBLE PRECISION
);
CREATE INDEX pool_nodes_cluster_ended ON pool_nodes (cluster, ended_at);
CREATE INDEX pool_nodes_ended ON pool_nodes (ended_at);
CREATE TABLE pool_node_ledger (
    node_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    pool    TEXT NOT NULL,
    state   TEXT NOT NULL,
    prior   TEXT,
    at      DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (node_id, version)
);
CREATE INDEX pool_node_ledger_at ON pool_node_ledger (at);
CREATE TABLE pool_state (
    pool            TEXT PRIMARY KEY,
    backoff_until   DOUBLE PRECISION NOT NULL DEFAULT 0,
    failures_in_row INTEGER NOT NULL DEFAULT 0,
    quarantined     INTEGER NOT NULL DEFAULT 0,
    launches        TEXT NOT NULL DEFAULT '[]',
    orphans         TEXT NOT NULL DEFAULT '{}'
);
