"""The JobStore protocol: the single source of truth, behind one interface.

Two implementations share one contract test suite: ``SqliteJobStore`` (embedded default, one
process) and ``PostgresJobStore`` (production; many server processes share it).

Change notifications: every committed change publishes keys on ``store.hub`` (``job:<id>``,
``cluster:<name>``, ``logs:<id>``, ``events``); PostgreSQL carries them between processes with
LISTEN/NOTIFY, so a waiter on any replica wakes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from bridgehead.domain.clusters import Cluster, Principal, Role
from bridgehead.domain.costs import AttemptRecord
from bridgehead.domain.events import Event
from bridgehead.domain.jobs import Job, JobSpec, JobState, Transition
from bridgehead.domain.runs import Plan, Run, Task
from bridgehead.store.hub import ChangeHub


@dataclass(frozen=True, slots=True, kw_only=True)
class JobFilter:
    cluster: str | None = None
    states: tuple[JobState, ...] = ()
    tenant: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    agent_id: str | None = None
    parent_id: str | None = None
    """Only the elements of this array job."""
    name_prefix: str | None = None
    """Only jobs whose name starts with this (case-sensitive)."""
    created_from: float | None = None
    """Only jobs created at or after this (UNIX seconds)."""
    created_to: float | None = None
    """Only jobs created before this (UNIX seconds)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LogChunk:
    job_id: str
    stream: str
    pos: int
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Submitted:
    job: Job
    created: bool
    """False when the idempotency key matched an existing job (which is returned)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterStats:
    cluster: Cluster
    counts: dict[str, int]


class JobStore(Protocol):
    hub: ChangeHub

    async def open(self) -> None:
        """Connect and apply pending migrations."""
        ...

    async def close(self) -> None: ...

    async def submit(self, specs: Sequence[JobSpec]) -> list[Submitted]: ...

    async def get(self, job_id: str) -> Job:
        """The job, or NotFound."""
        ...

    async def list_jobs(
        self, flt: JobFilter, *, limit: int = 100, after: str | None = None
    ) -> list[Job]:
        """Jobs matching ``flt`` ordered by id (creation time); ``after`` is the last id seen."""
        ...

    async def clusters_of(self, job_ids: Sequence[str]) -> dict[str, str]:
        """Each known job id's cluster (to authorize an agent's reports)."""
        ...

    async def claim(
        self, cluster: str, agent_id: str, *, limit: int, lease_s: float
    ) -> list[Job]:
        """Lease up to ``limit`` queued jobs (or claims whose lease expired) to ``agent_id``."""
        ...

    async def adopt(self, cluster: str, agent_id: str, *, lease_s: float) -> list[Job]:
        """Take over the in-flight jobs of ``cluster`` held by ``agent_id`` or by an agent
        whose lease expired (agent restart, HA takeover); returns them leased to ``agent_id``."""
        ...

    async def transition(
        self, transitions: Sequence[Transition], *, agent_id: str | None = None,
        max_lost_attempts: int = 0,
    ) -> list[Job | None]:
        """Apply each transition by compare-and-set: position i holds the updated job, or None
        when it was not allowed from the job's current state (stale or duplicate report). An
        attempt lost to the infrastructure queues its job again for one new attempt, up to
        ``max_lost_attempts`` lost attempts (:func:`bridgehead.domain.jobs.requeue_lost`)."""
        ...

    async def attempts(self, *, since: float, until: float,
                       tenant: str | None = None) -> list[AttemptRecord]:
        """The cost ledger: every attempt that ended in [since, until) (of ``tenant`` only,
        when given), oldest first, with its job's labels."""
        ...

    async def request_cancel(self, job_id: str) -> Job:
        """Cancel a queued job at once; flag an in-flight one for its agent. Terminal: as is."""
        ...

    async def cancel_requested(self, cluster: str, agent_id: str) -> list[Job]:
        """Jobs of ``cluster`` held by ``agent_id`` that a user asked to cancel (an agent id
        reaches only its own cluster's jobs, whatever another cluster's agent sends)."""
        ...

    async def heartbeat(
        self,
        cluster: str,
        agent_id: str,
        *,
        backend: str,
        labels: dict[str, str],
        info: dict[str, object],
        lease_s: float,
    ) -> None:
        """Mark the cluster online and renew the leases of the agent's jobs."""
        ...

    async def clusters(self) -> list[ClusterStats]: ...

    async def append_logs(self, chunks: Sequence[LogChunk]) -> None:
        """Store chunks; a chunk already stored at the same position is ignored."""
        ...

    async def read_logs(self, job_id: str, stream: str, offset: int, limit: int) -> bytes:
        """At most ``limit`` bytes stored from ``offset`` on, up to the first gap."""
        ...

    async def read_log_span(self, job_id: str, stream: str, offset: int,
                            limit: int) -> tuple[int, bytes]:
        """``(start, data)``: as :meth:`read_logs` from ``offset``, except when nothing is
        stored at ``offset`` but something is after it (a gap: bytes never reported): then
        from the first byte stored after it, ``start`` > ``offset``."""
        ...

    async def events(self, *, after: int, limit: int,
                     tenant: str | None = None) -> list[Event]:
        """Events after the cursor ``after``, oldest first; with ``tenant``, only that
        tenant's."""
        ...

    async def append_events(self, events: Sequence[Event], *,
                            wake: Sequence[str] = ()) -> list[tuple[Event, bool]]:
        """Log external events: each as logged, and False when its (tenant, source, id) was
        already. ``wake``: change keys published with them (on every replica), e.g.
        ``poll:<cluster>`` for a scheduler's job event."""
        ...

    async def create_token(
        self, *, name: str, role: Role, cluster: str | None, tenant: str | None
    ) -> tuple[Principal, str]:
        """A new token; the secret is returned once and only its hash is stored."""
        ...

    async def authenticate(self, secret: str) -> Principal:
        """The token's principal, or AuthError."""
        ...

    async def list_tokens(self) -> list[Principal]: ...

    async def revoke_token(self, token_id: str) -> None: ...

    async def counts(self) -> dict[tuple[str, str], int]:
        """Number of jobs by (cluster, state)."""
        ...

    # -- workflow runs (see store/runs_sql.py) ---------------------------------------------
    async def create_run(self, run: Run, tasks: Sequence[Task]) -> tuple[Run, bool]: ...

    async def get_run(self, run_id: str) -> Run: ...

    async def run_tasks(self, run_id: str) -> list[Task]: ...

    async def list_runs(self, *, state: str | None = None, workflow: str | None = None,
                        tenant: str | None = None, limit: int = 100,
                        after: str | None = None) -> list[Run]: ...

    async def task_counts(self, run_ids: Sequence[str]) -> dict[str, dict[str, int]]: ...

    async def active_runs(self) -> list[str]: ...

    async def apply_plan(self, run: Run, plan: Plan) -> Run | None: ...

    async def request_run_cancel(self, run_id: str) -> Run: ...

    async def retry_run(self, run_id: str) -> Run: ...

    # -- event-log consumers and rules -----------------------------------------------------
    async def cursor(self, name: str) -> int | None: ...

    async def set_cursor(self, name: str, seq: int) -> None: ...

    async def events_of(self, *, after: int, limit: int,
                        types: Sequence[str]) -> tuple[list[Event], int]:
        """Events of these types after ``after``, and the cursor to go on from."""
        ...

    async def last_event_seq(self) -> int: ...

    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool: ...

    async def release_lease(self, name: str, holder: str) -> None: ...

    async def put_rules(self, rules: Sequence[tuple[str, dict[str, Any]]]) -> None: ...

    async def list_rules(self) -> list[dict[str, Any]]: ...

    async def delete_rule(self, name: str) -> None: ...
