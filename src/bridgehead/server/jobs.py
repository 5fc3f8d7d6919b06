"""Client endpoints: submit, read, list, cancel, wait (long-poll) and logs."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from bridgehead.domain.arrays import ARRAY_BACKENDS
from bridgehead.domain.clusters import Capacity, Principal, refuse_spark, route
from bridgehead.domain.jobs import Job, JobSpec, JobState
from bridgehead.errors import Forbidden, InvalidSpec, NotFound
from bridgehead.server.auth import Authed, ClientOrAdmin
from bridgehead.server.deps import store_of
from bridgehead.server.openapi import errors
from bridgehead.server.schemas import (
    MAX_INT,
    MAX_WAIT,
    JobBatchIn,
    JobIn,
    JobOut,
    JobPage,
    SubmitOut,
    json_response,
    page_of,
)
from bridgehead.store import JobFilter

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
ISO_TIME = (r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?"
            r"(Z|[+-]\d{2}:\d{2})?$")
MAX_LOG_READ = 4 << 20


def _check_tenant(p: Principal, spec: JobSpec) -> None:
    if not p.may_see_tenant(spec.tenant):
        raise Forbidden(f"this token may not submit to tenant {spec.tenant!r}")


async def _routed(request: Request, specs: list[JobSpec]) -> list[JobSpec]:
    """Choose a cluster for each job that gives ``cluster_labels`` instead of a cluster."""
    known = [(stats.cluster, stats.counts) for stats in await store_of(request).clusters()]
    ttl = request.app.state.settings.cluster_ttl_s
    return [spec if spec.cluster else replace(
        spec, cluster=route(spec.cluster_labels, known, now=time.time(), ttl_s=ttl))
        for spec in specs]


async def _refuse_arrays(request: Request, specs: list[JobSpec]) -> None:
    """400, naming ``array``, for an array job whose cluster's agents cannot run arrays (a
    cluster no agent has served yet is left to its agent, which refuses it likewise)."""
    backends = {s.cluster.name: s.cluster.backend for s in await store_of(request).clusters()}
    for spec in specs:
        backend = backends.get(spec.cluster)
        if spec.array is not None and backend is not None and backend not in ARRAY_BACKENDS:
            raise InvalidSpec(f"array: cluster {spec.cluster!r} runs jobs with the {backend} "
                              "backend, which does not run job arrays (these do: "
                              f"{', '.join(sorted(ARRAY_BACKENDS))})")


async def _refuse_spark(request: Request, specs: list[JobSpec]) -> None:
    """400, naming ``spark`` and the backend, for a Spark job whose cluster's agents do not
    report that they run Spark (:func:`bridgehead.domain.clusters.refuse_spark`); a cluster
    no agent has served yet is left to its agent, which fails the job likewise."""
    clusters = {s.cluster.name: s.cluster for s in await store_of(request).clusters()}
    for spec in specs:
        if (cluster := clusters.get(spec.cluster)) is not None:
            refuse_spark(spec, cluster.backend, Capacity.from_info(cluster.info))


async def _visible_job(request: Request, p: Principal, job_id: str) -> Job:
    job = await store_of(request).get(job_id)
    if not (p.may_see_tenant(job.spec.tenant) or p.may_serve(job.cluster)):
        raise NotFound(f"job {job_id} not found")  # do not reveal other tenants' ids
    return job


async def _submit(request: Request, p: Principal, items: list[JobIn]) -> list[SubmitOut]:
    specs = [item.to_spec() for item in items]
    for spec in specs:
        _check_tenant(p, spec)
    if any(not spec.cluster for spec in specs):
        specs = await _routed(request, specs)
    if any(spec.array is not None for spec in specs):
        await _refuse_arrays(request, specs)
    if any(spec.spark is not None for spec in specs):
        await _refuse_spark(request, specs)
    await request.app.state.capacities.refuse_unfit(store_of(request), specs)
    results = await store_of(request).submit(specs)
    request.app.state.metrics.submitted(len([r for r in results if r.created]))
    for r in results:
        if r.created:
            logger.info("job %s %s on cluster %s", r.job.id, r.job.state.value, r.job.cluster,
                        extra={"job_id": r.job.id, "state": r.job.state.value,
                               "cluster": r.job.cluster})
    return [SubmitOut.model_construct(job=JobOut.of(r.job), created=r.created) for r in results]


@router.post("", response_model=SubmitOut, status_code=201,
             responses={200: {"description": "The idempotency key matched an existing job."},
                        **errors(409)})
async def submit(body: JobIn, request: Request, p: ClientOrAdmin) -> Response:
    """Submit one job. The same ``idempotency_key`` (per tenant) returns the same job (200)."""
    [out] = await _submit(request, p, [body])
    return json_response(out, 201 if out.created else 200)


@router.post("/batch", response_model=list[SubmitOut], responses=errors(409))
async def submit_batch(body: JobBatchIn, request: Request, p: ClientOrAdmin) -> Response:
    """Submit up to 1,000 jobs in one transaction."""
    return json_response(list(await _submit(request, p, body.jobs)))


@router.get("", response_model=JobPage, responses=errors(400, 403))
async def list_jobs(
    request: Request,
    p: Authed,
    cluster: str | None = None,
    state: Annotated[list[JobState] | None, Query()] = None,
    tenant: str | None = None,
    label: Annotated[list[str] | None, Query(description="key=value, repeatable")] = None,
    parent: Annotated[str | None, Query(description="only this array job's elements")] = None,
    name: Annotated[str | None, Query(min_length=1, max_length=256,
                                      description="only jobs whose name starts with this")] = None,
    created_after: Annotated[str | None, Query(pattern=ISO_TIME, description=(
        "only jobs created at or after this (ISO 8601; no zone: UTC)"))] = None,
    created_before: Annotated[str | None, Query(pattern=ISO_TIME, description=(
        "only jobs created before this (ISO 8601; no zone: UTC)"))] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: str | None = None,
) -> Response:
    """Jobs in creation order, filtered (each filter on an index); page with ``after`` = the
    previous page's ``next``."""
    labels = []
    for item in label or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidSpec(f"label filter {item!r} is not key=value")
        labels.append((key, value))
    cluster, tenant = list_scope(p, cluster, tenant)
    flt = JobFilter(cluster=cluster, states=tuple(state or ()), tenant=tenant,
                    labels=tuple(labels), parent_id=parent, name_prefix=name,
                    created_from=_seconds(created_after, "created_after"),
                    created_to=_seconds(created_before, "created_before"))
    found = await store_of(request).list_jobs(flt, limit=limit + 1, after=after)
    jobs, after_last = page_of(found, limit, lambda job: job.id)
    return json_response(JobPage.model_construct(
        jobs=[JobOut.of(j) for j in jobs], next=after_last))


def list_scope(p: Principal, cluster: str | None,
               tenant: str | None) -> tuple[str | None, str | None]:
    """The (cluster, tenant) a listing by ``p`` reads: a client of one tenant reads its
    tenant's jobs, an agent its cluster's; asking for another's is Forbidden. The web UI's
    pages list through this too."""
    if p.role.value == "client" and p.tenant is not None:
        if tenant not in (None, p.tenant):
            raise Forbidden(f"this token may not read tenant {tenant!r}")
        tenant = p.tenant
    elif p.role.value == "agent":
        if cluster not in (None, p.cluster):
            raise Forbidden(f"this agent token may not read cluster {cluster!r}")
        cluster = p.cluster
    return cluster, tenant


def _seconds(text: str | None, what: str) -> float | None:
    """UNIX seconds of an ISO 8601 date and time (UTC when it names no zone)."""
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidSpec(f"{what}: {text!r} is not a date and time: {exc}") from exc
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


@router.get("/{job_id}", response_model=JobOut)
async def get_job(job_id: str, request: Request, p: Authed) -> Response:
    return json_response(JobOut.of(await _visible_job(request, p, job_id)))


@router.post("/{job_id}/cancel", response_model=JobOut)
async def cancel(job_id: str, request: Request, p: ClientOrAdmin) -> Response:
    """Cancel: a queued job at once; a running one through its agent. Terminal: unchanged."""
    before = await _visible_job(request, p, job_id)
    job = await store_of(request).request_cancel(job_id)
    if not before.terminal:
        logger.info("job %s: cancel requested (now %s)", job.id, job.state.value,
                    extra={"job_id": job.id, "state": job.state.value, "cancel": True})
    return json_response(JobOut.of(job))


@router.get("/{job_id}/wait", response_model=JobOut)
async def wait(
    job_id: str,
    request: Request,
    p: Authed,
    until: Literal["change", "terminal"] = "change",
    after_version: Annotated[int | None, Query(ge=0, le=MAX_INT)] = None,
    timeout: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 30.0,
) -> Response:
    """Long-poll: answer as soon as the job's version passes ``after_version`` (default: its
    version now) or, with ``until=terminal``, it ends; else after ``timeout`` seconds."""
    store = store_of(request)
    deadline = time.monotonic() + min(timeout, request.app.state.settings.max_wait_s)
    async with store.hub.watch(f"job:{job_id}") as changed:
        job = await _visible_job(request, p, job_id)
        floor = job.version if after_version is None else after_version

        def done(j: Job) -> bool:
            return j.terminal or (until == "change" and j.version > floor)

        while not done(job) and (left := deadline - time.monotonic()) > 0:
            if not await changed.wait(left):
                break  # timed out, or the server is stopping
            job = await store.get(job_id)
    return json_response(JobOut.of(job))


@router.get("/{job_id}/logs", response_class=Response,
            responses={200: {"content": {"application/octet-stream": {}},
                             "description": "Raw bytes; X-Next-Offset tells where to go on; "
                                            "X-Log-Gap: that many bytes before them were "
                                            "never stored (skipped)."}})
async def logs(
    job_id: str,
    request: Request,
    p: Authed,
    stream: Literal["stdout", "stderr"] = "stdout",
    offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LOG_READ)] = 1 << 20,
    wait: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 0.0,
) -> Response:
    """Log bytes from ``offset``. With ``wait`` > 0 and nothing new yet, wait for more (or
    for the job's end) up to ``wait`` seconds: a follower loops on X-Next-Offset.

    A gap (bytes at ``offset`` never stored while later ones are: an agent's chunks arrive
    in order, so they are lost, e.g. with the agent's state) is skipped, not waited on: the
    answer holds the bytes after it and ``X-Log-Gap`` says how many bytes were missing."""
    store = store_of(request)
    deadline = time.monotonic() + min(wait, request.app.state.settings.max_wait_s)
    async with store.hub.watch(f"logs:{job_id}", f"job:{job_id}") as changed:
        job = await _visible_job(request, p, job_id)
        start, data = await store.read_log_span(job_id, stream, offset, limit)
        while not data and not job.terminal and (left := deadline - time.monotonic()) > 0:
            if not await changed.wait(left):
                break
            job = await store.get(job_id)
            start, data = await store.read_log_span(job_id, stream, offset, limit)
    headers = {"X-Next-Offset": str(start + len(data)), "X-Job-State": job.state.value}
    if start > offset:
        headers["X-Log-Gap"] = str(start - offset)
    return Response(data, media_type="application/octet-stream", headers=headers)
