"""Workflow runs: start (from a workflow file's text), read, long-poll, list, cancel, retry.

The server only records what a user asks; the runner (:mod:`bridgehead.controllers.runner`)
does the rest when it reads the run's event.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from bridgehead.domain.clusters import Principal
from bridgehead.domain.runs import Run, step_summary
from bridgehead.errors import Forbidden, NotFound
from bridgehead.server.auth import ClientOrAdmin
from bridgehead.server.deps import store_of
from bridgehead.server.openapi import errors
from bridgehead.server.schemas import (
    MAX_INT,
    RetryIn,
    RunDetailOut,
    RunIn,
    RunOut,
    RunPage,
    StepOut,
    TaskOut,
    json_response,
    page_of,
)
from bridgehead.store import JobStore
from bridgehead.workflows.launch import create_run, spec_of

router = APIRouter(prefix="/v1/workflows/runs", tags=["workflows"])


async def start_run(request: Request, body: RunIn) -> tuple[Run, bool]:
    """Create the run; a step whose cluster can never run its job, or cannot honour what it
    asks (:mod:`bridgehead.server.capacity`), is a 400 naming the step."""
    store = store_of(request)
    return await create_run(store, body.spec, filename=body.filename, params=body.params,
                            tenant=body.tenant, idempotency_key=body.idempotency_key,
                            check=partial(request.app.state.capacities.refuse_unfit, store))


async def _visible(request: Request, p: Principal, run_id: str) -> Run:
    run = await store_of(request).get_run(run_id)
    if not p.may_see_tenant(run.tenant):
        raise NotFound(f"workflow run {run_id} not found")
    return run


async def _out(store: JobStore, run: Run) -> RunOut:
    counts = await store.task_counts([run.id])
    return RunOut.of(run, counts[run.id])


@router.post("", response_model=RunOut, status_code=201,
             responses={200: {"description": "The idempotency key matched an existing run."},
                        **errors(409)})
async def create(body: RunIn, request: Request, p: ClientOrAdmin) -> Response:
    """Start a run of a workflow (the YAML text of its file) with ``params``."""
    if not p.may_see_tenant(body.tenant):
        raise Forbidden(f"this token may not start runs in tenant {body.tenant!r}")
    store = store_of(request)
    run, created = await start_run(request, body)
    return json_response(await _out(store, run), 201 if created else 200)


@router.get("", response_model=RunPage)
async def list_runs(
    request: Request,
    p: ClientOrAdmin,
    state: str | None = None,
    workflow: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    after: str | None = None,
) -> Response:
    """Runs, newest first; ``after`` is the ``next`` of the previous page."""
    store = store_of(request)
    found = await store.list_runs(state=state, workflow=workflow, tenant=p.tenant,
                                  limit=limit + 1, after=after)
    runs, after_last = page_of(found, limit, lambda run: run.id)
    counts = await store.task_counts([r.id for r in runs])
    page = RunPage.model_construct(runs=[RunOut.of(r, counts[r.id]) for r in runs],
                                   next=after_last)
    return json_response(page)


@router.get("/{run_id}", response_model=RunDetailOut)
async def get_run(
    run_id: str,
    request: Request,
    p: ClientOrAdmin,
    wait: Annotated[float, Query(ge=0, description="Long-poll up to this many seconds for "
                                 "a version newer than ``version``.")] = 0.0,
    version: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
    tasks: Annotated[bool, Query(description="Include every task.")] = True,
) -> Response:
    """A run with its steps (state, counts, times) and tasks."""
    store = store_of(request)
    deadline = time.monotonic() + min(wait, request.app.state.settings.max_wait_s)
    async with store.hub.watch(f"run:{run_id}") as changed:
        run = await _visible(request, p, run_id)
        while run.version <= version and (left := deadline - time.monotonic()) > 0:
            if not await changed.wait(left):
                break
            run = await _visible(request, p, run_id)
    found = await store.run_tasks(run_id)
    spec = spec_of(run.spec_text, run.filename)
    counts: dict[str, int] = {}
    for task in found:
        counts[task.state.value] = counts.get(task.state.value, 0) + 1
    base = RunOut.of(run, counts)
    detail = RunDetailOut.model_construct(
        **dict(base),
        steps=[StepOut.of(s) for s in step_summary(spec, found, run.idle)],
        tasks=[TaskOut.of(t) for t in found] if tasks else [])
    return json_response(detail)


@router.get("/{run_id}/log", response_class=StreamingResponse, responses={200: {
    "content": {"text/plain": {}},
    "description": "Each task's log in step order (the file's), then task order, each "
                   "after a line '==> <step>[<index>] job <id> (<state>) <=='; tasks that "
                   "have no job yet are left out."}})
async def run_log(
    run_id: str, request: Request, p: ClientOrAdmin,
    stream: Literal["stdout", "stderr"] = "stdout",
) -> StreamingResponse:
    """The whole run's log, one stream of all its tasks' (the light-source user's one log):
    read from the store a chunk at a time, so a big run never sits in memory."""
    run = await _visible(request, p, run_id)
    store = store_of(request)
    order = {step.id: i for i, step in enumerate(spec_of(run.spec_text, run.filename).steps)}
    tasks = sorted(((t, t.job_id) for t in await store.run_tasks(run_id) if t.job_id),
                   key=lambda pair: (order.get(pair[0].step, len(order)), pair[0].index))

    async def parts() -> AsyncIterator[bytes]:
        for task, job_id in tasks:
            state = task.job.state.value if task.job is not None else task.state.value
            yield f"==> {task.step}[{task.index}] job {job_id} ({state}) <==\n".encode()
            offset, last = 0, b"\n"
            while True:
                start, data = await store.read_log_span(job_id, stream, offset, 1 << 20)
                if not data:
                    break
                yield data
                offset, last = start + len(data), data[-1:]
            if last != b"\n":
                yield b"\n"

    return StreamingResponse(parts(), media_type="text/plain; charset=utf-8")


@router.post("/{run_id}/cancel", response_model=RunOut)
async def cancel(run_id: str, request: Request, p: ClientOrAdmin) -> Response:
    """Cancel the run: its live jobs are cancelled and nothing else starts."""
    await _visible(request, p, run_id)
    store = store_of(request)
    return json_response(await _out(store, await store.request_run_cancel(run_id)))


@router.post("/{run_id}/retry", response_model=RunOut, responses={
    201: {"model": RunOut, "description": "from_failed false: a new run of the same workflow "
          "and params."}, **errors(409)})
async def retry(run_id: str, body: RetryIn, request: Request, p: ClientOrAdmin) -> Response:
    """Retry a failed or cancelled run: only what did not succeed (``from_failed``), or all
    of it as a new run."""
    run = await _visible(request, p, run_id)
    store = store_of(request)
    if body.from_failed:
        return json_response(await _out(store, await store.retry_run(run_id)))
    again = RunIn(spec=run.spec_text, filename=run.filename, params=run.params,
                  tenant=run.tenant)
    new, _ = await start_run(request, again)
    return json_response(await _out(store, new), 201)
