"""Named SQL shared by both dialects, with ``:name`` parameters. The dialect modules hold
their own statements (claim, batch transitions, event cursor); ``sql.py`` composes only the
job-list filter. SQL appears nowhere outside ``bridgehead.store``."""

from __future__ import annotations

from collections.abc import Sequence

from bridgehead.domain.jobs import ACTIVE, IN_FLIGHT, TERMINAL, JobState


def _states_sql(states: Sequence[JobState] | frozenset[JobState]) -> str:
    """An SQL list of state literals (enum values only, never user input)."""
    return "(" + ",".join(f"'{s.value}'" for s in sorted(states)) + ")"


_IN_FLIGHT = _states_sql(IN_FLIGHT)
_HELD = _states_sql(IN_FLIGHT | {JobState.CLAIMED})
_ACTIVE = _states_sql(ACTIVE)

INSERT_JOB = """
INSERT INTO jobs (id, cluster, tenant, state, idempotency_key, spec, created_at, updated_at,
                  parent_id, array_index, elements)
VALUES (:id, :cluster, :tenant, 'queued', :idempotency_key, :spec, :now, :now,
        :parent_id, :array_index, :elements)
ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
"""
SELECT_BY_KEY = "SELECT * FROM jobs WHERE tenant = :tenant AND idempotency_key = :key"
SELECT_JOB = "SELECT * FROM jobs WHERE id = :id"
INSERT_EVENT = """
INSERT INTO events (id, type, source, subject, time, data, tenant)
VALUES (:id, :type, :source, :subject, :time, :data, :tenant)
"""
INSERT_EXTERNAL_EVENT = """
INSERT INTO events (id, type, source, subject, time, data, tenant)
VALUES (:id, :type, :source, :subject, :time, :data, :tenant)
ON CONFLICT (tenant, source, id) DO NOTHING RETURNING seq, time
"""
SELECT_EVENT_BY_ID = """
SELECT * FROM events WHERE tenant = :tenant AND source = :source AND id = :id
"""
SELECT_TENANT_EVENTS = """
SELECT seq, id, type, source, subject, time, data, tenant FROM events
WHERE tenant = :tenant AND seq > :after ORDER BY seq LIMIT :limit
"""
SELECT_EVENTS = """
SELECT seq, id, type, source, subject, time, data, tenant FROM events WHERE seq > :after
ORDER BY seq LIMIT :limit
"""
# Transition SET clause shared by the per-row and batch forms; ``v`` names the new values.
TRANSITION_SET = """
    state = v.state, version = jobs.version + 1, updated_at = :now,
    native_id = COALESCE(v.native_id, jobs.native_id),
    exit_code = COALESCE(v.exit_code, jobs.exit_code),
    reason = COALESCE(v.reason, jobs.reason),
    usage = COALESCE(v.usage, jobs.usage),
    submitted_at = CASE WHEN v.state = 'submitted' THEN v.at ELSE jobs.submitted_at END,
    started_at = CASE WHEN v.state = 'running' THEN v.at ELSE jobs.started_at END,
    finished_at = CASE WHEN v.state IN {terminal} THEN v.at ELSE jobs.finished_at END,
    lease_expires_at = CASE WHEN v.state IN {terminal} THEN NULL ELSE jobs.lease_expires_at END,
    agent_id = CASE WHEN v.state = 'queued' THEN NULL ELSE jobs.agent_id END
""".format(terminal=_states_sql(TERMINAL))
REQUEUE_LOST = """
UPDATE jobs SET state = 'queued', version = version + 1, updated_at = :now,
    attempt = attempt + 1, native_id = NULL, exit_code = NULL, usage = NULL, reason = :reason,
    submitted_at = NULL, started_at = NULL, finished_at = NULL, lease_expires_at = NULL,
    agent_id = NULL, log_base = :log_base
WHERE id = :id AND version = :version RETURNING *
"""
INSERT_ATTEMPT = """
INSERT INTO attempts (job_id, attempt, cluster, tenant, state, cores, nodes, memory_mb, gpus,
                      started_at, ended_at, usage)
VALUES (:job_id, :attempt, :cluster, :tenant, :state, :cores, :nodes, :memory_mb, :gpus,
        :started_at, :ended_at, :usage)
ON CONFLICT (job_id, attempt) DO NOTHING
"""
SELECT_ATTEMPTS = """
SELECT a.*, j.spec FROM attempts a JOIN jobs j ON j.id = a.job_id
WHERE a.ended_at >= :since AND a.ended_at < :until AND (:tenant = '' OR a.tenant = :tenant)
ORDER BY a.ended_at, a.job_id, a.attempt
"""
SELECT_ATTEMPT_POOLS = """
SELECT n.job_id, n.attempt, n.pool FROM attempt_nodes n
JOIN attempts a ON a.job_id = n.job_id AND a.attempt = n.attempt
WHERE a.ended_at >= :since AND a.ended_at < :until AND (:tenant = '' OR a.tenant = :tenant)
ORDER BY n.job_id, n.attempt, n.node_id
"""
LOG_ENDS = """
SELECT stream, MAX(pos + size) AS end_pos FROM job_logs WHERE job_id = :id GROUP BY stream
"""
CANCEL_NOW = """
UPDATE jobs SET state = 'cancelled', version = version + 1, updated_at = :now,
    finished_at = :now, reason = 'cancelled by user', lease_expires_at = NULL
WHERE id = :id AND state IN ('queued', 'claimed') AND parent_id IS NULL RETURNING *
"""
FLAG_CANCEL = f"""
UPDATE jobs SET cancel_requested = TRUE, version = version + 1, updated_at = :now
WHERE id = :id AND NOT cancel_requested
  AND (state IN {_IN_FLIGHT} OR (state = 'queued' AND parent_id IS NOT NULL)) RETURNING *
"""
SELECT_CANCEL_REQUESTED = f"""
SELECT * FROM jobs WHERE agent_id = :agent AND cluster = :cluster AND cancel_requested
  AND state IN {_IN_FLIGHT}
"""
ADOPT = f"""
UPDATE jobs SET agent_id = :agent, lease_expires_at = :lease
WHERE cluster = :cluster AND (
    (state IN {_IN_FLIGHT} AND (agent_id = :agent OR agent_id IS NULL OR lease_expires_at < :now))
    OR (state = 'claimed' AND agent_id = :agent))
RETURNING *
"""
UPSERT_CLUSTER = """
INSERT INTO clusters (name, backend, labels, agent_id, last_heartbeat, info)
VALUES (:name, :backend, :labels, :agent, :now, :info)
ON CONFLICT (name) DO UPDATE SET backend = excluded.backend, labels = excluded.labels,
    agent_id = excluded.agent_id, last_heartbeat = excluded.last_heartbeat, info = excluded.info
"""
RENEW_LEASES = f"""
UPDATE jobs SET lease_expires_at = :lease
WHERE agent_id = :agent AND cluster = :cluster AND state IN {_HELD}
"""
SELECT_CLUSTERS = "SELECT * FROM clusters ORDER BY name"
COUNTED = """
(SELECT cluster, tenant, state, n FROM job_counts
 UNION ALL SELECT cluster, tenant, state, n FROM job_count_deltas)"""
"""The exact job counts by (cluster, tenant, state) as rows to sum: the folded counts and the
deltas not folded yet (migration 0011). Read in one statement, they match the jobs table."""
ACTIVE_COUNTS = f"""
SELECT cluster, state, CAST(SUM(n) AS BIGINT) AS n FROM {COUNTED} AS c
WHERE state IN {_ACTIVE} GROUP BY cluster, state HAVING SUM(n) <> 0
"""
INSERT_LOG = """
INSERT INTO job_logs (job_id, stream, pos, size, data) VALUES (:job_id, :stream, :pos, :size, :data)
ON CONFLICT (job_id, stream, pos) DO NOTHING
"""
SELECT_LOGS = """
SELECT pos, data FROM job_logs WHERE job_id = :id AND stream = :stream AND pos + size > :offset
ORDER BY pos LIMIT 256
"""
INSERT_TOKEN = """
INSERT INTO tokens (id, name, hash, role, cluster, tenant, created_at)
VALUES (:id, :name, :hash, :role, :cluster, :tenant, :now)
"""
SELECT_TOKEN = "SELECT * FROM tokens WHERE hash = :hash AND revoked_at IS NULL"
SELECT_TOKENS = "SELECT * FROM tokens WHERE revoked_at IS NULL ORDER BY created_at"
REVOKE_TOKEN = """
UPDATE tokens SET revoked_at = :now WHERE id = :id AND revoked_at IS NULL RETURNING id
"""

# -- job arrays (store/arrays_sql.py) ----------------------------------------------------------
# An element's native id is its parent's and its index (Slurm's JOBID_INDEX); it takes the
# parent's agent and lease, so the agent that submitted the array polls and reports it.
SUBMIT_ELEMENTS = """
UPDATE jobs SET state = 'submitted', version = version + 1, updated_at = :now,
    submitted_at = :now, agent_id = :agent, lease_expires_at = :lease,
    native_id = CAST(:native AS TEXT) || '_' || CAST(array_index AS TEXT)
WHERE parent_id = :parent AND state = 'queued' RETURNING *
"""
END_ELEMENTS = """
UPDATE jobs SET state = :state, version = version + 1, updated_at = :now, finished_at = :now,
    reason = :reason, lease_expires_at = NULL
WHERE parent_id = :parent AND state = 'queued' RETURNING *
"""
RUN_PARENT = """
UPDATE jobs SET state = 'running', version = version + 1, updated_at = :now, started_at = :now
WHERE id = :id AND state = 'submitted' RETURNING *
"""
COUNT_ACTIVE_ELEMENTS = f"""
SELECT COUNT(*) AS n FROM jobs WHERE parent_id = :parent AND state IN {_ACTIVE}
"""
SELECT_ELEMENTS = "SELECT * FROM jobs WHERE parent_id = :parent ORDER BY array_index"
