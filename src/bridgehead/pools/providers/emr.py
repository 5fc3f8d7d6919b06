"""``emr``: a pool of TASK nodes in one EMR cluster of the agent's ``emr`` backend. A node is
one instance in a TASK instance group of its own, named ``bh-<pool>-<n>`` (a slot).

Options: ``instance_type`` (required: the EC2 type of every node, e.g. ``m5.xlarge``; the
pool's ``shape`` should say what it offers, which EMR does not check) and ``cluster_id``
(default: the oldest live cluster of the agent's EMR pool, ``bh-<pool>-g<N>``; set the
backend's ``min_clusters`` to 1 or more so that cluster stays). ``capacity_type = "spot"``
buys the groups as ``SPOT`` (EMR caps the price at on-demand), else ``ON_DEMAND``.

**Why one group per node.** EMR resizes a group by count and has no client token, and an
instance group can be neither renamed nor deleted (only resized to 0). So each node owns a
slot group, and the key it was launched with is kept in the provider's record
(``<state_dir>/emr/nodes-<pool>.json``: cluster -> slot -> key), written BEFORE the call that
grows the slot. A launch looks its key up there first, so asking again after a crash (between
the call and the heartbeat that reports it) finds the same slot: a slot already at 1 is
answered as is, one at 0 is set to 1 (``InstanceCount`` is absolute, never an increment), one
never created is created under the same name (found by name in ``ListInstanceGroups``). A
slot back at 0 with no instance left is free for the next key. A cluster has at most 50
instance groups, 48 of them TASK groups (EMR Management Guide, "Instance groups"): a pool's
``max_nodes`` above 48 is refused, and a launch that finds the cluster's 48 TASK groups taken
by others is a :class:`CapacityShortage`. A node of ours whose record was lost is listed
without a key: an orphan the scaler terminates after its grace.

**What it can see of work, and what guards a node with work.** EMR's API tells the cluster's
steps (``ListSteps``) and its groups' instance counts, never which instance runs a step's YARN
containers (that is the ResourceManager's ``/ws/v1/cluster/nodes``, on the master, which this
provider does not read). So ``jobs`` of a ready node is the number of the cluster's RUNNING
(or CANCEL_PENDING) steps: while any step runs, every ready node counts as busy and terminate
refuses it (:class:`NodeBusy`). That is conservative (no node is released while the cluster
works, even one that holds none of it) and it is the provider's guard. The scaler's two others
come first: it names only nodes it has seen idle for their grace, and the store re-checks in
the transaction that cordons or terminates that nothing was placed on them. Past all three,
the resize to 0 is EMR's graceful shrink (5.10.0+, "terminate at task completion": EMR drains
the node and decommissions YARN on it, waiting up to YARN's decommission timeout, a yarn-site
setting; EMR Management Guide, "Cluster scale-down"). ``EC2InstanceIdsToTerminate``
(immediate, whatever runs there) is never used.

**Ready, interrupted.** ``ready``: the group is RUNNING with its instance running.
``interrupted``: a SPOT group that was ready once and now runs fewer instances than it asks
for: EC2 took the instance back and EMR is provisioning another (EMR's API carries no
two-minute notice; that is EC2's, in instance metadata and EventBridge).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from bridgehead.backends.base import Backend
from bridgehead.domain.pools import CapacityType, InvalidPool, Pool
from bridgehead.errors import BackendUnavailable
from bridgehead.pools.providers.base import CapacityShortage, Listed, NodeBusy, ProviderError
from bridgehead.pools.providers.options import Option, read_options

MAX_TASK_GROUPS = 48
"""EMR: one master, one core and up to 48 TASK instance groups per cluster."""
LIVE_CLUSTER = ("STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING")
READY_CLUSTER = ("RUNNING", "WAITING")
WORKING_STEP = ("RUNNING", "CANCEL_PENDING")
_INSTANCE_TYPE = re.compile(r"[a-z][a-z0-9-]*\.[a-z0-9]+")
_CLUSTER_ID = re.compile(r"j-[A-Z0-9]{1,64}")

Records = list[dict[str, Any]]
"""EMR's listed records (an alias: inside the provider class, ``list`` is the interface's)."""
Clusters = list[tuple[str, str]]
Nodes = list[Listed]


@dataclass(frozen=True, slots=True)
class Slot:
    """One of our slot groups as ``ListInstanceGroups`` shows it."""

    id: str
    name: str
    state: str
    requested: int
    running: int
    spot: bool
    was_ready: bool

    @staticmethod
    def of(group: dict[str, Any]) -> Slot:
        status = group.get("Status") or {}
        return Slot(id=group["Id"], name=group.get("Name", ""), state=status.get("State", ""),
                    requested=int(group.get("RequestedInstanceCount") or 0),
                    running=int(group.get("RunningInstanceCount") or 0),
                    spot=group.get("Market") == "SPOT",
                    was_ready=bool((status.get("Timeline") or {}).get("ReadyDateTime")))

    @property
    def held(self) -> bool:
        """A node is (or is still) here: asked for, or not yet gone."""
        return self.requested > 0 or self.running > 0

    @property
    def ready(self) -> bool:
        return self.state == "RUNNING" and self.requested > 0 and self.running >= self.requested

    @property
    def interrupted(self) -> bool:
        return self.spot and self.was_ready and 0 < self.requested and self.running < \
            self.requested


class EmrProvider:
    name: ClassVar[str] = "emr"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "instance_type": Option(kind=str, default=""),
        "cluster_id": Option(kind=str, default=""),
    }

    def __init__(self, pool: Pool, backend: Backend | None = None) -> None:
        options = read_options(pool, self.OPTIONS)
        self.instance_type = str(options["instance_type"])
        self.cluster_id = str(options["cluster_id"])
        if not _INSTANCE_TYPE.fullmatch(self.instance_type):
            raise InvalidPool("must name the nodes' EC2 instance type (e.g. m5.xlarge)",
                              ("options", "instance_type"))
        if self.cluster_id and not _CLUSTER_ID.fullmatch(self.cluster_id):
            raise InvalidPool("must be an EMR cluster id (j-...)", ("options", "cluster_id"))
        if pool.max_nodes > MAX_TASK_GROUPS:
            raise InvalidPool(f"an emr pool has at most {MAX_TASK_GROUPS} nodes (one TASK "
                              f"instance group each; EMR allows {MAX_TASK_GROUPS} per cluster)",
                              ("max_nodes",))
        self.market = "SPOT" if pool.capacity_type is CapacityType.SPOT else "ON_DEMAND"
        self._prefix = f"bh-{pool.name}-"
        self._slot = re.compile(rf"{re.escape(self._prefix)}\d+")
        self._backend: Any = None
        self._path: Path | None = None
        if backend is not None and getattr(backend, "kind", None) != "emr":
            raise ProviderError(f"the emr provider runs only in an agent of the emr backend "
                                f"(this one's is {getattr(backend, 'kind', '?')})")
        if backend is not None:
            settings: Any = getattr(backend, "settings", None)
            if not self.cluster_id and settings is not None and settings.min_clusters < 1:
                raise InvalidPool(f"without it the pool's cluster is the agent's EMR pool's, "
                                  f"which may retire it (set [agent.emr] min_clusters >= 1, "
                                  f"it is {settings.min_clusters})", ("options", "cluster_id"))
            self._backend = backend
            self._path = backend.record.path.parent / f"nodes-{pool.name}.json"  # type: ignore[attr-defined]
        self._record: dict[str, dict[str, str]] = self._load()
        self._lock = asyncio.Lock()

    # -- the interface ---------------------------------------------------------------------
    async def launch(self, pool: Pool, keys: Sequence[str]) -> dict[str, str]:
        async with self._lock:
            ready = [cid for cid, state in await self._clusters() if state in READY_CLUSTER]
            if not ready:
                raise ProviderError(f"pool {pool.name}: no running EMR cluster to add "
                                    "TASK nodes to (yet)")
            cid = ready[0]
            groups = await self._groups(cid)
            slots = {g["Name"]: Slot.of(g) for g in groups if self._ours(g)}
            tasks = sum(1 for g in groups if g.get("InstanceGroupType") == "TASK")
            made: dict[str, str] = {}
            short = False
            for key in keys:
                mine = self._record.setdefault(cid, {})
                name = next((n for n, k in mine.items() if k == key), None)
                if name is None:
                    name = self._free(slots)
                    if name is None and tasks >= MAX_TASK_GROUPS:
                        short = True
                        break
                    if name is None:
                        name = self._new_name(slots, mine)
                    mine[name] = key
                    self._save()  # before the call: asked again, the key finds its slot
                slot = slots.get(name)
                if slot is None:
                    gid = await self._add(pool, cid, name)
                    tasks += 1
                    slots[name] = Slot(id=gid, name=name, state="PROVISIONING", requested=1,
                                       running=0, spot=self.market == "SPOT", was_ready=False)
                elif slot.requested == 0:
                    await self._api("ModifyInstanceGroups", ClusterId=cid, InstanceGroups=[
                        {"InstanceGroupId": slot.id, "InstanceCount": 1}])
                    gid = slot.id
                else:
                    gid = slot.id  # launched already (the agent asks again after a crash)
                made[key] = f"{cid}/{gid}"
        if short and not made:
            raise CapacityShortage(f"pool {pool.name}: cluster {cid} has {MAX_TASK_GROUPS} "
                                   "TASK instance groups already (EMR's limit)")
        return made

    async def terminate(self, pool: Pool, provider_ids: Sequence[str]) -> None:
        async with self._lock:
            by_cluster: dict[str, list[str]] = {}
            for pid in provider_ids:
                cid, _, gid = pid.partition("/")
                by_cluster.setdefault(cid, []).append(gid)
            live = {cid for cid, _ in await self._clusters()}
            for cid, gids in by_cluster.items():
                if cid not in live:
                    continue  # the cluster is gone, and its nodes with it
                groups = {g["Id"]: Slot.of(g) for g in await self._groups(cid)}
                held = [groups[g] for g in gids if g in groups and groups[g].requested > 0]
                if any(s.running for s in held) and await self._working(cid):
                    raise NodeBusy(f"pool {pool.name}: cluster {cid} is running steps, which "
                                   f"may use {', '.join(s.name for s in held)}")
                if held:
                    await self._api("ModifyInstanceGroups", ClusterId=cid, InstanceGroups=[
                        {"InstanceGroupId": s.id, "InstanceCount": 0} for s in held])

    async def list(self, pools: Sequence[Pool]) -> list[Listed]:
        if not pools:
            return []
        name = pools[0].name
        async with self._lock:
            clusters = [cid for cid, _ in await self._clusters()]
            pruned = {cid: slots for cid, slots in self._record.items() if cid in clusters}
            if pruned != self._record:
                self._record = pruned
                self._save()
            out: Nodes = []
            for cid in clusters:
                slots = [Slot.of(g) for g in await self._groups(cid) if self._ours(g)]
                held = [s for s in slots if s.held]
                if not held:
                    continue
                working = await self._working(cid) if any(s.ready for s in held) else 0
                keys = self._record.get(cid, {})
                out += [Listed(provider_id=f"{cid}/{s.id}", pool=name, key=keys.get(s.name),
                               ready=s.ready, jobs=working if s.ready else 0,
                               interrupted=s.interrupted) for s in held]
            return out

    # -- slots -----------------------------------------------------------------------------
    def _ours(self, group: dict[str, Any]) -> bool:
        return group.get("InstanceGroupType") == "TASK" and bool(
            self._slot.fullmatch(group.get("Name", "")))

    def _free(self, slots: dict[str, Slot]) -> str | None:
        """The lowest slot group with no node left (the key it had, if any, is replaced)."""
        free = sorted((self._number(n), n) for n, s in slots.items() if not s.held)
        return free[0][1] if free else None

    def _new_name(self, slots: dict[str, Slot], mine: dict[str, str]) -> str:
        """A slot name no group has and no key was given (a group being created after a
        timeout may not be listed yet: its name is never given twice)."""
        taken = {self._number(n) for n in (*slots, *mine)}
        return f"{self._prefix}{next(i for i in range(1, len(taken) + 2) if i not in taken)}"

    def _number(self, name: str) -> int:
        return int(name.removeprefix(self._prefix))

    # -- EMR -------------------------------------------------------------------------------
    async def _clusters(self) -> Clusters:
        """(id, state) of the clusters whose TASK nodes this pool may hold, preferred first:
        ``cluster_id``, else the agent's EMR pool's live clusters, oldest generation first."""
        if self.cluster_id:
            cluster = (await self._api("DescribeCluster", ClusterId=self.cluster_id))["Cluster"]
            state = cluster.get("Status", {}).get("State", "")
            return [(self.cluster_id, state)] if state in LIVE_CLUSTER else []
        ours: dict[str, int] = dict(self.backend.record.clusters)
        live = await self._pages("ListClusters", "Clusters", ClusterStates=list(LIVE_CLUSTER))
        found = [(ours[c["Id"]], c["Id"], c["Status"]["State"]) for c in live if c["Id"] in ours]
        return [(cid, state) for _, cid, state in sorted(found)]

    async def _groups(self, cid: str) -> Records:
        return await self._pages("ListInstanceGroups", "InstanceGroups", ClusterId=cid)

    async def _working(self, cid: str) -> int:
        """The cluster's steps that may hold containers now (RUNNING, CANCEL_PENDING)."""
        return len(await self._pages("ListSteps", "Steps", ClusterId=cid,
                                     StepStates=list(WORKING_STEP)))

    async def _add(self, pool: Pool, cid: str, name: str) -> str:
        answer = await self._api("AddInstanceGroups", JobFlowId=cid, InstanceGroups=[{
            "Name": name, "InstanceRole": "TASK", "InstanceType": self.instance_type,
            "InstanceCount": 1, "Market": self.market}])
        ids = answer.get("InstanceGroupIds") or []
        if ids:
            return str(ids[0])
        # moto 5.2 answers without the ids; the name is the slot's own, so it finds the group
        found = [g["Id"] for g in await self._groups(cid) if g.get("Name") == name]
        if not found:
            raise ProviderError(f"pool {pool.name}: EMR answered AddInstanceGroups with no "
                                f"id and lists no group {name}")
        return str(found[0])

    @property
    def backend(self) -> Any:
        if self._backend is None:
            raise ProviderError("the emr provider runs only in an agent of the emr backend")
        return self._backend

    async def _api(self, action: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return await self.backend.api.call(action, **kwargs)  # type: ignore[no-any-return]
        except BackendUnavailable as exc:  # throttled, refused, unreachable: asked again
            raise ProviderError(str(exc)) from exc

    async def _pages(self, action: str, key: str, **kwargs: Any) -> Records:
        try:
            return await self.backend.api.pages(action, key, **kwargs)  # type: ignore[no-any-return]
        except BackendUnavailable as exc:
            raise ProviderError(str(exc)) from exc

    # -- the record ------------------------------------------------------------------------
    def _load(self) -> dict[str, dict[str, str]]:
        if self._path is None:
            return {}
        try:
            data = json.loads(self._path.read_text())
        except FileNotFoundError:
            return {}
        return {str(c): {str(n): str(k) for n, k in s.items()} for c, s in data.items()}

    def _save(self) -> None:
        """The record, replaced atomically and synced (a launch's call comes after it)."""
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp")
        with open(tmp, "w") as file:
            json.dump(self._record, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, self._path)
