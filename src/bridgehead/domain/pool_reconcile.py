"""The reconciler: what the provider has against what the scaler knows (slurm-gcp does the
same every minute; its known bugs are orphan races and nodes left down, slurm-gcp #54).

- A provider node carrying one of our node ids as its key is ours: its provider id is
  recorded, and a launching node is booting.
- A provider node nobody asked for (or whose record was lost) is an **orphan**: it is
  terminated once it has been seen for ``orphan_grace_s`` (a launch whose record is still
  being written gets that long to appear), so none outlives the grace plus two passes.
- A node of ours that the provider no longer has, after it had it, is **lost**: its jobs'
  attempts are lost to the infrastructure (each gets one new attempt, see
  :func:`bridgehead.domain.jobs.requeue_lost`). One we asked to terminate is terminated.

When the provider says more (the agents' reports do; the simulation does not):

- ``ready``: a booting node that is ready is idle; ``jobs``: a ready node with jobs is busy,
  one without is idle, and a cordoned node the scheduler put a job on is taken back (idle,
  then busy): a node with a job is never released;
- ``interrupted`` (a spot notice): an idle node is cordoned, so nothing new goes there;
- ``adopted``: a node the scheduler started for its own work (Slurm powering up a CLOUD
  node) is tracked as ours from now on (billed, released like the others), never an orphan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from bridgehead.domain.pools import Node, NodeState

_HELD = frozenset({NodeState.BOOTING, NodeState.IDLE, NodeState.BUSY, NodeState.CORDONED})


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderNode:
    """One node as the provider lists it: its own id and the key Bridgehead launched it with
    (None: not launched by Bridgehead, or the key was lost)."""

    provider_id: str
    pool: str
    key: str | None = None
    ready: bool | None = None
    """Ready for work (None: the provider does not say; the caller tracks boots)."""
    jobs: int | None = None
    """Jobs on it now (None: the provider does not say)."""
    job_ids: frozenset[str] = frozenset()
    """The Bridgehead jobs on it, when the agent can tell (a lost node's attempts)."""
    interrupted: bool = False
    adopted: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Reconciled:
    nodes: tuple[Node, ...]
    """Our nodes after this pass (booting, lost or terminated where the provider says so)."""
    lost: tuple[Node, ...] = ()
    """Nodes that became lost in this pass: their jobs' attempts are lost."""
    terminate: tuple[str, ...] = ()
    """Provider ids of orphans past their grace: to terminate."""
    orphans_seen: Mapping[str, float] = field(default_factory=dict)
    """Every orphan the provider still has, with when it was first seen (kept between
    passes)."""
    adopted: tuple[Node, ...] = ()
    """Nodes the scheduler started by itself, new to us: tracked from now on."""


def reconcile(nodes: Sequence[Node], listed: Sequence[ProviderNode], now: float, *,
              orphans_seen: Mapping[str, float], orphan_grace_s: float) -> Reconciled:
    by_key = {p.key: p for p in listed if p.key is not None}
    by_pid = {p.provider_id: p for p in listed}
    ours = {n.id for n in nodes}
    out: list[Node] = []
    lost: list[Node] = []
    for n in nodes:
        seen = by_key.get(n.id)
        if seen is None and n.provider_id is not None:
            seen = by_pid.get(n.provider_id)
        if seen is not None and n.state is NodeState.LAUNCHING:
            n = n.to(NodeState.BOOTING, now, provider_id=seen.provider_id)
        elif seen is not None and n.provider_id is None:
            n = replace(n, provider_id=seen.provider_id)
        gone = seen is None and (n.provider_id is None or n.provider_id not in by_pid)
        if gone and n.state in _HELD:
            n = n.to(NodeState.LOST, now)
            lost.append(n)
        elif gone and n.state is NodeState.TERMINATING:
            n = n.to(NodeState.TERMINATED, now)
        elif seen is not None:
            n = _follow(n, seen, now)
        out.append(n)
    known = {n.provider_id for n in out if n.provider_id is not None}
    adopted = tuple(_adopt(p, now) for p in listed
                    if p.adopted and p.provider_id not in known and p.key not in ours)
    known |= {p.provider_id for p in listed if p.adopted}
    orphans = {p.provider_id: orphans_seen.get(p.provider_id, now) for p in listed
               if p.provider_id not in known and (p.key is None or p.key not in ours)}
    terminate = tuple(sorted(pid for pid, first in orphans.items()
                             if now - first >= orphan_grace_s))
    return Reconciled(nodes=tuple(out), lost=tuple(lost), terminate=terminate,
                      orphans_seen=orphans, adopted=adopted)


def adopted_id(pool: str, provider_id: str) -> str:
    """The node id Bridgehead gives a node the scheduler started by itself."""
    return f"{pool}-adopted-{provider_id}"


def _adopt(p: ProviderNode, now: float) -> Node:
    state = NodeState.BOOTING if not p.ready else (
        NodeState.BUSY if p.jobs else NodeState.IDLE)
    return Node(id=adopted_id(p.pool, p.provider_id), pool=p.pool, state=state, since=now,
                launched_at=now, ready_at=now if p.ready else None, provider_id=p.provider_id,
                jobs=p.job_ids)


def _follow(n: Node, p: ProviderNode, now: float) -> Node:
    """``n`` as the provider's report says it is now (readiness, jobs, a spot notice)."""
    if n.state is NodeState.BOOTING and p.ready:
        n = n.to(NodeState.IDLE, now)
    if p.jobs is None and not p.job_ids:
        return n
    has_jobs = bool(p.jobs or p.job_ids)
    n = replace(n, jobs=p.job_ids)
    if has_jobs and n.state is NodeState.CORDONED:
        n = n.to(NodeState.IDLE, now)  # the scheduler placed work on it: taken back
    if has_jobs and n.state is NodeState.IDLE:
        n = n.to(NodeState.BUSY, now)
    elif not has_jobs and n.state is NodeState.BUSY:
        n = n.to(NodeState.IDLE, now)
    if p.interrupted and not has_jobs and n.state is NodeState.IDLE:
        n = n.to(NodeState.CORDONED, now)
    return n
