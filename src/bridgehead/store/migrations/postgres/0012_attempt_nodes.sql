-- Which pool node each attempt ran on, recorded when a node report first lists the job on it
-- (an attempt's own row is written only when it ends, after the node may be gone): the idle
-- cost of each pool is then its nodes' cost minus the attempts that really ran on them.
CREATE TABLE attempt_nodes (
    job_id  TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    pool    TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt, node_id)
);
