"""``local``: the embedded default's pool, so a newcomer sees scaling without a cluster.

A node is a group of ``shape.cpus`` core slots added to the local backend after a boot delay
(option ``boot_s``, default 2); once a local pool is configured for the cluster, the backend's
jobs run only on its ready nodes (busiest node with room first, so whole nodes empty out; see
:mod:`bridgehead.backends.local_nodes`) and its fixed ``slots`` no longer count. Terminate
removes an empty node's slots and refuses one with a job (:class:`NodeBusy`).

The nodes live in the agent's process: an agent that restarts lists none, and the server's
reconciler then sees the nodes it had as lost (their jobs' attempts re-queued once) or, for a
launch it had not yet recorded, nothing at all. That is the right answer for a process-local
provider: those slots are really gone with the process that held them. Its jobs are not:
they run on under their supervisors and the restarted agent adopts them, which is why this
provider names no jobs of a node (only how many it has): a lost local node must not make the
server start its jobs again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import ClassVar

from bridgehead.backends.base import Backend
from bridgehead.backends.local import LocalBackend
from bridgehead.backends.local_nodes import LocalNodes, NodeInUse
from bridgehead.domain.pools import Pool
from bridgehead.pools.providers.base import Listed, NodeBusy, ProviderError
from bridgehead.pools.providers.options import Option, read_options


class LocalProvider:
    name: ClassVar[str] = "local"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "boot_s": Option(kind=float, default=2.0, low=0, high=3600),
    }

    def __init__(self, pool: Pool, backend: Backend | None = None) -> None:
        self.pool = pool
        self.boot_s = float(read_options(pool, self.OPTIONS)["boot_s"])
        self._nodes: LocalNodes | None = None
        if isinstance(backend, LocalBackend):
            self._nodes = backend.use_nodes()
            self._nodes.add_pool(pool.name, pool.shape.cpus)

    @property
    def nodes(self) -> LocalNodes:
        if self._nodes is None:
            raise ProviderError(f"pool {self.pool.name}: the local provider runs only in an "
                                "agent of the local backend")
        return self._nodes

    async def launch(self, pool: Pool, keys: Sequence[str]) -> dict[str, str]:
        nodes = self.nodes  # each call in a thread: a scheduling pass may hold the lock
        return {key: await asyncio.to_thread(nodes.launch, pool.name, key, pool.shape.cpus,
                                             self.boot_s) for key in keys}

    async def terminate(self, pool: Pool, provider_ids: Sequence[str]) -> None:
        try:
            await asyncio.to_thread(self.nodes.remove, list(provider_ids))
        except NodeInUse as exc:
            raise NodeBusy(f"pool {pool.name}: {exc}") from exc

    async def list(self, pools: Sequence[Pool]) -> list[Listed]:
        views = await asyncio.to_thread(self.nodes.listing, {p.name for p in pools})
        return [Listed(provider_id=v.provider_id, pool=v.pool, key=v.key, ready=v.ready,
                       jobs=v.jobs) for v in views]
