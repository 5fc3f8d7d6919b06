"""``sim``: a simulated cloud on a fake clock, for property tests and the autoscaling
benchmark. It behaves as clouds do where it hurts: boots take a lognormal time (median 40 s,
p99 about 180 s by default), some never finish, nodes are evicted (spot) at a rate per
node-hour, capacity runs short for a while, and a launch can reach the cloud while its
caller never records it (a crash between the call and the record): an orphan.

The provider interface every provider follows: ``launch(pool, key, now)`` (idempotent by
``key``: a second launch with a key the cloud has returns the same node), ``terminate``,
``nodes`` (every node the cloud has, with its key), ``ready`` (booted).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from bridgehead.domain.pool_reconcile import ProviderNode


@dataclass(frozen=True, slots=True, kw_only=True)
class CloudModel:
    boot_median_s: float = 40.0
    boot_sigma: float = 0.65
    """lognormal sigma: exp(2.33 * 0.65) = 4.5 x the median at p99 (180 s)."""
    failed_boot_p: float = 0.02
    evictions_per_node_hour: float = 0.05
    lost_record_p: float = 0.0
    """A launch that reaches the cloud while its caller never records it (an orphan)."""
    shortage_p: float = 0.0
    """Each launch fails outright for capacity with this probability (a shortage)."""


@dataclass(slots=True)
class _VM:
    provider_id: str
    pool: str
    key: str | None
    ready_at: float
    """inf: it never boots."""
    created: float


class CapacityShortage(Exception):
    """The cloud has no capacity of this kind now (the launch made nothing)."""


class SimCloud:
    def __init__(self, model: CloudModel, seed: int) -> None:
        self.model = model
        self.rng = random.Random(seed)
        self.vms: dict[str, _VM] = {}
        self._by_key: dict[str, str] = {}
        self._next = 0
        self.launched = 0
        self.evicted = 0

    def launch(self, pool: str, key: str, now: float) -> str | None:
        """The node's provider id; None when the record of the launch is lost (the node
        exists, as an orphan). CapacityShortage when nothing was made."""
        if key in self._by_key:
            return self._by_key[key]
        if self.rng.random() < self.model.shortage_p:
            raise CapacityShortage(pool)
        self._next += 1
        self.launched += 1
        pid = f"vm-{self._next}"
        boot = self.model.boot_median_s * math.exp(self.rng.gauss(0, self.model.boot_sigma))
        never = self.rng.random() < self.model.failed_boot_p
        self.vms[pid] = _VM(pid, pool, key, math.inf if never else now + boot, now)
        self._by_key[key] = pid
        return None if self.rng.random() < self.model.lost_record_p else pid

    def terminate(self, provider_id: str) -> None:
        self.vms.pop(provider_id, None)

    def nodes(self) -> list[ProviderNode]:
        """In launch order (``vms`` keeps it: ids only grow, and a deleted one never comes
        back), which sorting by id number gave at a cost per node per step."""
        return [ProviderNode(provider_id=v.provider_id, pool=v.pool, key=v.key)
                for v in self.vms.values()]

    def created(self, provider_id: str) -> float | None:
        vm = self.vms.get(provider_id)
        return vm.created if vm is not None else None

    def ready(self, provider_id: str, now: float) -> bool:
        vm = self.vms.get(provider_id)
        return vm is not None and vm.ready_at <= now

    def evict(self, now: float, dt: float) -> list[str]:
        """Nodes the cloud takes back during the last ``dt`` seconds (booted ones only)."""
        p = 1.0 - math.exp(-self.model.evictions_per_node_hour * dt / 3600.0)
        gone = [pid for pid, v in sorted(self.vms.items()) if v.ready_at <= now
                and self.rng.random() < p]
        for pid in gone:
            del self.vms[pid]
        self.evicted += len(gone)
        return gone
