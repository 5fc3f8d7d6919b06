"""Launching a workflow run: its file parsed once per process, its params validated, one job
per step built to check it, and the run stored; the runner (:mod:`bridgehead.controllers.runner`)
starts it when it reads the run's ``started`` event."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from functools import lru_cache
from typing import Any

from bridgehead.domain.jobs import JobSpec
from bridgehead.domain.runs import Run, expand, job_spec_for, new_run_id
from bridgehead.domain.workflows import WorkflowSpec
from bridgehead.errors import Conflict, InvalidSpec
from bridgehead.store import JobStore
from bridgehead.workflows.spec import parse_workflow


@lru_cache(maxsize=64)
def spec_of(text: str, filename: str) -> WorkflowSpec:
    """A run's workflow, parsed once per process (runs store the file's text)."""
    return parse_workflow(text, filename)


async def create_run(store: JobStore, spec_text: str, *, filename: str = "workflow.yaml",
                     params: Mapping[str, Any] | None = None, tenant: str = "default",
                     idempotency_key: str | None = None,
                     check: Callable[[list[JobSpec]], Awaitable[None]] | None = None,
                     ) -> tuple[Run, bool]:
    """Validate a workflow and a run's params, then store the run; the runner starts it when
    it reads the run's ``started`` event. The same ``idempotency_key`` returns the same run.
    ``check`` (the server's capacity check) sees each step's first job that names its
    cluster; its InvalidSpec is raised naming the step."""
    spec = spec_of(spec_text, filename)
    resolved = spec.resolve_params(params)
    run = Run(id=new_run_id(), workflow=spec.name, spec_text=spec_text, filename=filename,
              params=resolved, tenant=tenant, idempotency_key=idempotency_key)
    tasks = expand(spec, run.id, resolved)
    checked: set[str] = set()
    for task in tasks:  # one job per step, built now: a bad param fails here, not mid-run
        if task.step not in checked:
            checked.add(task.step)
            job = job_spec_for(spec, run, task)
            if check is not None and job.cluster:
                try:
                    await check([job])
                except InvalidSpec as exc:
                    raise InvalidSpec(f"step {task.step!r}: {exc.message}") from exc
    stored, created = await store.create_run(run, tasks)
    if not created and (stored.spec_text, stored.params) != (spec_text, resolved):
        raise Conflict(f"idempotency key {idempotency_key!r} is taken by run {stored.id}, "
                       "started with another workflow text or params: use a new key for a "
                       "different run")
    return stored, created
