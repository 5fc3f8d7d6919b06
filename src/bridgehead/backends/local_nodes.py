"""The local backend's nodes: groups of core slots that the ``local`` pool provider adds and
removes (:mod:`bridgehead.pools.providers.local`), so the embedded default scales like a
cluster does. Without nodes the backend keeps its fixed ``slots``.

A job is placed on one node when it starts: the **busiest** ready node with room for its cores
(the one with the most cores in use; the older one on a tie), so work gathers on few nodes and
whole nodes empty out for the scaler to release. A node with a job on it is never removed
(:class:`NodeInUse`). Placement, launch and removal hold one lock, so a node cannot be removed
between the check that it is empty and the start of a job on it.

The nodes live in this process only: an agent that restarts has none (its running jobs go on
under their supervisors, outside any node), and the server's reconciler sees the old nodes
lost. That is what a process-local pool can promise.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field


class NodeInUse(Exception):
    """A node with jobs on it cannot be removed."""

    def __init__(self, jobs: Mapping[str, list[str]]) -> None:
        super().__init__("; ".join(f"node {n} runs {', '.join(sorted(j))}"
                                   for n, j in sorted(jobs.items())))
        self.jobs = dict(jobs)


@dataclass(slots=True, kw_only=True)
class LocalNode:
    """One node: ``cpus`` slots, usable from ``ready_at`` (``time.monotonic()``)."""

    provider_id: str
    pool: str
    key: str
    cpus: int
    ready_at: float
    seq: int
    jobs: dict[str, int] = field(default_factory=dict)
    """The cores of each job placed on it."""

    @property
    def used(self) -> int:
        return sum(self.jobs.values())

    def ready(self, now: float) -> bool:
        return now >= self.ready_at


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeView:
    """A node as listed: what the provider reports."""

    provider_id: str
    pool: str
    key: str
    ready: bool
    jobs: int


class FixedSlots:
    """One scheduling pass over the backend's fixed slots (no local pool): the same questions
    as :class:`Placement`."""

    def __init__(self, free: int) -> None:
        self.free = free

    def fits(self, cores: int) -> bool:
        return cores <= self.free

    def take(self, job_id: str, cores: int) -> str:
        self.free -= cores
        return job_id


class Placement:
    """One scheduling pass over the ready nodes (inside :meth:`LocalNodes.placing`)."""

    def __init__(self, nodes: list[LocalNode]) -> None:
        self._nodes = nodes

    @property
    def free(self) -> int:
        return sum(n.cpus - n.used for n in self._nodes)

    def _best(self, cores: int) -> LocalNode | None:
        fits = [n for n in self._nodes if n.cpus - n.used >= cores]
        return min(fits, key=lambda n: (-n.used, n.seq), default=None)

    def fits(self, cores: int) -> bool:
        return self._best(cores) is not None

    def take(self, job_id: str, cores: int) -> str:
        """Place ``job_id`` on the busiest node with room; that node's provider id."""
        node = self._best(cores)
        if node is None:
            raise ValueError(f"no ready node has {cores} free cores")
        node.jobs[job_id] = cores
        return node.provider_id


class LocalNodes:
    """The nodes of the local backend (thread-safe: the backend schedules in a thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nodes: dict[str, LocalNode] = {}
        self._by_key: dict[str, str] = {}
        self._shapes: dict[str, int] = {}
        self._run = secrets.token_hex(3)
        """In every provider id: ids of an earlier agent process are never reused."""
        self._seq = 0

    def add_pool(self, pool: str, cpus: int) -> None:
        """Register a pool's node size (what one job may ask for at most)."""
        with self._lock:
            self._shapes[pool] = cpus

    @property
    def largest(self) -> int:
        """The most cores one node has (0 before any pool is registered)."""
        with self._lock:
            return max(self._shapes.values(), default=0)

    def launch(self, pool: str, key: str, cpus: int, boot_s: float) -> str:
        """The node of ``key``, added if new (idempotent by key): its provider id."""
        with self._lock:
            if key in self._by_key:
                return self._by_key[key]
            self._seq += 1
            pid = f"local-{self._run}-{self._seq}"
            self._nodes[pid] = LocalNode(provider_id=pid, pool=pool, key=key, cpus=cpus,
                                         ready_at=time.monotonic() + boot_s, seq=self._seq)
            self._by_key[key] = pid
            return pid

    def remove(self, provider_ids: list[str]) -> None:
        """Remove the empty ones of these nodes (unknown ids are gone already); NodeInUse
        naming the others, which stay."""
        with self._lock:
            busy = {pid: list(n.jobs) for pid in provider_ids
                    if (n := self._nodes.get(pid)) is not None and n.jobs}
            for pid in provider_ids:
                node = self._nodes.get(pid)
                if node is not None and pid not in busy:
                    del self._nodes[pid]
                    self._by_key.pop(node.key, None)
        if busy:
            raise NodeInUse(busy)

    def listing(self, pools: set[str]) -> list[NodeView]:
        now = time.monotonic()
        with self._lock:
            return [NodeView(provider_id=n.provider_id, pool=n.pool, key=n.key,
                             ready=n.ready(now), jobs=len(n.jobs))
                    for n in sorted(self._nodes.values(), key=lambda n: n.seq)
                    if n.pool in pools]

    @contextmanager
    def placing(self, running: Mapping[str, int]) -> Iterator[Placement]:
        """A scheduling pass: jobs no longer in ``running`` (job id -> cores) leave their
        nodes; new ones are placed with :meth:`Placement.take` on ready nodes."""
        with self._lock:
            for node in self._nodes.values():
                for job_id in [j for j in node.jobs if j not in running]:
                    del node.jobs[job_id]
            now = time.monotonic()
            yield Placement([n for n in self._nodes.values() if n.ready(now)])
