"""Clusters and the tokens that reach them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from bridgehead.domain import sbatch
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


OPTIONAL_REQUESTS = ("resources.memory_mb", "resources.gpus", "resources.walltime_s",
                     "resources.partition", "resources.account", "scheduler_options")
"""The request fields a backend may not honour (cores and nodes are checked by size)."""


SPARK = "spark"
"""In :attr:`Capacity.honours`: the backend runs a job's ``spark`` part (a Spark
application). Only a backend that reports it does (``honours=None``, "sbatch decides", is
about a command's or script's requests; it does not make a Slurm cluster run Spark)."""


SPARK_ONLY = "spark-only"
"""In :attr:`Capacity.honours`: the backend runs Spark applications only (a Spark master,
Livy): a command or a script is refused at submit, naming what the job gave."""


def refuse_spark(spec: JobSpec, backend: str, capacity: Capacity | None) -> None:
    """InvalidSpec naming ``spark`` and the backend when ``spec`` is a Spark application and
    its cluster's agents (``backend``, reporting ``capacity``) do not say they run Spark, or
    naming ``command``/``script`` when it is not one and they run nothing else."""
    honours = capacity.honours if capacity is not None else None
    if spec.spark is None:
        if honours is not None and SPARK_ONLY in honours:
            given = "script" if spec.script is not None else "command"
            raise InvalidSpec(
                f"{given}: cluster {spec.cluster!r} runs jobs with the {backend or 'unknown'} "
                "backend, which runs Spark applications only: give a Spark application "
                "(spark, --spark-app) or submit to another cluster")
        return
    if honours is not None and SPARK in honours:
        return
    raise InvalidSpec(
        f"spark: cluster {spec.cluster!r} runs jobs with the {backend or 'unknown'} backend, "
        "which does not run Spark applications: submit it to a cluster with a Spark backend "
        "(spark_standalone, livy, emr)")


def requests_of(spec: JobSpec) -> Iterator[tuple[str, str]]:
    """What ``spec`` asks for that a backend may be unable to honour, as (its name in
    :attr:`Capacity.honours`, how an error shows it): each ``#SBATCH`` directive of its
    script (``"#SBATCH --partition"``, ``"script line 3: #SBATCH -p gpu"``), then each of
    :data:`OPTIONAL_REQUESTS` it sets (``"resources.gpus"``, ``"resources.gpus (2)"``)."""
    if spec.script is not None:
        for d in sbatch.directives(spec.script):
            yield f"#SBATCH --{d.option}", f"script line {d.line}: #SBATCH {d.text}"
    res = spec.resources
    for name, value in (("memory_mb", res.memory_mb), ("gpus", res.gpus or None),
                        ("walltime_s", res.walltime_s), ("partition", res.partition),
                        ("account", res.account)):
        if value is not None:
            yield f"resources.{name}", f"resources.{name} ({value})"
    if spec.scheduler_options:
        yield "scheduler_options", f"scheduler_options ({spec.scheduler_options[0]})"


@dataclass(frozen=True, slots=True, kw_only=True)
class Capacity:
    """The largest job a cluster can ever run, and what it can honour, as its agent reports
    it (``info.capacity``). A job that asks for more, or for what the backend cannot honour,
    is refused at submit, as sbatch refuses an impossible request; what a backend does not
    know (``None``) is not checked."""

    cores: int | None = None
    """Cores one job may have (the local backend's slots)."""
    nodes: int | None = None
    memory_mb: int | None = None
    """Memory one job may ask for (the local backend: the host's)."""
    source: str = "its agent"
    """What the figures are, for the error: ``"2 slots"``."""
    honours: tuple[str, ...] | None = None
    """What the backend honours of :func:`requests_of`: ``OPTIONAL_REQUESTS`` and
    ``"#SBATCH --<option>"`` names. None: all of it (Slurm: sbatch decides)."""
    backend: str = ""
    """The backend's name, for the error."""

    def to_info(self) -> dict[str, object]:
        return {"cores": self.cores, "nodes": self.nodes, "memory_mb": self.memory_mb,
                "source": self.source, "backend": self.backend,
                "honours": None if self.honours is None else list(self.honours)}

    @classmethod
    def from_info(cls, info: Mapping[str, object]) -> Capacity | None:
        """The capacity in a heartbeat's info, if it has a well-formed one."""
        raw = info.get("capacity")
        if not isinstance(raw, Mapping):
            return None
        cores, nodes, memory = raw.get("cores"), raw.get("nodes"), raw.get("memory_mb")
        honours = raw.get("honours")
        return cls(cores=cores if isinstance(cores, int) else None,
                   nodes=nodes if isinstance(nodes, int) else None,
                   memory_mb=memory if isinstance(memory, int) else None,
                   source=str(raw.get("source") or "its agent"),
                   backend=str(raw.get("backend") or ""),
                   honours=tuple(str(h) for h in honours)
                   if isinstance(honours, list | tuple) else None)

    def refuse_unfit(self, spec: JobSpec) -> None:
        """InvalidSpec naming both numbers when ``spec`` (after its caps) can never fit, or
        naming the first request it makes that the backend cannot honour."""
        refuse_spark(spec, self.backend, self)
        self.refuse_unhonoured(spec)
        res = spec.resources
        for what, asked, most, flag in (
                ("cores", res.capped_cores, self.cores, "fewer with --cores"),
                ("nodes", res.capped_nodes, self.nodes, "fewer with --nodes"),
                ("MB of memory", res.memory_mb or 0, self.memory_mb, "less with --memory")):
            if most is not None and asked > most:
                raise InvalidSpec(
                    f"the job asks for {asked} {what} but cluster {spec.cluster!r} can run at "
                    f"most {most} {what} per job ({self.source}): ask for {flag}")

    def refuse_unhonoured(self, spec: JobSpec) -> None:
        """InvalidSpec naming the first request of ``spec`` (a directive with its line, or
        a field) that this backend cannot honour: it is refused, never dropped."""
        if self.honours is None:
            return
        backend = f"the {self.backend} backend" if self.backend else "its backend"
        can = "slurm_cli: sbatch reads every directive" if self.backend.startswith(
            "slurm") else "Slurm"
        for name, shown in requests_of(spec):
            if name not in self.honours:
                raise InvalidSpec(
                    f"{shown}: cluster {spec.cluster!r} runs jobs with {backend}, which "
                    f"cannot honour it: leave it out, or submit to a cluster that can ({can})")


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
