"""Steps on a POOL of AWS EMR clusters (boto3): one ``emr`` Bridgehead cluster is a pool of
EMR clusters ``bh-<pool>-g<N>`` that grows with its queue, is reused across a workflow's
phases, shrinks when idle, and replaces a cluster that died.

Submit queues the attempt in the pool's durable record (:mod:`bridgehead.backends.emr_pool`)
and returns its tag as the native id: a step reaches EMR only when a cluster has room, so the
queue the pool scales on is the broker's, not EMR's. Each poll cycle is ONE pass:

1. ``ListClusters`` (active states; pages) -> the pool's clusters by name; a cluster named like
   the pool's but not in the record is adopted after ``DescribeCluster`` shows the pool's tag
   (a crash between RunJobFlow and its record); one that left the active states costs one
   ``DescribeCluster`` (its end state and reason code), once.
2. ``ListSteps`` per ready cluster with ``StepStates`` PENDING/RUNNING/CANCEL_PENDING (pages of
   50), and ``ListSteps`` by ``StepIds`` (10 a call) for our steps that left that set. Never
   DescribeStep per step.
3. A cluster that ended TERMINATED_WITH_ERRORS with an infrastructure code (INSTANCE_FAILURE,
   INSTANCE_FLEET_TIMEOUT, INTERNAL_ERROR: a spot loss) makes its unfinished steps LOST with
   ``infrastructure=True`` and that reason, and the pool starts a replacement at once.
4. Placement: queued steps go to RUNNING/WAITING clusters under StepConcurrencyLevel (and
   EMR's 256 active steps), a workflow run's to the cluster that ran its earlier phases when
   it has room (``AddJobFlowSteps``, one call per cluster; the entries are marked ``placing``
   first: after a crash the step is found by the tag in its Name, never added twice).
5. Scaling: the pool wants ceil((queued + active) / concurrency) clusters within
   [min_clusters, max_clusters]; ``RunJobFlow`` is recorded as intent first (generation N,
   then the id); a cluster idle (no active step, none placed) past ``idle_timeout_s`` is
   terminated down to that number. EMR's AutoTerminationPolicy is the backstop when the agent
   is down.

Throttling (or any AWS error) raises BackendUnavailable: the agent backs off and no state
changes (a refused AddJobFlowSteps puts its steps back in the queue). ``calls`` counts EMR
requests (``cycle_calls``: the last poll's), for tests and the benchmark.

Usage: EMR has none per step. A step's is its runtime x its cores, ``estimated``, with its
share of the cluster's NormalizedInstanceHours (``instance_hours``), taken when it ends from
the hours no earlier step was charged, by runtime x cores against the steps still running
(:func:`bridgehead.backends.emr_resolve.apportion` states the rule): never hours after it
ended, and once the cluster's last step ends the shares sum to its hours. Exit codes: EMR
gives none; a FAILED step's reason carries its FailureDetails. Logs: with ``log_uri``
(``s3://``) the step's ``stdout.gz``/``stderr.gz`` (EMR's layout
``<log_uri><cluster>/steps/<step>/``) are read ONCE, when the step ends (EMR uploads them
every few minutes while it runs); the end is reported once they are there, or after two
minutes (:mod:`bridgehead.backends.emr_logs`). Without ``log_uri`` a job has no
logs here (deploy/emr/README.md says so).

Limits: one agent per pool (the record lives in its state dir); AWS credentials come from
boto3's usual chain (instance profile, environment), never from Bridgehead's settings.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import signal
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bridgehead.backends import emr_pool as pool_rules
from bridgehead.backends.base import NativeStatus
from bridgehead.backends.emr_api import EmrApi, EmrRefused, by_tag
from bridgehead.backends.emr_logs import StepLogs
from bridgehead.backends.emr_pool import (
    ACTIVE_CLUSTER,
    ACTIVE_STEP,
    POOL_TAG,
    ClusterView,
    PoolRecord,
)
from bridgehead.backends.emr_resolve import (
    apportion,
    final_status,
    lost_status,
    native_status,
    runtime_s,
)
from bridgehead.backends.emr_steps import cores_of, step_args, step_definition, tag_in
from bridgehead.config import EmrSettings
from bridgehead.domain.clusters import SPARK, Capacity
from bridgehead.domain.jobs import JobSpec, JobState
from bridgehead.errors import BackendUnavailable, ConfigError

logger = logging.getLogger(__name__)

CREATE_BACKOFF_S = 60.0
"""After EMR refused RunJobFlow (a bad setting, a missing permission): wait before asking
again (statuses are reported meanwhile; queued steps wait)."""
INTENT_GRACE_S = 120.0
"""An intent without a cluster id counts as a cluster this long (EMR's lists may lag)."""


class EmrBackend:
    kind = "emr"
    files_shared = False

    def __init__(self, settings: EmrSettings, *, state_dir: Path, failpoint: str = "") -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", settings.pool):
            raise ConfigError(f"emr pool {settings.pool!r}: give 1-64 letters, digits, _ . -")
        pool_rules.check_settings(settings)  # refused at start, not at the first RunJobFlow
        self.settings = settings
        self.pool = settings.pool
        self.record = PoolRecord(state_dir / "emr" / f"{self.pool}.json")
        self._failpoint = failpoint
        self.api = EmrApi(settings)
        self._lock = asyncio.Lock()
        self._name = re.compile(rf"bh-{re.escape(self.pool)}-g(\d+)")
        self.views: dict[str, ClusterView] = {}
        self._active: dict[str, dict[str, dict[str, Any]]] = {}
        """cluster id -> step id -> the step as this cycle's ListSteps gave it."""
        self._idle_since: dict[str, float] = {}
        self._replace = 0
        self._create_after = 0.0
        self._foreign: set[str] = set()
        self.logs = StepLogs(self.api, enabled=bool(settings.log_uri))
        self.cycle_calls = 0
        self._just_placed: set[str] = set()
        """Steps added to EMR in the last cycle: said settling, so the agent looks again soon
        (EMR starts a step on a ready cluster within moments) instead of a whole interval
        later; once per placement, so it costs one extra cycle, never a polling storm."""
        """EMR requests of the last poll cycle (``api.calls``: all of them)."""

    # -- submit, cancel, find ----------------------------------------------------------------
    async def submit(self, job_id: str, spec: JobSpec) -> str:
        """Queue the attempt ``job_id`` (its tag) in the pool's record: the next poll places
        it on a cluster with room. SubmitRejected for what EMR cannot run."""
        args = step_args(job_id, spec)
        if job_id not in self.record.steps:
            self.record.add_step(job_id, {
                "step_def": step_definition(job_id, spec, args), "run": pool_rules.run_of(spec),
                "cores": cores_of(spec), "queued_at": time.time(), "cluster": None,
                "step": None, "final": None})
        return job_id

    async def cancel(self, native_ids: Sequence[str]) -> None:
        async with self._lock:
            for tag in native_ids:
                entry = self.record.steps.get(tag)
                if entry is None or entry.get("final") is not None:
                    continue
                entry["cancel"] = True
                if entry.get("cluster") is None:
                    self._finish(tag, {"state": JobState.CANCELLED.value,
                                       "reason": "cancelled before EMR had the step"})
            self.record.save()
            try:
                await self._send_cancels()
            except BackendUnavailable as exc:
                logger.warning("EMR cancel deferred to the next poll: %s", exc)

    async def find(self, tags: Sequence[str]) -> dict[str, list[str]]:
        """A tag in the record is ours; else it is looked for in the Name of every step of
        the pool's clusters (the record was lost)."""
        async with self._lock:
            missing = {t for t in tags if t not in self.record.steps}
            if missing:
                await self._sync_clusters()
                for cid in list(self.record.clusters):
                    for step in await self.api.steps(cid):
                        tag = tag_in(step.get("Name", ""))
                        if tag in missing and tag not in self.record.steps:
                            self.record.steps[tag] = {
                                "step_def": None, "run": None, "cores": 1,
                                "queued_at": time.time(), "cluster": cid, "step": step["Id"],
                                "final": None}
                self.record.save()
            return {t: [t] if t in self.record.steps else [] for t in tags}

    # -- poll --------------------------------------------------------------------------------
    async def poll(self, native_ids: Sequence[str]) -> dict[str, NativeStatus]:
        async with self._lock:
            before = self.api.calls
            try:
                if (self.record.clusters or self.record.intents or self._unfinished()
                        or self.settings.min_clusters):
                    await self._cycle()
            finally:
                self.cycle_calls = self.api.calls - before
            self.record.prune(time.time())
            out = {}
            for tag in native_ids:
                status = self._status(tag)
                if status is not None:
                    out[tag] = status
            return out

    def _unfinished(self) -> bool:
        return any(e.get("final") is None for e in self.record.steps.values())

    async def _cycle(self) -> None:
        self._just_placed = set()
        await self._sync_clusters()
        for cid in [c for c in self.record.clusters if c not in self.views]:
            await self._ended(cid)
        for view in list(self.views.values()):
            await self._sync_steps(view)
        await self._send_cancels()
        placed = await self._place()
        target = await self._scale(placed)
        await self._retire(target, placed)
        await self.logs.fetch(self.record.steps)

    async def _sync_clusters(self) -> None:
        """The pool's live clusters (ListClusters), adopting any the record lacks."""
        self.views = {}
        states = [*ACTIVE_CLUSTER, "TERMINATING"]
        for summary in await self.api.pages("ListClusters", "Clusters", ClusterStates=states):
            match = self._name.fullmatch(summary.get("Name", ""))
            if match is None:
                continue
            cid, gen = summary["Id"], int(match.group(1))
            if cid in self._foreign or (cid not in self.record.clusters
                                        and not await self._ours(cid)):
                self._foreign.add(cid)  # named like ours, tagged otherwise: asked once
                continue
            if cid not in self.record.clusters:
                logger.info("EMR cluster %s (%s) adopted into pool %s", cid, summary["Name"],
                            self.pool)
                self.record.clusters[cid] = gen
                self.record.intents.pop(str(gen), None)
                self.record.data["generation"] = max(self.record.data["generation"], gen)
                self.record.save()
            self.views[cid] = ClusterView(
                id=cid, generation=gen, state=summary["Status"]["State"],
                instance_hours=float(summary.get("NormalizedInstanceHours") or 0))
        young = time.time() - INTENT_GRACE_S
        stale = [g for g, i in self.record.intents.items() if i["at"] < young]
        for old in stale:
            logger.info("EMR pool %s: cluster g%s was never created", self.pool, old)
            self.record.intents.pop(old)
        if stale:
            self.record.save()

    async def _ours(self, cid: str) -> bool:
        cluster = (await self.api.call("DescribeCluster", ClusterId=cid)).get("Cluster", {})
        tags = {t.get("Key"): t.get("Value") for t in cluster.get("Tags", [])}
        return tags.get(POOL_TAG) == self.pool

    async def _ended(self, cid: str) -> None:
        """A cluster of the record that left the active states: settle its steps."""
        cluster = (await self.api.call("DescribeCluster", ClusterId=cid)).get("Cluster", {})
        status = cluster.get("Status", {})
        reason = status.get("StateChangeReason", {})
        entries = {t: e for t, e in self.record.steps.items()
                   if e.get("cluster") == cid and e.get("final") is None}
        steps = await self.api.steps_by_id(cid, [e["step"] for e in entries.values() if e["step"]])
        if any(e["step"] is None for e in entries.values()):
            named = by_tag(await self.api.steps(cid))
            for tag, entry in entries.items():
                if entry["step"] is None and tag in named:
                    step_id = named[tag]["Id"]
                    entry["step"] = step_id
                    steps[step_id] = named[tag]
        lost, settled = 0, []
        for tag, entry in entries.items():
            step = steps.get(entry["step"]) if entry["step"] else None
            if step is None:  # never reached EMR: back to the queue, same tag
                self._requeue(tag, entry)
                continue
            if step["Status"]["State"] == "COMPLETED" or entry.get("cancel"):
                settled.append((tag, entry, step))
                continue
            lost += 1
            self._finish(tag, lost_status(cid, cluster.get("Name", ""), status, reason))
        lost_work = sum((runtime_s(s, datetime.now(UTC)) or 0.0) * self._cores(s)
                        for s in steps.values() if s["Id"] not in {e[2]["Id"] for e in settled})
        self._settle(cid, settled, lost_work,  # the lost steps' hours go to no step
                     float(cluster.get("NormalizedInstanceHours") or 0))
        if lost and status.get("State") == "TERMINATED_WITH_ERRORS" and \
                reason.get("Code") in pool_rules.INFRASTRUCTURE_CODES:
            self._replace += 1
            logger.info("EMR cluster %s died (%s): %d steps lost, replacing it", cid,
                        reason.get("Code"), lost)
        self.record.clusters.pop(cid, None)
        self.record.charged.pop(cid, None)
        self.record.data["runs"] = {r: c for r, c in self.record.runs.items() if c != cid}
        self._idle_since.pop(cid, None)
        self.record.save()

    async def _sync_steps(self, view: ClusterView) -> None:
        mine = {t: e for t, e in self.record.steps.items()
                if e.get("cluster") == view.id and e.get("final") is None}
        if not view.ready and not mine:
            self._active[view.id] = {}
            return
        active = {s["Id"]: s for s in await self.api.pages(
            "ListSteps", "Steps", ClusterId=view.id, StepStates=list(ACTIVE_STEP))}
        self._active[view.id] = active
        view.active = len(active)
        active_ids = {tag: s["Id"] for tag, s in by_tag(list(active.values())).items()}
        placing = [t for t, e in mine.items() if e["step"] is None and t not in active_ids]
        named = by_tag(await self.api.steps(view.id)) if placing else {}
        for tag, entry in mine.items():
            if entry["step"] is None:
                found = active_ids.get(tag) or (named[tag]["Id"] if tag in named else None)
                entry["step"] = found
                if found is None:  # the add never reached EMR: queue it again
                    self._requeue(tag, entry)
        left = [e["step"] for e in mine.values() if e["step"] and e["step"] not in active]
        ended = by_tag(list((await self.api.steps_by_id(view.id, left)).values()))
        settled = [(tag, mine[tag], step) for tag, step in ended.items()
                   if tag in mine and mine[tag].get("final") is None]
        now = datetime.now(UTC)
        running = sum((runtime_s(s, now) or 0.0) * self._cores(s) for s in active.values())
        self._settle(view.id, settled, running, view.instance_hours)
        self.record.save()

    async def _send_cancels(self) -> None:
        by_cluster: dict[str, list[str]] = {}
        for entry in self.record.steps.values():
            if entry.get("cancel") and not entry.get("cancel_sent") and entry.get("step") \
                    and entry.get("final") is None:
                by_cluster.setdefault(entry["cluster"], []).append(entry["step"])
        for cid, ids in by_cluster.items():
            await self.api.call("CancelSteps", ClusterId=cid, StepIds=ids,
                             StepCancellationOption="SEND_INTERRUPT")
            for entry in self.record.steps.values():
                if entry.get("step") in ids:
                    entry["cancel_sent"] = True
            self.record.save()

    # -- placement, scaling ------------------------------------------------------------------
    async def _place(self) -> set[str]:
        queued = [(t, self.record.steps[t].get("run")) for t in self.record.queued()]
        plan = pool_rules.place(queued, list(self.views.values()),
                                self.settings.step_concurrency, self.record.runs)
        for cid, tags in plan.items():
            for tag in tags:
                self.record.steps[tag]["cluster"] = cid
            self.record.save()  # placing: found by name after a crash, never added twice
            try:
                answer = await self.api.call("AddJobFlowSteps", JobFlowId=cid, Steps=[
                    self.record.steps[t]["step_def"] for t in tags])
            except EmrRefused:  # EMR did not add them: queued again (a timeout may have)
                for tag in tags:
                    self.record.steps[tag]["cluster"] = None
                self.record.save()
                raise
            self._crash_at("emr-after-add-steps")
            for tag, step_id in zip(tags, answer.get("StepIds", []), strict=False):
                self.record.steps[tag]["step"] = step_id
                if run := self.record.steps[tag].get("run"):
                    self.record.runs[run] = cid
            self.views[cid].active += len(tags)
            self._just_placed.update(tags)
            self.record.save()
        return set(plan)

    async def _scale(self, placed: set[str]) -> int:
        s = self.settings
        alive = sum(1 for v in self.views.values() if v.alive) + len(self.record.intents)
        active = sum(v.active for v in self.views.values() if v.alive)
        target = pool_rules.wanted(len(self.record.queued()), active, s.step_concurrency,
                                   s.min_clusters, s.max_clusters)
        if self._replace:
            target = max(target, min(s.max_clusters, alive + self._replace))
            self._replace = 0
        if time.time() >= self._create_after:
            for _ in range(max(0, target - alive)):
                await self._create()
        return target

    async def _create(self) -> None:
        gen = self.record.next_generation()
        self.record.intents[str(gen)] = {"at": time.time()}
        self.record.save()
        request = pool_rules.run_job_flow_request(self.settings, self.pool, gen)
        name = request["Name"]
        try:
            cid = (await self.api.call("RunJobFlow", **request))["JobFlowId"]
        except EmrRefused as exc:  # no cluster was made: the intent goes, the cycle goes on
            self.record.intents.pop(str(gen), None)
            self.record.save()
            if not exc.throttled:
                logger.error("EMR refused to create %s (trying again in %.0f s): %s", name,
                             CREATE_BACKOFF_S, exc)
                self._create_after = time.time() + CREATE_BACKOFF_S
            return
        self._crash_at("emr-after-run-job-flow")
        logger.info("EMR cluster %s (%s) started for pool %s", cid, name, self.pool)
        self.record.clusters[cid] = gen
        self.record.intents.pop(str(gen), None)
        self.record.save()
        self.views[cid] = ClusterView(id=cid, generation=gen, state="STARTING")

    async def _retire(self, target: int, placed: set[str]) -> None:
        now = time.time()
        for view in self.views.values():
            if view.ready and view.active == 0 and view.id not in placed:
                self._idle_since.setdefault(view.id, now)
            else:
                self._idle_since.pop(view.id, None)
        ids = pool_rules.retire(list(self.views.values()), self._idle_since, now,
                                self.settings.idle_timeout_s,
                                max(self.settings.min_clusters, target), placed)
        if ids:
            await self.api.call("TerminateJobFlows", JobFlowIds=ids)
            for cid in ids:
                logger.info("EMR cluster %s idle for %.0f s: terminated", cid,
                            now - self._idle_since.pop(cid, now))
                self.views[cid].state = "TERMINATING"

    # -- status, usage, logs -----------------------------------------------------------------
    def _status(self, tag: str) -> NativeStatus | None:
        entry = self.record.steps.get(tag)
        if entry is None:
            return None  # not ours (or long gone): the agent's grace decides
        step = self._active.get(entry.get("cluster") or "", {}).get(entry.get("step") or "")
        waiting = entry.get("final") is not None and self.logs.awaiting(tag, entry)
        status = native_status(entry, step, awaiting_logs=waiting)
        if tag in self._just_placed and not status.state.terminal:
            return dataclasses.replace(status, settling=True)
        return status

    def _requeue(self, tag: str, entry: dict[str, Any]) -> None:
        """A step whose AddJobFlowSteps never reached EMR: queued again (same tag), unless
        it was cancelled meanwhile."""
        entry["cluster"] = None
        if entry.get("cancel"):
            self._finish(tag, {"state": JobState.CANCELLED.value,
                               "reason": "cancelled before EMR had the step"})

    def _finish(self, tag: str, final: dict[str, Any]) -> None:
        entry = self.record.steps[tag]
        entry["final"] = final
        entry["final_at"] = time.time()

    def _settle(self, cid: str, settled: list[tuple[str, dict[str, Any], dict[str, Any]]],
                running_work: float, instance_hours: float) -> None:
        """Finish the steps of cluster ``cid`` that ended in this cycle, with their estimated
        usage (:func:`apportion`: their share of the hours not yet charged to a step, against
        ``running_work``, the runtime x cores so far of its steps still running); what they
        took is added to the cluster's ``charged`` hours in the record."""
        unclaimed = instance_hours - self.record.charged.get(cid, 0.0)
        usages = apportion([(step, int(entry.get("cores") or 1)) for _, entry, step in settled],
                           running_work, unclaimed)
        for (tag, entry, step), usage in zip(settled, usages, strict=True):
            self._finish(tag, final_status(step, entry, usage))
            if usage is not None and usage.instance_hours:
                self.record.charged[cid] = (self.record.charged.get(cid, 0.0)
                                            + usage.instance_hours)

    def _cores(self, step: dict[str, Any]) -> int:
        entry = self.record.steps.get(tag_in(step.get("Name", "")) or "")
        return int(entry.get("cores") or 1) if entry else 1

    async def read_log(self, native_id: str, stream: str, offset: int, limit: int) -> bytes:
        return self.logs.read(native_id, stream, offset, limit)

    # -- plumbing ----------------------------------------------------------------------------
    def free_slots(self) -> int | None:
        """Twice what the whole pool runs at once, less what is queued or running: the queue
        the pool scales on stays bounded, the rest waits on the server."""
        cap = 2 * self.settings.max_clusters * self.settings.step_concurrency
        return max(0, cap - sum(1 for e in self.record.steps.values() if e.get("final") is None))

    def capacity(self) -> Capacity | None:
        return Capacity(cores=None, honours=(SPARK, "resources.memory_mb"),
                        backend=self.kind, source=f"EMR pool {self.pool}")

    async def close(self) -> None:
        return None

    def _crash_at(self, point: str) -> None:
        if self._failpoint == point:
            os.kill(os.getpid(), signal.SIGKILL)
