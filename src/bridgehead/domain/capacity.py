"""A planner pass's capacity: every node as bins (free now, on its way, freeing before a boot,
cordoned, bought in this pass) that :mod:`bridgehead.domain.planner` packs jobs into, and
what the pass keeps beyond its placements (``min_nodes``, the ``warm_idle`` reserve) or
releases. Split from the planner so each module reads on its own: the planner orders and
packs, this says what there is and what is kept."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bridgehead.domain.pools import NODE_COMING, NodeState

if TYPE_CHECKING:
    from bridgehead.domain.planner import Demand, PoolState


@dataclass(slots=True)
class _Bin:
    """One node's capacity during a pass: free now, and what frees before a boot."""

    id: str
    pool: str
    tier: int
    cores: int
    memory_mb: int
    gpus: int
    load: int = 0
    """Cores held: the busiest first within a tier."""
    rank: float = 0.0
    """Within a tier and load: the lower first (a ready node: the one whose state changed
    last, so the nodes idle longest are the ones left to reach their idle grace)."""

    def fits(self, d: Demand) -> bool:
        return self.cores >= d.cores and self.memory_mb >= d.memory_mb and self.gpus >= d.gpus

    def take(self, d: Demand) -> None:
        self.cores -= d.cores
        self.memory_mb -= d.memory_mb
        self.gpus -= d.gpus
        self.load += d.cores


READY_TIER, COMING_TIER, SOON_TIER, CORDONED_TIER, NEW_TIER = range(5)
RATE_WINDOW_S = 60.0


def _failed_boots(states: Sequence[PoolState], now: float) -> set[str]:
    return {n.id for s in states for n in s.nodes
            if n.state in (NodeState.LAUNCHING, NodeState.BOOTING)
            and now - (n.launched_at if n.launched_at is not None else n.since)
            > s.pool.boot_timeout_s}


def _forgotten(states: Sequence[PoolState], now: float) -> set[str]:
    """Nodes requested longer than their pool's ``boot_timeout_s`` that no provider was asked
    for (no agent took the launch: none runs, or it never answered): without an end they
    would count against ``max_nodes`` for ever."""
    return {n.id for s in states for n in s.nodes
            if n.state is NodeState.REQUESTED and now - n.since > s.pool.boot_timeout_s}


def _bins(states: Sequence[PoolState], now: float, failed: set[str]) -> list[_Bin]:
    """Every node's capacity as bins: ready (what is free now), coming (unless slow: booting
    past ``slow_boot_factor`` x ``expected_boot_s``), freeing before a boot (what its jobs
    ending within ``expected_boot_s`` hold), cordoned."""
    out: list[_Bin] = []
    for s in states:
        shape, pool = s.pool.shape, s.pool.name
        soon_by = now + s.pool.expected_boot_s
        slow_by = s.pool.slow_boot_factor * s.pool.expected_boot_s
        held: dict[str, list[int]] = {}
        for r in s.running:
            h = held.get(r.node_id)
            if h is None:
                h = held[r.node_id] = [0, 0, 0, 0, 0, 0, 0]
            h[0] += r.cores
            h[1] += r.memory_mb
            h[2] += r.gpus
            if now <= r.ends_at <= soon_by:
                h[3] += r.cores
                h[4] += r.memory_mb
                h[5] += r.gpus
                h[6] += 1
        for n in sorted(s.nodes, key=lambda n: n.id):
            if n.id in failed:
                continue
            h = held.get(n.id)
            cores, memory, gpus = shape.cpus, shape.memory_mb, shape.gpus
            if h is not None:
                cores, memory, gpus = cores - h[0], memory - h[1], gpus - h[2]
            if n.state in (NodeState.IDLE, NodeState.BUSY):
                out.append(_Bin(n.id, pool, READY_TIER, cores, memory, gpus,
                                load=shape.cpus - cores, rank=-n.since))
                if h is not None and h[6]:
                    out.append(_Bin(n.id, pool, SOON_TIER, h[3], h[4], h[5]))
            elif n.state in NODE_COMING and now - (
                    n.launched_at if n.launched_at is not None else n.since) <= slow_by:
                out.append(_Bin(n.id, pool, COMING_TIER, cores, memory, gpus))
            elif n.state is NodeState.CORDONED and h is None:
                out.append(_Bin(n.id, pool, CORDONED_TIER, cores, memory, gpus))
    return out


def _live(s: PoolState) -> int:
    """Nodes that count against ``max_nodes``: every one not ended."""
    return sum(1 for n in s.nodes if n.state not in
               (NodeState.TERMINATED, NodeState.FAILED_BOOT, NodeState.LOST, NodeState.ORPHAN))


def _probe_room(s: PoolState) -> int:
    """How many nodes a probing pool may ask for now: one, unless one is still asked for
    (requested or launching: the provider has not answered)."""
    return 1 - sum(1 for n in s.nodes if n.state in (NodeState.REQUESTED, NodeState.LAUNCHING))


def _recent(s: PoolState, now: float) -> int:
    return sum(1 for t in s.launches if now - t < RATE_WINDOW_S)


def _spares(states: Sequence[PoolState], bins: Sequence[_Bin]) -> dict[str, int]:
    """Per pool, the spare nodes its ``boot_spares`` asks for: that share of the nodes placed
    jobs wait on to boot (on their way, or bought in this pass), rounded up."""
    awaited: dict[str, int] = {}
    cpus = {s.pool.name: s.pool.shape.cpus for s in states}
    for b in bins:
        if b.tier in (COMING_TIER, NEW_TIER) and not (b.load == 0 and b.cores == cpus[b.pool]):
            awaited[b.pool] = awaited.get(b.pool, 0) + 1
    return {s.pool.name: math.ceil(s.pool.boot_spares * awaited.get(s.pool.name, 0))
            for s in states}


def _empty(states: Sequence[PoolState], bins: Sequence[_Bin]) -> dict[str, int]:
    """Per pool, its empty nodes after the pass's placements: ready, on their way or bought
    now, with nothing placed on them (the reserve ``warm_idle`` and boot spares count)."""
    cpus = {s.pool.name: s.pool.shape.cpus for s in states}
    empty: dict[str, int] = {}
    for b in bins:
        if b.tier in (READY_TIER, COMING_TIER, NEW_TIER) and b.load == 0 and (
                b.cores == cpus[b.pool]):
            empty[b.pool] = empty.get(b.pool, 0) + 1
    return empty


def _floor_and_reserve(states: Sequence[PoolState], bins: Sequence[_Bin],
                       bought: dict[str, int], now: float, live: Mapping[str, int],
                       spares: Mapping[str, int]) -> dict[str, int]:
    """``bought``, plus what keeps each elastic pool at ``min_nodes`` and its reserve of empty
    nodes, ``warm_idle`` plus its ``spares`` (within max_nodes, the rate limit and backoff)."""
    launch = dict(bought)
    empty = _empty(states, bins)
    for s in states:
        pool = s.pool
        if not pool.elastic or s.quarantined or now < s.backoff_until:
            continue
        have = live[pool.name] + launch.get(pool.name, 0)
        reserve = pool.warm_idle + spares.get(pool.name, 0)
        want = max(pool.min_nodes - have, reserve - empty.get(pool.name, 0), 0)
        room = min(pool.max_nodes - have,
                   pool.launches_per_minute - _recent(s, now) - launch.get(pool.name, 0))
        if s.probing:  # one node at a time after a capacity shortage
            room = min(room, _probe_room(s) - launch.get(pool.name, 0))
        launch[pool.name] = launch.get(pool.name, 0) + max(min(want, room), 0)
    return launch


def _holding(s: PoolState, starved: Collection[str], now: float) -> bool:
    """Whether pool ``s`` keeps the nodes it has: it is backing off (not quarantined) while
    jobs of its cluster wait, so a node given back could not be bought again."""
    return s.pool.cluster in starved and now < s.backoff_until and not s.quarantined


def _cancel(states: Sequence[PoolState], bins: Sequence[_Bin],
            placements: Mapping[str, tuple[str, ...]], now: float, live: Mapping[str, int],
            spares: Mapping[str, int], starved: Collection[str] = ()) -> tuple[str, ...]:
    """Nodes still booting that nothing is placed on, launched longer ago than their pool's
    ``idle_grace_s`` and ``billing_minimum_s`` (a node nothing wants is let go after its
    grace, booting or not, never before its minimum is spent), beyond what the pool keeps
    (``min_nodes``, and ``warm_idle`` plus its boot spares in empty nodes), the longest
    booting first: terminated before they are ready. They were bought for jobs that then
    started on capacity that freed first; booting on to sit out the idle grace would only
    add to the bill. A slow boot (no longer counted on) is not one: it keeps booting against
    the hedge bought for its jobs, the first ready wins. Not in a pool backing off while jobs
    wait (as :func:`_release`)."""
    used = {node for nodes in placements.values() for node in nodes}
    coming = {b.id for b in bins if b.tier == COMING_TIER}
    empty = _empty(states, bins)
    out: list[str] = []
    for s in states:
        pool = s.pool
        if not pool.elastic or _holding(s, starved, now):
            continue
        late = sorted((n for n in s.nodes if n.state is NodeState.BOOTING
                       and n.id in coming and n.id not in used and not n.jobs
                       and now - (n.launched_at if n.launched_at is not None else n.since)
                       >= max(pool.billing_minimum_s, pool.idle_grace_s)),
                      key=lambda n: (n.launched_at if n.launched_at is not None else n.since,
                                     n.id))
        if not late:
            continue
        excess = min(empty.get(pool.name, 0) - pool.warm_idle - spares.get(pool.name, 0),
                     live[pool.name] - pool.min_nodes)
        out += [n.id for n in late[:max(excess, 0)]]
    return tuple(sorted(out))


def _release(states: Sequence[PoolState], bins: Sequence[_Bin],
             placements: Mapping[str, tuple[str, ...]], now: float,
             live: Mapping[str, int] | None = None, starved: Collection[str] = ()
             ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(nodes to cordon, nodes to terminate): empty nodes past their idle grace, beyond the
    pool's floor and reserve, except in a pool backing off while jobs of its cluster
    (``starved``) wait; cordoned ones still empty and given nothing. (Boot spares need no
    keeping here: a pass that waits on a boot has no idle node its jobs fit, as first fit
    takes ready nodes before those on their way.)"""
    used = {node for nodes in placements.values() for node in nodes}
    held: set[str] = {r.node_id for s in states for r in s.running}
    cordon: list[str] = []
    terminate: list[str] = []
    for s in states:
        pool = s.pool
        if not pool.elastic:
            continue
        empty = [n for n in s.nodes if n.id not in used and n.id not in held and not n.jobs]
        terminate += [n.id for n in empty if n.state is NodeState.CORDONED]
        idle = [n for n in empty if n.state is NodeState.IDLE]
        if _holding(s, starved, now):
            continue
        have = live[pool.name] if live is not None else _live(s)
        keep = max(pool.min_nodes - (have - len(idle)), pool.warm_idle, 0)
        expired = sorted((n for n in idle if now - n.since >= pool.idle_grace_s),
                         key=lambda n: (n.since, n.id))
        spare = len(idle) - keep
        cordon += [n.id for n in expired[:max(spare, 0)]]
    return tuple(sorted(cordon)), tuple(sorted(terminate))
