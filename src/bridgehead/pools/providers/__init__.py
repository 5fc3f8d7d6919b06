"""Providers: what starts and stops a pool's nodes. They run in the agent (outbound-only stays
true); the scaler in the server decides, and its commands travel in the heartbeat exchange.
See :mod:`bridgehead.pools.providers.base` for the interface a site implements to add a cloud.

``PROVIDERS`` maps a pool's ``provider`` to its class. A class is built with the pool and the
agent's backend (None where no agent runs it: the server checking a pool's options); its
constructor checks the pool's ``options`` (:func:`read_options`) and raises
:class:`~bridgehead.domain.pools.InvalidPool` at ``("options", name)``, so a bad option stops the
server at start with the field named, and never reaches a provider call.
"""

from __future__ import annotations

from collections.abc import Callable

from bridgehead.backends.base import Backend
from bridgehead.domain.pools import InvalidPool, Pool
from bridgehead.pools.providers.base import Provider
from bridgehead.pools.providers.emr import EmrProvider
from bridgehead.pools.providers.local import LocalProvider
from bridgehead.pools.providers.options import Option, read_options
from bridgehead.pools.providers.sim import SimProvider
from bridgehead.pools.providers.slurm_powersave import SlurmPowersaveProvider
from bridgehead.pools.providers.spark_standalone import SparkWorkerProvider

ProviderClass = Callable[[Pool, Backend | None], Provider]

PROVIDERS: dict[str, ProviderClass] = {
    EmrProvider.name: EmrProvider,
    LocalProvider.name: LocalProvider,
    SimProvider.name: SimProvider,
    SlurmPowersaveProvider.name: SlurmPowersaveProvider,
    SparkWorkerProvider.name: SparkWorkerProvider,
}
"""The provider classes this agent can run, by name (a pool naming another is refused)."""


def make(pool: Pool, backend: Backend | None = None) -> Provider:
    """The provider of ``pool``, its options checked (InvalidPool naming the option)."""
    cls = PROVIDERS.get(pool.provider)
    if cls is None:
        raise InvalidPool(f"provider {pool.provider!r} is not available here (available: "
                          f"{', '.join(sorted(PROVIDERS))})", ("provider",))
    return cls(pool, backend)


__all__ = ["PROVIDERS", "Option", "ProviderClass", "make", "read_options"]
