"""Agent endpoints: claim (long-poll), adopt, report (batch), heartbeat.

An agent token reaches only its own cluster: naming another cluster, or reporting on a job
of another cluster, is refused with 403 and changes nothing.
"""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Request, Response

from bridgehead.domain.clusters import Principal
from bridgehead.domain.jobs import Job
from bridgehead.errors import Forbidden, NotFound
from bridgehead.server.auth import AgentOrAdmin
from bridgehead.server.deps import store_of
from bridgehead.server.pools import heartbeat_pools
from bridgehead.server.schemas import (
    AgentIn,
    ClaimIn,
    ClaimOut,
    HeartbeatIn,
    JobOut,
    ReportIn,
    ReportOut,
    json_response,
)
from bridgehead.store import JobStore

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/agent", tags=["agent"])


def _authorize(p: Principal, cluster: str) -> None:
    if not p.may_serve(cluster):
        raise Forbidden(f"this token may not serve cluster {cluster!r}")


@router.post("/claim", response_model=ClaimOut)
async def claim(body: ClaimIn, request: Request, p: AgentOrAdmin) -> Response:
    """Lease up to ``max_jobs`` queued jobs. With ``wait_s``, wait for work (or for a cancel
    request not in ``cancelling``) up to that long before answering empty. A scheduler event
    of the cluster (``POST /v1/events`` from its Slurm hook) during the wait answers at once
    with ``poll``: the agent polls its scheduler now, wherever it runs; so does one that came
    between this agent's claims (after ``poll_since``, its previous answer's ``at``)."""
    _authorize(p, body.cluster)
    state = request.app.state
    store = store_of(request)
    deadline = time.monotonic() + min(body.wait_s, state.settings.max_wait_s)
    cancelling = set(body.cancelling)
    jobs: list[Job] = []
    cancel: list[str] = []
    poll_key = f"poll:{body.cluster}"
    missed = body.poll_since is not None \
        and store.hub.published_at(poll_key) > body.poll_since
    async with store.hub.watch(f"cluster:{body.cluster}", f"agent:{body.agent_id}",
                               poll_key) as work, store.hub.watch(poll_key) as poll:
        while True:
            if await request.is_disconnected():
                break  # the agent gave up on this long-poll: claim nothing for it
            jobs = await store.claim(body.cluster, body.agent_id, limit=body.max_jobs,
                                     lease_s=state.settings.lease_s)
            cancel = [j.id for j in await store.cancel_requested(body.cluster, body.agent_id)]
            left = deadline - time.monotonic()
            if jobs or set(cancel) - cancelling or missed or poll.fired or left <= 0 \
                    or not await work.wait(left):
                break
        at = time.time()  # no await from here to the end of the watch: no event slips by
    state.metrics.claimed(body.cluster, len(jobs))
    for job in jobs:
        logger.info("job %s claimed by agent %s", job.id, body.agent_id,
                    extra={"job_id": job.id, "state": "claimed", "agent_id": body.agent_id})
    hint = missed or poll.fired
    if hint:
        state.metrics.poll_hint(body.cluster)
    return json_response(ClaimOut.model_construct(jobs=[JobOut.of(j) for j in jobs],
                                                  cancel=cancel, poll=hint, at=at))


@router.post("/adopt", response_model=ClaimOut)
async def adopt(body: AgentIn, request: Request, p: AgentOrAdmin) -> Response:
    """Take over this cluster's in-flight jobs held by this agent id (a restart) or whose
    agent's lease expired (a takeover); the agent reconciles them with its scheduler."""
    _authorize(p, body.cluster)
    store = store_of(request)
    lease_s = request.app.state.settings.lease_s
    jobs = await store.adopt(body.cluster, body.agent_id, lease_s=lease_s)
    cancel = [j.id for j in jobs if j.cancel_requested]
    return json_response(ClaimOut.model_construct(jobs=[JobOut.of(j) for j in jobs],
                                                  cancel=cancel))


@router.post("/report", response_model=ReportOut)
async def report(body: ReportIn, request: Request, p: AgentOrAdmin) -> ReportOut:
    """Apply state reports (each a compare-and-set: stale or duplicate ones are ignored and
    answered ``false``) and store log chunks (idempotent by position)."""
    _authorize(p, body.cluster)
    store = store_of(request)
    ids = {t.job_id for t in body.transitions} | {c.job_id for c in body.logs}
    if ids:
        foreign = {i for i, c in (await store.clusters_of(list(ids))).items() if c != body.cluster}
        if foreign:
            raise Forbidden(f"jobs {sorted(foreign)[:5]} do not belong to cluster {body.cluster}")
    chunks = [c.to_domain() for c in body.logs]
    await _check_holds(store, body.agent_id, {c.job_id for c in chunks})
    await store.append_logs(chunks)
    applied = await store.transition(
        [t.to_domain() for t in body.transitions], agent_id=body.agent_id,
        max_lost_attempts=request.app.state.settings.max_lost_attempts)
    request.app.state.metrics.transitions([j for j in applied if j is not None])
    for job in applied:
        if job is not None:
            logger.info("job %s %s (agent %s)", job.id, job.state.value, body.agent_id,
                        extra={"job_id": job.id, "state": job.state.value,
                               "agent_id": body.agent_id})
    return ReportOut(applied=[j is not None for j in applied])


async def _check_holds(store: JobStore, agent_id: str, job_ids: set[str]) -> None:
    """Forbidden, naming the jobs, unless ``agent_id`` holds each of ``job_ids`` (of the
    token's cluster: checked before). An agent writes the logs of its own jobs only, also
    once they ended or after a restart that adopted them (both keep the job's agent id); a
    job taken over by another agent, or queued again, is no longer its own."""
    foreign = []
    for job_id in sorted(job_ids):
        try:
            job = await store.get(job_id)
        except NotFound:
            job = None
        if job is None or job.agent_id != agent_id:
            foreign.append(job_id)
    if foreign:
        which = f"job {foreign[0]}" if len(foreign) == 1 else f"jobs {', '.join(foreign[:5])}"
        raise Forbidden(f"{which}: not held by agent {agent_id}, which may not write logs "
                        "for it")


@router.post("/heartbeat")
async def heartbeat(body: HeartbeatIn, request: Request, p: AgentOrAdmin) -> dict[str, object]:
    """Mark the cluster online and renew the leases of this agent's jobs. An agent that runs
    providers reports its pools' nodes; the answer has the cluster's pools and the scale
    commands to run now (:mod:`bridgehead.server.pools`)."""
    _authorize(p, body.cluster)
    await store_of(request).heartbeat(
        body.cluster, body.agent_id, backend=body.backend, labels=body.labels,
        info=body.info, lease_s=request.app.state.settings.lease_s,
    )
    request.app.state.capacities.heard(body.cluster, body.info)
    pools = await heartbeat_pools(request, body.cluster, body.nodes, body.node_errors)
    return {"ok": True, "lease_s": request.app.state.settings.lease_s, **pools}
