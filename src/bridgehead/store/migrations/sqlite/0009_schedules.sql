-- Workflow schedules and their ticks (sqlite). A tick is one row per (workflow, tick
-- time): two schedulers racing insert it once; its run is created with the tick's key.
CREATE TABLE schedules (
    workflow    TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    filename    TEXT NOT NULL,
    spec        TEXT NOT NULL,
    paused      INTEGER NOT NULL,
    file_paused INTEGER NOT NULL,
    last_tick   BIGINT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);

CREATE TABLE schedule_ticks (
    workflow   TEXT NOT NULL,
    tick_at    BIGINT NOT NULL,
    tenant     TEXT NOT NULL,
    state      TEXT NOT NULL,
    run_key    TEXT NOT NULL,
    run_id     TEXT,
    reason     TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (workflow, tick_at)
);
CREATE INDEX schedule_ticks_state ON schedule_ticks (workflow, state, tick_at);
