"""``sim``: the simulated cloud (:class:`bridgehead.pools.sim.SimCloud`) on real time, behind
the provider interface, for end-to-end tests of the scaler and the agent without a cloud.

Options: ``boot_s`` (every boot takes this long: no spread, so a test knows when a node is
ready; default 5), ``failed_boot_p`` (the share of nodes that never boot, default 0) and
``seed`` (the cloud's random draws). Its nodes run nothing: ``jobs`` is always 0 (the
provider cannot tell), and the nodes live in the agent's process (a restart forgets them).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import ClassVar

from bridgehead.backends.base import Backend
from bridgehead.domain.pools import Pool
from bridgehead.pools import sim
from bridgehead.pools.providers.base import CapacityShortage, Listed
from bridgehead.pools.providers.options import Option, read_options


class SimProvider:
    name: ClassVar[str] = "sim"
    OPTIONS: ClassVar[dict[str, Option]] = {
        "boot_s": Option(kind=float, default=5.0, low=0, high=86_400),
        "failed_boot_p": Option(kind=float, default=0.0, low=0, high=1),
        "seed": Option(kind=int, default=0),
    }

    def __init__(self, pool: Pool, backend: Backend | None = None) -> None:
        options = read_options(pool, self.OPTIONS)
        model = sim.CloudModel(boot_median_s=float(options["boot_s"]), boot_sigma=0.0,
                               failed_boot_p=float(options["failed_boot_p"]),
                               evictions_per_node_hour=0.0)
        self.cloud = sim.SimCloud(model, seed=int(options["seed"]))

    async def launch(self, pool: Pool, keys: Sequence[str]) -> dict[str, str]:
        made = {}
        for key in keys:
            try:
                pid = self.cloud.launch(pool.name, key, time.monotonic())
            except sim.CapacityShortage as exc:
                raise CapacityShortage(f"pool {pool.name}: no capacity") from exc
            if pid is not None:  # None: the record was lost (never, with these options)
                made[key] = pid
        return made

    async def terminate(self, pool: Pool, provider_ids: Sequence[str]) -> None:
        for pid in provider_ids:
            self.cloud.terminate(pid)

    async def list(self, pools: Sequence[Pool]) -> list[Listed]:
        names, now = {p.name for p in pools}, time.monotonic()
        return [Listed(provider_id=n.provider_id, pool=n.pool, key=n.key,
                       ready=self.cloud.ready(n.provider_id, now))
                for n in self.cloud.nodes() if n.pool in names]
