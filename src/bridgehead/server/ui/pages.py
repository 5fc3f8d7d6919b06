"""The pages: each reads Bridgehead's own store (never a scheduler) through the same
principal, role and tenant checks as the API (:mod:`bridgehead.server.auth`, the API
routers' visibility functions), keyset-paged, with its filters in the URL."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from bridgehead.domain.clusters import Principal
from bridgehead.domain.jobs import Job, JobState
from bridgehead.domain.runs import RunState, retry_tasks, summarize
from bridgehead.errors import InvalidSpec
from bridgehead.server.admin import _scope as event_scope
from bridgehead.server.auth import ClientOrAdmin
from bridgehead.server.jobs import _visible_job as visible_job
from bridgehead.server.jobs import list_scope
from bridgehead.server.runs import _visible as visible_run
from bridgehead.server.sessions import ui_store
from bridgehead.server.ui.dag import layout
from bridgehead.server.ui.live import follow
from bridgehead.server.ui.views import FAILED_STATES, render
from bridgehead.store.ui_sql import COUNT_CAP, JobQuery
from bridgehead.workflows.launch import spec_of

router = APIRouter(prefix="/ui", include_in_schema=False)
PAGE = 50
LOG_TAIL = 64 << 10
"""Bytes of a log a page shows at first (its tail) and per "load earlier"."""
RUN_LOG_PART = 16 << 10
"""Bytes of each task's log on a run's log page (each links to its job for the rest)."""
TASKS_SHOWN = 200
"""Tasks listed per step on a run's page; a bigger fan-out is summed up by its counts."""


def _tenant_for(p: Principal, tenant: str | None) -> str | None:
    """The tenant a listing by ``p`` reads, as the API's job list decides it."""
    return list_scope(p, None, tenant or None)[1]


def _time(text: str | None, what: str) -> float | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidSpec(f"{what}: {text!r} is not a date and time "
                          "(YYYY-MM-DDTHH:MM, UTC)") from exc
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _states(values: list[str] | None) -> tuple[JobState, ...]:
    out = []
    for value in values or []:
        if not value:
            continue
        try:
            out.append(JobState(value))
        except ValueError as exc:
            raise InvalidSpec(f"state: {value!r} is not a job state "
                              f"({', '.join(s.value for s in JobState)})") from exc
    return tuple(out)


def _online(request: Request, stats: Any, now: float) -> bool:
    return bool(stats.cluster.online(now, request.app.state.settings.cluster_ttl_s))


@router.get("", response_class=HTMLResponse)
async def overview(request: Request, p: ClientOrAdmin) -> HTMLResponse:
    store, now = ui_store(request), time.time()
    tenant = _tenant_for(p, None)
    clusters = [(s, _online(request, s, now)) for s in await store.clusters()]
    recent = JobQuery(tenant=tenant, created_from=now - 86400)
    counts = await store.count_jobs(recent)
    failures = await store.query_jobs(JobQuery(tenant=tenant, states=FAILED_STATES), limit=10)
    runs = await store.list_runs(state=RunState.RUNNING.value, tenant=p.tenant, limit=20)
    run_counts = await store.task_counts([r.id for r in runs])
    return render(request, "overview.html", title="Overview", clusters=clusters, now=now,
                  counts=counts, cap=COUNT_CAP, failures=failures, runs=runs,
                  run_counts=run_counts, states=list(JobState), live=await follow(request))


@router.get("/jobs", response_class=HTMLResponse)
async def jobs(
    request: Request, p: ClientOrAdmin,
    cluster: str | None = None,
    state: Annotated[list[str] | None, Query()] = None,
    tenant: str | None = None,
    label: str | None = None,
    name: str | None = None,
    since: Annotated[str | None, Query(alias="from")] = None,
    until: Annotated[str | None, Query(alias="to")] = None,
    before: str | None = None,
) -> HTMLResponse:
    pair = None
    if label:
        key, sep, value = label.partition("=")
        if not sep or not key:
            raise InvalidSpec(f"label: {label!r} is not key=value")
        pair = (key, value)
    q = JobQuery(cluster=cluster or None, states=_states(state), tenant=_tenant_for(p, tenant),
                 labels=(pair,) if pair else (), name_prefix=name or None,
                 created_from=_time(since, "from"), created_to=_time(until, "to"))
    store = ui_store(request)
    found = await store.query_jobs(q, limit=PAGE + 1, before=before or None)
    page, more = found[:PAGE], len(found) > PAGE
    params = [(k, v) for k, v in request.query_params.multi_items() if k != "before" and v]
    return render(request, "jobs.html", title="Jobs", jobs=page, more=more,
                  next_before=page[-1].id if more else None, params=params,
                  counts=await store.count_jobs(q), cap=COUNT_CAP,
                  states=list(JobState), chosen={s.value for s in q.states},
                  clusters=await store.cluster_names(),
                  f={"cluster": cluster or "", "tenant": tenant or "", "label": label or "",
                     "name": name or "", "from": since or "", "to": until or ""})


async def _log_part(request: Request, job: Job, stream: str, end: int | None) -> dict[str, Any]:
    """The ``LOG_TAIL`` bytes of a stream before ``end`` (default: its end): where they start
    and end, and the text."""
    store = ui_store(request)
    if end is None:
        end = await _log_size(request, job.id, stream)
    start = max(0, end - LOG_TAIL)
    at, data = await store.read_log_span(job.id, stream, start, end - start)
    return {"stream": stream, "start": at, "end": at + len(data),
            "text": data.decode("utf-8", "replace")}


async def _log_size(request: Request, job_id: str, stream: str) -> int:
    return await ui_store(request).log_end(job_id, stream)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job(request: Request, job_id: str, p: ClientOrAdmin,
              stream: str = "stdout", end: int | None = None) -> HTMLResponse:
    if stream not in ("stdout", "stderr"):
        raise InvalidSpec(f"stream: {stream!r} is neither stdout nor stderr")
    found = await visible_job(request, p, job_id)
    events = await ui_store(request).subject_events(f"jobs/{job_id}", limit=500)
    logs = [await _log_part(request, found, s, end if s == stream else None)
            for s in ("stdout", "stderr")]
    return render(request, "job.html", title=f"Job {found.spec.name or found.id}", job=found,
                  events=events, logs=logs, spec=found.spec.to_dict(), now=time.time())


@router.get("/runs", response_class=HTMLResponse)
async def runs(request: Request, p: ClientOrAdmin, state: str | None = None,
               workflow: str | None = None, before: str | None = None) -> HTMLResponse:
    if state and state not in {s.value for s in RunState}:
        raise InvalidSpec(f"state: {state!r} is not a run state "
                          f"({', '.join(s.value for s in RunState)})")
    store = ui_store(request)
    found = await store.list_runs(state=state or None, workflow=workflow or None,
                                  tenant=p.tenant, limit=PAGE + 1, after=before or None)
    page, more = found[:PAGE], len(found) > PAGE
    counts = await store.task_counts([r.id for r in page])
    return render(request, "runs.html", title="Runs", runs=page, counts=counts,
                  next_before=page[-1].id if more else None, run_states=list(RunState),
                  f={"state": state or "", "workflow": workflow or ""}, now=time.time())


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run(request: Request, run_id: str, p: ClientOrAdmin) -> HTMLResponse:
    """Steps with their counts, the first TASKS_SHOWN tasks of each, the Gantt of the first
    tasks that started and the retry preview, from a :class:`RunView`: counted by the store,
    so a 10,000-wide fan-out's page does not load 10,000 tasks."""
    found = await visible_run(request, p, run_id)
    ended = found.state in (RunState.FAILED, RunState.CANCELLED)
    view = await ui_store(request).run_view(run_id, shown=TASKS_SHOWN, retryable=ended)
    steps = summarize(spec_of(found.spec_text, found.filename), view.tallies, found.idle)
    by_step: dict[str, list[Any]] = {}
    for t in view.head:
        by_step.setdefault(t.step, []).append(t)
    again = {t.key for t in retry_tasks(view.retryable)}  # what the store's retry_run re-runs
    retry = [t for t in view.retryable if t.key in again]
    return render(request, "run.html", title=f"Run {found.workflow}", run=found, steps=steps,
                  by_step=by_step, retry=retry, now=time.time(), dag=layout(steps),
                  live=await follow(request, f"runs/{run_id}"),
                  gantt=_gantt(found.created_at, view.first_started, view.started, time.time()))


def _gantt(origin: float, started: list[Any], total: int, now: float) -> dict[str, Any]:
    """The Gantt chart's rows (``started``: the first TASKS_SHOWN tasks that started, by
    start; ``total`` of them started): each task's start and end in seconds from the run's
    creation (a running task ends now), and the span they all fit in. ``ui.js`` draws the
    bars; the numbers read without it."""
    rows = [{"label": f"{t.step}[{t.index}]", "state": t.state.value,
             "start": max(0.0, t.started_at - origin),
             "end": max(0.0, (t.finished_at or now) - origin)} for t in started]
    span = max((r["end"] for r in rows), default=0.0)
    return {"rows": rows, "span": max(span, 1e-3), "more": max(0, total - len(rows))}


@router.get("/runs/{run_id}/log", response_class=HTMLResponse)
async def run_log(request: Request, run_id: str, p: ClientOrAdmin) -> HTMLResponse:
    """The whole run's log: each task's stdout in step order (the file's), then task order;
    each part is the tail of at most RUN_LOG_PART bytes, with a link to its job."""
    found = await visible_run(request, p, run_id)
    store = ui_store(request)
    tasks = await store.run_tasks(run_id)
    order = {step.id: i for i, step in enumerate(spec_of(found.spec_text, found.filename).steps)}
    parts = []
    for t in sorted(tasks, key=lambda t: (order.get(t.step, len(order)), t.index)):
        if t.job_id is None:
            continue
        size = await _log_size(request, t.job_id, "stdout")
        at, data = await store.read_log_span(t.job_id, "stdout", max(0, size - RUN_LOG_PART),
                                             RUN_LOG_PART)
        parts.append({"task": t, "start": at, "text": data.decode("utf-8", "replace")})
    return render(request, "run_log.html", title=f"Log of run {found.workflow}", run=found,
                  parts=parts)


@router.get("/events", response_class=HTMLResponse)
async def events(request: Request, p: ClientOrAdmin, type: str | None = None) -> HTMLResponse:
    """The latest events (newest first), of types starting with ``type``; ``ui.js`` then
    follows the stream (``/v1/events/stream``) from the newest one shown."""
    store = ui_store(request)
    last = await store.last_event_seq()
    found = await store.events(after=max(0, last - 2000), limit=2000, tenant=event_scope(p))
    shown = [e for e in reversed(found) if not type or e.type.startswith(type)][:200]
    return render(request, "events.html", title="Events", events=shown, last=last,
                  f={"type": type or ""})
