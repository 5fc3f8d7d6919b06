"""``slurm_powersave``: a pool of Slurm CLOUD nodes that Slurm's power saving powers up and
down (the site's ``ResumeProgram``/``SuspendProgram``, e.g. Bridgehead's own,
:mod:`bridgehead.pools.slurm_programs`). The provider runs in the cluster's agent and speaks to
slurmctld with ``scontrol`` only.

Options: ``partition`` (required: the partition whose CLOUD nodes are the pool), ``nodes``
(a hostlist: only these nodes of the partition; default all) and ``down_cooloff_s`` (how long
a node that failed to boot stays DOWN before it is offered again; default 600).

- **launch** powers up powered-down nodes of the partition, one per key (``scontrol update
  NodeName=<n> Comment=<key>`` then ``State=POWER_UP``). The key stays on the node (its
  ``Comment``) until the node is powered down (Bridgehead's SuspendProgram clears it): a key
  already on a node answers that node, so launch is idempotent by key. Nodes that Slurm marked
  DOWN (a failed boot) are never picked; the lowest ``Weight`` first, so the nodes Slurm fills
  first are the ones that are up.
- **terminate** refuses a node with a job (:class:`NodeBusy`) and otherwise asks
  ``State=POWER_DOWN_ASAP``: Slurm drains the node and powers it down once it is empty. If a
  job slipped onto the node between our look and the request, that job still runs to its end
  (Slurm's guarantee for ASAP): POWER_DOWN_FORCE is never used on a node with a job. A node
  left DOWN by a failed boot (powered down, our key on it) only loses its key: it stays DOWN,
  so neither Slurm nor the next launch picks it again at once (the job would be lost to it a
  second time); ``list`` offers it again (``State=RESUME``) once it has been down for
  ``down_cooloff_s`` (the ResumeFailProgram's reason, ``bridgehead: ...``, dates it). So is
  an evicted node once terminated (Slurm leaves it DOWN, reason ``POWER_DOWN_ASAP``).
- **list** reads ``scontrol show node --oneline``: every node of the pool that is powered up,
  powering up, or draining with a job, and every node with our key that a failed boot left
  DOWN (ready false: the scaler counts the failed boot and terminates it). ``ready``: powered
  up, responding, not DOWN/DRAIN/FAIL. ``jobs``: 1 while Slurm has CPUs of the node
  allocated (a job running, or waiting for the node to boot), else 0. A powered-up node with
  no key is one Slurm powered up itself for its own pending job: ``adopted``.

**Sharing the work with Slurm's own power saving.** Slurm powers nodes UP by itself for jobs it
has pending (the agent submits queued jobs at once, and Slurm knows which node its scheduler
chose): those nodes are adopted, tracked and billed, never orphans. Bridgehead powers nodes up
ahead of work it knows is coming (warm_idle, min_nodes, demand not yet submitted). Scale-down
is Bridgehead's: set the pool's ``idle_grace_s`` well BELOW the partition's ``SuspendTime``,
which then only backstops nodes Bridgehead lost track of (an agent that is down). Neither ever
powers down a node with a job: Slurm suspends only idle nodes, and terminate uses ASAP.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from bridgehead.backends import slurm
from bridgehead.backends.base import Backend
from bridgehead.config import SlurmSettings
from bridgehead.domain.pools import InvalidPool, Pool
from bridgehead.errors import BackendUnavailable
from bridgehead.pools.providers.base import CapacityShortage, Listed, NodeBusy, ProviderError
from bridgehead.pools.providers.options import Option, read_options

_PARTITION = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_HOSTLIST = re.compile(r"[A-Za-z0-9_.-]+(\[[0-9,-]+\][A-Za-z0-9_.-]*)*"
                       r"(,[A-Za-z0-9_.-]+(\[[0-9,-]+\][A-Za-z0-9_.-]*)*)*")
_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
"""A key Bridgehead puts in a node's Comment (node ids): no spaces, no ``=``."""
_FIELD = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z_]*)=")
_REASON_AT = re.compile(r"\[[^@\]]*@([0-9T:-]+)\]$")
"""The time in a node's Reason: ``... [root@2026-12-05T10:54:52]`` (slurmctld's local time)."""
OUR_REASONS = ("bridgehead:", "POWER_DOWN_ASAP", "POWER_DOWN_FORCE")
"""The reasons of the DOWN nodes offered again after ``down_cooloff_s``: the
ResumeFailProgram's (a failed boot), and Slurm's own after a power-down asked of a node that
was down already (an evicted node, terminated): never an admin's DOWN."""
_READY_BASE = frozenset({"IDLE", "MIXED", "ALLOCATED", "COMPLETING"})
_NOT_READY = frozenset({"POWERED_DOWN", "POWERING_DOWN", "POWER_UP", "POWERING_UP",
                        "NOT_RESPONDING", "DRAIN", "FAIL", "REBOOT_REQUESTED",
                        "REBOOT_ISSUED", "INVALID_REG"})
DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class SlurmNode:
    """One node as ``scontrol show node --oneline`` shows it."""

    name: str
    base: str
    flags: frozenset[str]
    cpu_alloc: int
    comment: str | None
    partitions: frozenset[str]
    weight: int
    reason: str = ""

    def down_since(self) -> float | None:
        """When it went down for one of :data:`OUR_REASONS` (None: another, or no time)."""
        found = _REASON_AT.search(self.reason)
        if not self.reason.startswith(OUR_REASONS) or not found:
            return None
        try:
            return time.mktime(time.strptime(found.group(1), "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            return None

    @property
    def powered_down(self) -> bool:
        return "POWERED_DOWN" in self.flags and "POWER_UP" not in self.flags

    @property
    def down(self) -> bool:
        return self.base in ("DOWN", "FUTURE") or "FAIL" in self.flags

    @property
    def ready(self) -> bool:
        return self.base in _READY_BASE and not self.flags & _NOT_READY

    @property
    def jobs(self) -> int:
        return 1 if self.cpu_alloc > 0 or self.base in ("ALLOCATED", "MIXED") else 0


Nodes = list[SlurmNode]
"""(An alias: inside the provider class, ``list`` is the interface's method.)"""


def parse_nodes(text: str) -> Nodes:
    """``scontrol show node --oneline``'s lines as nodes (a value may hold spaces: OS=...)."""
    nodes = []
    for line in text.splitlines():
        marks = list(_FIELD.finditer(line))
        fields = {m.group(1): line[m.end():marks[i + 1].start() if i + 1 < len(marks) else None]
                  .strip() for i, m in enumerate(marks)}
        if "NodeName" not in fields:
            continue
        base, *flags = fields.get("State", "UNKNOWN").split("+")
        comment = fields.get("Comment", "")
        nodes.append(SlurmNode(
            name=fields["NodeName"], base=base.rstrip("*~#%!$@^-"), flags=frozenset(flags),
            cpu_alloc=int(fields.get("CPUAlloc", "0") or 0),
            comment=comment if comment and comment != "(null)" else None,
            partitions=frozenset(fields.get("Partitions", "").split(",")),
            weight=int(fields.get("Weight", "1") or 1), reason=fields.get("Reason", "")))
    return nodes


class SlurmPowersaveProvider:
    name: ClassVar[str] = "slurm_powersave"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "partition": Option(kind=str, default=""),
        "nodes": Option(kind=str, default=""),
        "down_cooloff_s": Option(kind=float, default=600.0, low=0),
    }

    def __init__(self, pool: Pool, backend: Backend | None = None) -> None:
        options = read_options(pool, self.OPTIONS)
        self.partition = str(options["partition"])
        self.nodes = str(options["nodes"])
        self.down_cooloff_s = float(options["down_cooloff_s"])
        if not _PARTITION.fullmatch(self.partition):
            raise InvalidPool("must name the partition of the pool's CLOUD nodes "
                              "(letters, digits, _ . -)", ("options", "partition"))
        if self.nodes and not _HOSTLIST.fullmatch(self.nodes):
            raise InvalidPool("must be a Slurm hostlist (e.g. cn[1-8])", ("options", "nodes"))
        settings = getattr(backend, "settings", None)
        self._settings = settings if isinstance(settings, SlurmSettings) else None
        self._env = {"PATH": os.environ.get("PATH") or os.defpath}
        conf = self._settings.conf if self._settings else None
        if conf is not None:
            self._env["SLURM_CONF"] = str(conf)
        elif "SLURM_CONF" in os.environ:
            self._env["SLURM_CONF"] = os.environ["SLURM_CONF"]
        self._members: frozenset[str] | None = None
        self._lock = asyncio.Lock()

    # -- the interface ---------------------------------------------------------------------
    async def launch(self, pool: Pool, keys: Sequence[str]) -> dict[str, str]:
        for key in keys:
            if not _KEY.fullmatch(key):
                raise ProviderError(f"pool {pool.name}: key {key!r} cannot be a node Comment")
        async with self._lock:  # two launches must not pick the same powered-down node
            nodes = await self._nodes()
            mine = {n.comment: n for n in nodes if n.comment in keys
                    and not (n.powered_down and n.down)}  # a failed boot is not relaunched
            # a powered-down node's key is stale (its SuspendProgram did not clear it) unless
            # it is one of these keys: its POWER_UP failed, and is asked again below
            free = sorted((n for n in nodes if n.powered_down and not n.down
                           and n.comment not in keys),
                          key=lambda n: (n.comment is not None, n.weight, n.name))
            made = {}
            for key in keys:
                if key in mine and not mine[key].powered_down:
                    made[key] = mine[key].name
                    continue
                if key not in mine and not free:
                    break  # the partition is full: what was made is answered
                node = mine.get(key) or free.pop(0)
                await self._update(node.name, f"Comment={key}")
                await self._update(node.name, "State=POWER_UP")
                made[key] = node.name
        if keys and not made:
            raise CapacityShortage(f"pool {pool.name}: partition {self.partition} has no "
                                   "powered-down node left")
        return made  # those it could (the scaler asks again for the others)

    async def terminate(self, pool: Pool, provider_ids: Sequence[str]) -> None:
        async with self._lock:
            nodes = {n.name: n for n in await self._nodes()}
            busy = [name for name in provider_ids if name in nodes and nodes[name].jobs]
            if busy:
                raise NodeBusy(f"pool {pool.name}: {', '.join(busy)} still has a job")
            for name in provider_ids:
                node = nodes.get(name)
                if node is None or (node.powered_down and not node.down) \
                        or "POWERING_DOWN" in node.flags:
                    continue  # gone already, or going
                if node.powered_down:  # a failed boot: DOWN, never booted, no job
                    await self._update(name, "Comment=")  # stays DOWN: see down_cooloff_s
                else:
                    await self._update(name, "State=POWER_DOWN_ASAP")

    async def list(self, pools: Sequence[Pool]) -> list[Listed]:
        names = {p.name for p in pools}
        if not names:
            return []
        pool = next(iter(names))
        out = []
        nodes = await self._nodes()
        await self._offer_again(nodes)
        for node in nodes:
            failed_boot = node.powered_down and node.down and node.comment is not None
            going = "POWERING_DOWN" in node.flags and not node.jobs
            if (node.powered_down and not failed_boot) or going:
                continue
            out.append(Listed(provider_id=node.name, pool=pool, key=node.comment,
                              ready=node.ready, jobs=node.jobs,
                              adopted=node.comment is None))
        return out

    async def _offer_again(self, nodes: Nodes) -> None:
        """RESUME the nodes whose failed boot is ``down_cooloff_s`` old (keyless, ours)."""
        now = time.time()
        for node in nodes:
            since = node.down_since()
            if (node.powered_down and node.down and node.comment is None and since is not None
                    and now - since >= self.down_cooloff_s):
                await self._update(node.name, "State=RESUME")

    # -- scontrol --------------------------------------------------------------------------
    async def _nodes(self) -> Nodes:
        """The pool's nodes: the partition's, within ``nodes`` if given."""
        if self._members is None and self.nodes:
            self._members = frozenset((await self._scontrol("show", "hostnames",
                                                            self.nodes)).split())
        out = await self._scontrol("show", "node", "--oneline")
        return [n for n in parse_nodes(out) if self.partition in n.partitions
                and (self._members is None or n.name in self._members)]

    async def _update(self, node: str, *words: str) -> None:
        await self._scontrol("update", f"NodeName={node}", *words)

    async def _scontrol(self, *args: str) -> str:
        timeout = self._settings.command_timeout_s if self._settings else DEFAULT_TIMEOUT_S
        bin_dir = self._settings.bin_dir if self._settings else None
        try:
            code, out, err = await slurm.run_tool(["scontrol", *args], env=self._env,
                                                  timeout_s=timeout, bin_dir=bin_dir)
        except BackendUnavailable as exc:  # cannot run, or no answer: the scaler asks again
            raise ProviderError(f"scontrol {' '.join(args)}: {exc}") from exc
        if code != 0:
            message = err.decode(errors="replace").strip()[:500] or f"exit code {code}"
            raise ProviderError(f"scontrol {' '.join(args)}: {message}")
        return out.decode(errors="replace")
