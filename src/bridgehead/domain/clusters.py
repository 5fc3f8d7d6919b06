"""Clusters and the tokens that reach them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from bridgehead.domain.jobs import ACTIVE, JobSpec
from bridgehead.errors import InvalidSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class Cluster:
    """A compute cluster served by one or more agents. Online while a heartbeat is fresh."""

    name: str
    backend: str = "local"
    labels: dict[str, str] = field(default_factory=dict)
    last_heartbeat: float | None = None
    agent_id: str | None = None
    info: dict[str, object] = field(default_factory=dict)

    def online(self, now: float, ttl_s: float) -> bool:
        return self.last_heartbeat is not None and now - self.last_heartbeat <= ttl_s


@dataclass(frozen=True, slots=True, kw_only=True)
class Capacity:
    """The largest job a cluster can ever run, as its agent reports it (``info.capacity``).
    A job that asks for more is refused at submit, as sbatch refuses an impossible request;
    what a backend does not know (``None``) is not checked."""

    cores: int | None = None
    """Cores one job may have (the local backend's slots)."""
    nodes: int | None = None
    source: str = "its agent"
    """What the figures are, for the error: ``"2 slots"``."""

    def to_info(self) -> dict[str, object]:
        return {"cores": self.cores, "nodes": self.nodes, "source": self.source}

    @classmethod
    def from_info(cls, info: Mapping[str, object]) -> Capacity | None:
        """The capacity in a heartbeat's info, if it has a well-formed one."""
        raw = info.get("capacity")
        if not isinstance(raw, Mapping):
            return None
        cores, nodes = raw.get("cores"), raw.get("nodes")
        return cls(cores=cores if isinstance(cores, int) else None,
                   nodes=nodes if isinstance(nodes, int) else None,
                   source=str(raw.get("source") or "its agent"))

    def refuse_unfit(self, spec: JobSpec) -> None:
        """InvalidSpec naming both numbers when ``spec`` (after its caps) can never fit."""
        res = spec.resources
        for what, asked, most in (("cores", res.capped_cores, self.cores),
                                  ("nodes", res.capped_nodes, self.nodes)):
            if most is not None and asked > most:
                raise InvalidSpec(
                    f"the job asks for {asked} {what} but cluster {spec.cluster!r} can run at "
                    f"most {most} {what} per job ({self.source}): ask for fewer with --{what}")


def route(selector: Mapping[str, str], clusters: Sequence[tuple[Cluster, Mapping[str, int]]],
          *, now: float, ttl_s: float) -> str:
    """The cluster for a job routed by labels: among the clusters whose labels include all of
    ``selector``, an online one with the fewest unfinished jobs (ties: by name); if none is
    online, the least busy known one (the job waits for its agent). InvalidSpec if none."""
    matching = [(c, counts) for c, counts in clusters
                if all(c.labels.get(k) == v for k, v in selector.items())]
    if not matching:
        wanted = ", ".join(f"{k}={v}" for k, v in sorted(selector.items()))
        raise InvalidSpec(f"no cluster has the labels {wanted}")

    def load(item: tuple[Cluster, Mapping[str, int]]) -> tuple[bool, int, str]:
        cluster, counts = item
        busy = sum(n for state, n in counts.items() if state in ACTIVE)
        return (not cluster.online(now, ttl_s), busy, cluster.name)

    return min(matching, key=load)[0].name


class Role(StrEnum):
    ADMIN = "admin"
    """Everything, including tokens."""
    CLIENT = "client"
    """Submit, read and cancel jobs of its tenant (every tenant if none is set)."""
    AGENT = "agent"
    """Claim and report the jobs of one cluster only."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    """Who a bearer token speaks for."""

    token_id: str
    name: str
    role: Role
    cluster: str | None = None
    tenant: str | None = None

    def may_serve(self, cluster: str) -> bool:
        return self.role is Role.ADMIN or (self.role is Role.AGENT and self.cluster == cluster)

    def may_see_tenant(self, tenant: str) -> bool:
        if self.role is Role.ADMIN:
            return True
        return self.role is Role.CLIENT and self.tenant in (None, tenant)
