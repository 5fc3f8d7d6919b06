"""The pool of EMR clusters behind one ``emr`` Bridgehead cluster: its durable record and the
pure rules that place steps, size the pool and retire idle clusters (no I/O but the record's
file; :mod:`bridgehead.backends.emr` makes the calls).

The record (``<state_dir>/emr/<pool>.json``, replaced atomically on every change, plus a
journal of the steps queued since) holds:
- ``generation``: the last generation number given to a cluster (``bh-<pool>-g<N>``);
- ``intents``: a cluster creation, written BEFORE RunJobFlow (generation, time) and completed
  with the cluster's id after it; an intent without an id after a crash is settled by looking
  the name up (adopted if EMR has it; dropped if not: demand makes a new one);
- ``clusters``: id -> generation, the clusters this pool owns;
- ``steps``: one entry per attempt tag: its step definition, run, cores, and where it is:
  queued (no cluster) -> placing (cluster, no step id: written BEFORE AddJobFlowSteps) ->
  placed (cluster and step id) -> final (the status reported);
- ``runs``: workflow run -> the cluster that last ran one of its steps (reuse across phases);
- ``charged``: cluster id -> the normalized instance hours already shared out to its ended
  steps (:func:`bridgehead.backends.emr_resolve.apportion`).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridgehead.config import EmrSettings
from bridgehead.domain.jobs import JobSpec
from bridgehead.errors import ConfigError

ACTIVE_CLUSTER = ("STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING")
READY_CLUSTER = ("RUNNING", "WAITING")
ENDED_CLUSTER = ("TERMINATING", "TERMINATED", "TERMINATED_WITH_ERRORS")
ACTIVE_STEP = ("PENDING", "CANCEL_PENDING", "RUNNING")
INFRASTRUCTURE_CODES = ("INSTANCE_FAILURE", "INSTANCE_FLEET_TIMEOUT", "INTERNAL_ERROR")
"""Reason codes of a cluster that ended TERMINATED_WITH_ERRORS because its machines did
(a spot loss shows as INSTANCE_FAILURE or a fleet timeout), not because of its steps."""
POOL_TAG, GENERATION_TAG = "bridgehead:pool", "bridgehead:generation"
MAX_ACTIVE_STEPS = 256
"""EMR's cap on PENDING + RUNNING steps per cluster."""
FINAL_KEEP_S = 86400.0
"""A final step's entry is kept a day (the agent may ask again after a restart)."""


def run_of(spec: JobSpec) -> str | None:
    """The workflow run a job belongs to: its ``run`` label (set on every workflow job), else
    the run in a ``wf:<run>:...`` idempotency key."""
    if spec.labels.get("run"):
        return spec.labels["run"]
    key = spec.idempotency_key or ""
    if key.startswith("wf:"):
        return key.split(":")[1] or None
    return None


class PoolRecord:
    """The pool's durable record (see the module's docstring): a snapshot
    (``<pool>.json``, replaced atomically by :meth:`save`) and a journal of the steps queued
    since (``<pool>.journal``, one fsynced line per :meth:`add_step`), so a submit costs one
    short append however many steps the pool holds."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.journal = path.with_suffix(".journal")
        self._saved = ""
        """The snapshot last written (a save that would change nothing writes nothing)."""
        self.data: dict[str, Any] = {"generation": 0, "intents": {}, "clusters": {},
                                     "steps": {}, "runs": {}, "charged": {}}
        try:
            self.data.update(json.loads(path.read_text()))
        except FileNotFoundError:
            pass
        try:
            lines = self.journal.read_text().splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines:
            try:
                added = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash: its submit never returned
            self.steps.setdefault(added["tag"], added["entry"])
        self._saved = json.dumps(self.data)
        if lines:  # folded at once: a torn last line must not swallow the next append
            self._saved = ""
            self.save()

    @property
    def steps(self) -> dict[str, dict[str, Any]]:
        return self.data["steps"]  # type: ignore[no-any-return]

    @property
    def clusters(self) -> dict[str, int]:
        return self.data["clusters"]  # type: ignore[no-any-return]

    @property
    def intents(self) -> dict[str, dict[str, Any]]:
        return self.data["intents"]  # type: ignore[no-any-return]

    @property
    def runs(self) -> dict[str, str]:
        return self.data["runs"]  # type: ignore[no-any-return]

    @property
    def charged(self) -> dict[str, float]:
        """Cluster id -> the normalized instance hours already charged to its ended steps."""
        return self.data["charged"]  # type: ignore[no-any-return]

    def next_generation(self) -> int:
        self.data["generation"] += 1
        return int(self.data["generation"])

    def queued(self) -> list[str]:
        """Tags waiting for a cluster, oldest first."""
        waiting = [(e["queued_at"], t) for t, e in self.steps.items()
                   if e.get("cluster") is None and e.get("final") is None]
        return [t for _, t in sorted(waiting)]

    def prune(self, now: float) -> None:
        self.data["steps"] = {t: e for t, e in self.steps.items()
                              if e.get("final") is None
                              or now - e.get("final_at", now) < FINAL_KEEP_S}

    def add_step(self, tag: str, entry: dict[str, Any]) -> None:
        """A newly queued step, durable when this returns."""
        self.steps[tag] = entry
        self._saved = ""  # the next save folds the journal into the snapshot
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.journal, "a") as file:
            file.write(json.dumps({"tag": tag, "entry": entry}) + "\n")
            file.flush()
            os.fsync(file.fileno())

    def save(self) -> None:
        """The whole record, then an empty journal (nothing awaits in between: no submit
        can land between the snapshot and the truncation)."""
        text = json.dumps(self.data)
        if text == self._saved:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, self.path)
        with open(self.journal, "w"):
            pass
        self._saved = text


@dataclass
class ClusterView:
    """One cluster of the pool as this poll saw it."""

    id: str
    generation: int
    state: str
    active: int = 0
    """Steps PENDING, RUNNING or CANCEL_PENDING on it (anyone's)."""
    instance_hours: float = 0.0

    @property
    def ready(self) -> bool:
        return self.state in READY_CLUSTER

    @property
    def alive(self) -> bool:
        return self.state in ACTIVE_CLUSTER


def place(queued: list[tuple[str, str | None]], clusters: list[ClusterView],
          concurrency: int, runs: dict[str, str]) -> dict[str, list[str]]:
    """Cluster id -> the tags to add to it now. ``queued`` is (tag, run), oldest first. A
    step goes to a ready cluster with room under ``concurrency`` (and EMR's 256 active
    steps); to the cluster its run last used when that one has room, else to the ready
    cluster with the most room (a busy run's fan-out spreads over the pool)."""
    room = {c.id: min(concurrency, MAX_ACTIVE_STEPS) - c.active for c in clusters if c.ready}
    out: dict[str, list[str]] = {}
    for tag, run in queued:
        sticky = runs.get(run) if run else None
        if sticky is not None and room.get(sticky, 0) > 0:
            chosen = sticky
        else:
            free = [(n, cid) for cid, n in room.items() if n > 0]
            if not free:
                break
            chosen = max(free)[1]
        room[chosen] -= 1
        out.setdefault(chosen, []).append(tag)
    return out


def wanted(queued: int, active: int, concurrency: int, low: int, high: int) -> int:
    """How many clusters the pool should have: its queue depth over the concurrency."""
    return max(low, min(high, math.ceil((queued + active) / concurrency)))


def retire(clusters: list[ClusterView], idle_since: dict[str, float], now: float,
           idle_timeout_s: float, keep: int, placed: set[str]) -> list[str]:
    """The clusters to terminate now: ready, with no active step, none placed on this cycle,
    idle for ``idle_timeout_s``, while more than ``keep`` are alive (newest go first)."""
    alive = sum(1 for c in clusters if c.alive)
    out = []
    for c in sorted(clusters, key=lambda c: -c.generation):
        if alive <= keep:
            break
        if (c.ready and c.active == 0 and c.id not in placed
                and now - idle_since.get(c.id, now) >= idle_timeout_s):
            out.append(c.id)
            alive -= 1
    return out


RELEASE = re.compile(r"emr-(\d+)\.(\d+)\.(\d+)")
STEP_CONCURRENCY_SINCE = (5, 28, 0)
"""The first release that runs more than one step at a time (StepConcurrencyLevel > 1)."""
AUTO_TERMINATION_SINCE = ((5, 30, 0), (6, 1, 0))
"""AutoTerminationPolicy: 5.30.0 and later in 5.x, 6.1.0 and later from 6.x (EMR Management
Guide, "Using an auto-termination policy")."""


def check_settings(s: EmrSettings) -> None:
    """ConfigError, naming the field, for a setting RunJobFlow could not carry as given: the
    pool's clusters get exactly what the user configured, or the agent refuses to start."""
    match = RELEASE.fullmatch(s.release_label)
    if match is None:
        raise ConfigError(f"emr release_label {s.release_label!r}: give an EMR release label "
                          "like emr-7.5.0")
    version = tuple(int(g) for g in match.groups())
    if s.step_concurrency > 1 and version < STEP_CONCURRENCY_SINCE:
        raise ConfigError(f"emr step_concurrency {s.step_concurrency}: release_label "
                          f"{s.release_label} runs one step at a time (5.28.0 and later run "
                          "more)")
    since = AUTO_TERMINATION_SINCE[0] if version[0] < 6 else AUTO_TERMINATION_SINCE[1]
    if version < since:
        raise ConfigError(f"emr release_label {s.release_label}: it has no AutoTerminationPolicy"
                          " (auto_termination_s, the backstop while Bridgehead is down); use "
                          "5.30.0+ or 6.1.0+")
    if s.idle_timeout_s > s.auto_termination_s:
        raise ConfigError(f"emr idle_timeout_s ({s.idle_timeout_s:g}) is above "
                          f"auto_termination_s ({s.auto_termination_s}): EMR would terminate "
                          "an idle cluster before Bridgehead's idle timeout")
    if s.instance_fleets and "instance_groups" in s.model_fields_set:
        raise ConfigError("emr instance_groups and instance_fleets: a cluster has one or the "
                          "other; give only one")
    chosen = "instance_fleets" if s.instance_fleets else "instance_groups"
    masters = [g for g in getattr(s, chosen)
               if g.get("InstanceFleetType" if s.instance_fleets else "InstanceRole") == "MASTER"]
    if len(masters) != 1:
        raise ConfigError(f"emr {chosen}: give exactly one MASTER (found {len(masters)})")
    reserved = sorted({POOL_TAG, GENERATION_TAG} & set(s.tags))
    if reserved:
        raise ConfigError(f"emr tags: {', '.join(reserved)} is Bridgehead's own (the pool's "
                          "clusters are found by it)")


def run_job_flow_request(settings: EmrSettings, pool: str, generation: int) -> dict[str, Any]:
    """RunJobFlow's request for cluster ``bh-<pool>-g<generation>``: kept alive between steps
    (the pool retires it), EMR's auto-termination as the backstop, tagged with its pool and
    generation (how it is found again after a crash). Everything the user configured goes as
    given (:func:`check_settings` refuses, naming the field, what cannot)."""
    s = settings
    check_settings(s)
    instances: dict[str, Any] = {"KeepJobFlowAliveWhenNoSteps": True,
                                 "TerminationProtected": False}
    if s.instance_fleets:
        instances["InstanceFleets"] = s.instance_fleets
        if s.subnet_id:  # fleets take a list (JobFlowInstancesConfig.Ec2SubnetIds)
            instances["Ec2SubnetIds"] = [s.subnet_id]
    else:
        instances["InstanceGroups"] = s.instance_groups
        if s.subnet_id:
            instances["Ec2SubnetId"] = s.subnet_id
    tags = {**s.tags, POOL_TAG: pool, GENERATION_TAG: str(generation)}
    request: dict[str, Any] = {
        "Name": f"bh-{pool}-g{generation}", "ReleaseLabel": s.release_label,
        "Instances": instances, "Applications": [{"Name": a} for a in s.applications],
        "StepConcurrencyLevel": s.step_concurrency, "ServiceRole": s.service_role,
        "JobFlowRole": s.job_flow_role, "VisibleToAllUsers": True,
        "AutoTerminationPolicy": {"IdleTimeout": s.auto_termination_s},
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}
    if s.log_uri:
        request["LogUri"] = s.log_uri
    return request
