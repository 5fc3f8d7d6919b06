"""One agent's report of its providers' nodes, applied (pure): what the store writes and what
the heartbeat answers.

The agent lists every node of its cluster's pools right before each heartbeat (see
``docs/pools.md``). The report goes through :func:`~bridgehead.domain.pool_reconcile.reconcile`
(booted, busy, idle, lost, orphans, adopted), then its errors are applied (a launch refused for
a capacity shortage ends its nodes as failed boots: nothing was made, nothing is billed; the
pool waits ``backoff_s`` and asks again with one node, see :func:`refuse_pool`, until the
provider lists a node launched since),
and the answer's commands are derived from the nodes as they are after it:

- ``launch`` for every node requested or launching that the provider has not listed yet
  (a requested node becomes launching: billing may start); launch is idempotent by key, so
  sending it again until the node is listed never buys two;
- ``terminate`` for every node terminating that the provider still lists, every node of ours
  that ended (failed boot, lost, terminated) but is listed again, and every orphan past its
  grace. The provider's terminate is graceful: it refuses a node with a job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from bridgehead.domain.pool_reconcile import ProviderNode, reconcile
from bridgehead.domain.pools import NODE_TERMINAL, Node, NodeState, Pool, backoff_until


@dataclass(frozen=True, slots=True, kw_only=True)
class Standing:
    """A pool's standing between passes (stored)."""

    pool: str
    backoff_until: float = 0.0
    failures_in_row: int = 0
    quarantined: bool = False
    launches: tuple[float, ...] = ()
    """When its recent nodes were requested (the rate limit looks back a minute)."""
    orphans: Mapping[str, float] = field(default_factory=dict)
    """Provider ids of orphans, with when each was first seen."""
    short_since: float | None = None
    """When the provider began refusing this pool's launches for a capacity shortage, none
    taken since: the pool then buys one node at a time (a probe) until one is taken."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeError:
    pool: str
    keys: tuple[str, ...]
    op: str
    error: str
    shortage: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    op: str
    """``launch`` or ``terminate``."""
    pool: str
    key: str | None
    provider_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Applied:
    nodes: tuple[Node, ...]
    """Every node after the report: changed ones, adopted ones, and the others as they were."""
    standings: dict[str, Standing]
    lost: tuple[Node, ...] = ()
    """Nodes lost in this report: their jobs' attempts are lost to the infrastructure."""
    booted: tuple[Node, ...] = ()
    """Nodes ready for the first time in this report."""
    commands: tuple[Command, ...] = ()


def fail_pool(pool: Pool, s: Standing, now: float) -> Standing:
    """The standing after one more failed boot in a row: backoff, and quarantine after
    ``quarantine_after``."""
    failures = s.failures_in_row + 1
    return replace(s, failures_in_row=failures, backoff_until=backoff_until(pool, failures, now),
                   quarantined=s.quarantined or failures >= pool.quarantine_after)


def refuse_pool(pool: Pool, s: Standing, now: float) -> Standing:
    """The standing after a launch the provider refused for a capacity shortage: the pool
    buys nothing for ``backoff_s``, then asks again, one node at a time (``short_since``)
    until the provider takes one, as long as the shortage lasts. Unlike a failed boot it
    neither doubles the wait nor counts towards quarantine: nothing was made or billed, and
    a shortage says nothing about the pool's image or configuration (Karpenter likewise marks
    an offering out of capacity for a fixed 3 minutes, and retries for as long as it lasts).
    The probe keeps a long shortage to one refused node per ``backoff_s``, not the whole
    queue's. A run of failed boots is left as it was."""
    return replace(s, backoff_until=max(s.backoff_until, now + pool.backoff_s),
                   short_since=s.short_since if s.short_since is not None else now)


def apply_report(pools: Mapping[str, Pool], nodes: Sequence[Node], ended: Sequence[Node],
                 listed: Sequence[ProviderNode], errors: Sequence[NodeError],
                 standings: Mapping[str, Standing], now: float, *,
                 orphan_grace_s: float) -> Applied:
    """``nodes``: the cluster's live nodes; ``ended``: its recently ended ones (one the
    provider lists again is told to terminate, never taken for an orphan)."""
    listed = [p for p in listed if p.pool in pools]
    seen = {pool: dict(s.orphans) for pool, s in standings.items()}
    orphans_seen = {pid: t for d in seen.values() for pid, t in d.items()}
    r = reconcile([*nodes, *ended], listed, now, orphans_seen=orphans_seen,
                  orphan_grace_s=orphan_grace_s)
    out = {n.id: n for n in (*r.nodes, *r.adopted)}
    stand = {name: standings.get(name, Standing(pool=name)) for name in pools}
    coming = {n.id for n in nodes if n.state in (NodeState.LAUNCHING, NodeState.BOOTING)}
    booted = tuple(n for n in r.nodes if n.id in coming and n.state in (
        NodeState.IDLE, NodeState.BUSY))
    for n in booted:
        stand[n.pool] = replace(stand[n.pool], failures_in_row=0)
    taken = {p.key for p in listed if p.key is not None}
    for n in nodes:  # the provider took a launch asked for since the shortage began
        since = stand[n.pool].short_since if n.pool in stand else None
        if since is not None and n.id in taken and (
                n.launched_at is not None and n.launched_at > since):
            stand[n.pool] = replace(stand[n.pool], short_since=None)
    for e in errors:
        if e.op != "launch" or not e.shortage or e.pool not in pools:
            continue
        refusals = 0
        for key in e.keys:
            refused = out.get(key)
            if refused is not None and refused.state is NodeState.LAUNCHING and (
                    refused.provider_id is None):
                out[key] = refused.to(NodeState.FAILED_BOOT, now)
                refusals += 1
        if refusals:
            stand[e.pool] = refuse_pool(pools[e.pool], stand[e.pool], now)
    pool_of = {p.provider_id: p.pool for p in listed}
    for name in stand:
        stand[name] = replace(stand[name], orphans={
            pid: t for pid, t in r.orphans_seen.items()
            if pool_of.get(pid) == name and pid not in r.terminate})
    commands = _commands(out, listed, r.terminate)
    for c in commands:
        asked = out.get(c.key or "")
        if c.op == "launch" and asked is not None and asked.state is NodeState.REQUESTED:
            out[asked.id] = asked.to(NodeState.LAUNCHING, now)
    return Applied(nodes=tuple(out.values()), standings=stand, lost=r.lost, booted=booted,
                   commands=commands)


def _commands(nodes: Mapping[str, Node], listed: Sequence[ProviderNode],
              orphans: Sequence[str]) -> tuple[Command, ...]:
    keys = {p.key for p in listed if p.key is not None}
    pids = {p.provider_id: p for p in listed}
    out: list[Command] = []
    for n in sorted(nodes.values(), key=lambda n: n.id):
        if n.state in (NodeState.REQUESTED, NodeState.LAUNCHING) and n.id not in keys:
            out.append(Command(op="launch", pool=n.pool, key=n.id))
        elif (n.state is NodeState.TERMINATING or n.state in NODE_TERMINAL) and (
                n.provider_id in pids or n.id in keys):
            p = pids[n.provider_id] if n.provider_id in pids else next(
                p for p in listed if p.key == n.id)
            out.append(Command(op="terminate", pool=n.pool, key=n.id,
                               provider_id=p.provider_id))
    for pid in orphans:
        p = pids[pid]
        out.append(Command(op="terminate", pool=p.pool, key=p.key, provider_id=pid))
    return tuple(out)
