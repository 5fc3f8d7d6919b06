"""The workflow runner: advances runs when their jobs end. No process waits on a run.

It reads the event log (see :mod:`bridgehead.controllers.consumers`): a ``job.finished`` event of a
job labelled ``run=<id>``, or a run's ``started``/``cancelling``/``retried`` event, makes it
look at that run: load the run and its tasks, :func:`~bridgehead.domain.runs.plan`, apply the
plan by compare-and-set. Retries with a backoff and step timeouts are timers kept in memory
and rebuilt from the store whenever this server becomes the runner (it looks at every live
run then), so a server killed mid-run loses nothing: its successor resumes each run from what
was committed, and a task's job is never submitted twice (see ``store/runs_sql.py``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from bridgehead.controllers.consumers import EventConsumer
from bridgehead.domain.arrays import FANOUT_BACKENDS
from bridgehead.domain.clusters import route
from bridgehead.domain.events import Event
from bridgehead.domain.jobs import JobSpec
from bridgehead.domain.runs import Router, Run, RunsArrays, plan
from bridgehead.domain.workflows import WorkflowSpec
from bridgehead.errors import NotFound, StoreError
from bridgehead.metrics import Metrics
from bridgehead.store import JobStore
from bridgehead.workflows.launch import spec_of

logger = logging.getLogger(__name__)

_RUN_EVENTS = frozenset({"bridgehead.workflow.started", "bridgehead.workflow.cancelling",
                         "bridgehead.workflow.retried"})
SWEEP_S = 60.0
"""How often the runner looks at every live run even without an event."""
_ATTEMPTS = 8
"""Looks at one run in a row when another writer keeps moving it (compare-and-set lost)."""


def runs_in(events: list[Event]) -> list[str]:
    """The runs these events concern, each once, in order of first mention."""
    found: dict[str, None] = {}
    for event in events:
        if event.type == "bridgehead.job.finished":
            run_id = (event.data.get("labels") or {}).get("run")
        elif event.type in _RUN_EVENTS:
            run_id = event.data.get("run_id")
        else:
            continue
        if isinstance(run_id, str):
            found[run_id] = None
    return list(found)


class WorkflowRunner(EventConsumer):
    name = "workflow-runner"
    types = ("bridgehead.job.finished", *sorted(_RUN_EVENTS))

    def __init__(self, store: JobStore, *, cluster_ttl_s: float = 30.0,
                 lease_s: float = 15.0, metrics: Metrics | None = None) -> None:
        super().__init__(store, lease_s=lease_s, metrics=metrics)
        self.cluster_ttl_s = cluster_ttl_s
        self._timers: dict[str, float] = {}
        self._next_sweep = 0.0
        self.plans_applied = 0
        """Plans this runner applied (also ``bridgehead_workflow_plans_total``)."""

    async def start(self) -> None:
        self._timers.clear()
        await self._sweep(time.time())

    async def _sweep(self, now: float) -> None:
        """Look at every live run: on becoming the runner, then every ``SWEEP_S`` as a safety
        net (an event the cursor could not see costs a delay, never a stuck run)."""
        self._next_sweep = now + SWEEP_S
        for run_id in await self.store.active_runs():
            await self._advance_one(run_id)

    async def handle(self, events: list[Event]) -> bool:
        run_ids = runs_in(events)
        for run_id in run_ids:
            await self._advance_one(run_id)
        return bool(run_ids)

    async def tick(self, now: float) -> None:
        if now >= self._next_sweep:
            await self._sweep(now)
            return
        for run_id in [r for r, at in self._timers.items() if at <= now]:
            await self._advance_one(run_id)

    async def _advance_one(self, run_id: str) -> None:
        """Advance one run; a run that cannot be advanced (its stored workflow no longer
        parses, a bug) is logged and left as it is, and does not stop the others."""
        try:
            await self.advance(run_id)
        except StoreError:
            raise  # the consumer retries the whole batch
        except Exception:
            self._timers.pop(run_id, None)
            logger.exception("run %s could not be advanced; it is looked at again on its "
                             "next event or when a server starts", run_id)

    def next_wake(self) -> float | None:
        return min([*self._timers.values(), self._next_sweep])

    async def advance(self, run_id: str) -> Run | None:
        """Look at one run and apply what it needs now; the run as it is afterwards."""
        for _ in range(_ATTEMPTS):
            try:
                run = await self.store.get_run(run_id)
            except NotFound:
                self._timers.pop(run_id, None)
                return None
            if run.state.terminal:
                self._timers.pop(run_id, None)
                return run
            spec = spec_of(run.spec_text, run.filename)
            tasks = await self.store.run_tasks(run_id)
            router = await self._router(spec)
            decided = plan(spec, run, tasks, now=time.time(), router=router,
                           arrays=await self._arrays(spec))
            for job_id in decided.cancel_jobs:
                await self.store.request_cancel(job_id)
            if decided.writes:
                applied = await self.store.apply_plan(run, decided)
                if applied is None:
                    continue  # another writer moved the run: look again
                run = applied
                self.plans_applied += 1
                self.metrics.plan_applied()
            if decided.wake_at is None:
                self._timers.pop(run_id, None)
            else:
                self._timers[run_id] = decided.wake_at
            return run
        logger.warning("run %s kept changing under the runner; it is looked at again on its "
                       "next event", run_id)
        return None

    async def _arrays(self, spec: WorkflowSpec) -> RunsArrays | None:
        """Which clusters run job arrays (their agents' backend does), for a workflow with
        a fan-out that may be one."""
        if not any(step.foreach is not None and step.array for step in spec.steps):
            return None
        names = {s.cluster.name for s in await self.store.clusters()
                 if s.cluster.backend in FANOUT_BACKENDS}
        return names.__contains__

    async def _router(self, spec: WorkflowSpec) -> Router | None:
        """Route steps without a cluster by their labels, over the clusters known now."""
        if all(step.cluster for step in spec.steps):
            return None
        known = [(s.cluster, s.counts) for s in await self.store.clusters()]
        now, ttl = time.time(), self.cluster_ttl_s

        def routed(job: JobSpec) -> JobSpec:
            return replace(job, cluster=route(job.cluster_labels, known, now=now, ttl_s=ttl))

        return routed

