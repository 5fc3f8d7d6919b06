"""The provider interface: launch, terminate, list. A site adds EC2, Azure VMSS or GCE by
writing one module with a class that has these three methods and registering it in
``PROVIDERS`` (see :mod:`bridgehead.pools.providers`).

The contract every provider keeps (the scaler's guarantees rest on it):

- ``launch`` is **idempotent by key**: the key is the Bridgehead node id. Launching a key the
  provider already has does nothing new and answers the same provider id (an agent that dies
  between the call and its report, then asks again, never buys two nodes). EC2 has
  ``ClientToken``, Azure and GCE request ids; a provider with none stores the key on the node
  (a tag, Slurm's node ``Comment``) and looks it up before launching.
- ``terminate`` is **graceful**: it never kills a job. The scaler asks only for nodes it has
  seen empty and cordoned; a provider whose scheduler might still place work on the node (Slurm)
  makes the scheduler stop placing first and refuses a node that has a job
  (:class:`NodeBusy`). Terminating a node the provider no longer has is not an error.
- ``list`` answers every node of the given pools that the provider has, **with its key** when it
  was launched by Bridgehead (None otherwise: an orphan to the reconciler, unless the provider
  says the scheduler started it for its own work, ``adopted``), whether it is ready for work,
  and whether the provider announced that it will take it back (a spot notice).

Errors: :class:`CapacityShortage` (nothing was made: the scaler backs off this pool and moves to
the next), :class:`ProviderError` (anything else; the agent reports it and the scaler retries the
same keys next pass).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

from bridgehead.domain.pools import Pool


class ProviderError(Exception):
    """The provider could not do what was asked (the scaler asks again next pass)."""


class CapacityShortage(ProviderError):
    """The provider has no capacity of this kind now: nothing was made."""


class NodeBusy(ProviderError):
    """Terminate refused: the node has a job (the scaler's view was stale)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Listed:
    """One node as its provider lists it."""

    provider_id: str
    pool: str
    key: str | None = None
    """The Bridgehead node id it was launched with (None: not launched by Bridgehead)."""
    ready: bool = False
    """Booted and accepting work."""
    jobs: int = 0
    """Jobs the scheduler has on it now (0 when the provider cannot tell)."""
    interrupted: bool = False
    """The provider announced it will take the node back (a spot notice)."""
    adopted: bool = False
    """Not launched by Bridgehead, but started by the scheduler for its own queued work
    (Slurm powering up a CLOUD node by itself): tracked and billed, never an orphan."""


class Provider(Protocol):
    name: ClassVar[str]

    async def launch(self, pool: Pool, keys: Sequence[str]) -> dict[str, str]:
        """Start one node per key; the provider id of each (idempotent by key)."""
        ...

    async def terminate(self, pool: Pool, provider_ids: Sequence[str]) -> None:
        """Stop these nodes, never one with a job (:class:`NodeBusy`)."""
        ...

    async def list(self, pools: Sequence[Pool]) -> list[Listed]:
        """Every node of these pools that the provider has now."""
        ...
