"""Refuse at submit a job that its cluster can never run (as sbatch refuses an impossible
request) or that asks for what its backend cannot honour (the local backend: a partition, GPUs,
an ``#SBATCH --qos``...), from the capacity its agents report in their heartbeats.

A heartbeat to this replica counts at once; the others' are read from the store at most once
per ``TTL_S``, so a submit costs no extra query in the common case. A cluster whose agents
report no capacity (Slurm: sbatch decides) is not checked.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from bridgehead.domain.clusters import Capacity
from bridgehead.domain.jobs import JobSpec
from bridgehead.store import JobStore

TTL_S = 2.0
"""How old the capacities read from the store may be."""


class Capacities:
    def __init__(self) -> None:
        self._by_cluster: dict[str, Capacity | None] = {}
        self._loaded_at = float("-inf")

    def heard(self, cluster: str, info: Mapping[str, object]) -> None:
        """A heartbeat reached this replica."""
        self._by_cluster[cluster] = Capacity.from_info(info)

    async def refuse_unfit(self, store: JobStore, specs: Sequence[JobSpec]) -> None:
        """InvalidSpec (HTTP 400) for the first job bigger than its cluster can ever run, or
        asking for what its backend cannot honour (naming the field or directive)."""
        if time.monotonic() - self._loaded_at > TTL_S:
            stats = await store.clusters()
            self._by_cluster = {s.cluster.name: Capacity.from_info(s.cluster.info)
                                for s in stats}
            self._loaded_at = time.monotonic()
        for spec in specs:
            capacity = self._by_cluster.get(spec.cluster)
            if capacity is not None:
                capacity.refuse_unfit(spec)
