"""The agent's side of elastic pools: it runs the providers, the server's scaler decides.

Each heartbeat: right before it, the agent lists the nodes of the pools the server last sent
(:meth:`PoolRunner.report`, every provider call bounded by ``list_timeout_s``) and sends them
with the errors of earlier commands; right after it, it starts the answer's scale commands
(:meth:`PoolRunner.apply`): one launch per pool with all its keys, one terminate per node.
Commands run in tasks of their own, each bounded by ``call_timeout_s``, so a slow provider
never holds up the heartbeat (which renews the leases of the agent's jobs) or the claim and
poll loops; a command the server sends again while the same one still runs is not started
twice. A failure is kept and reported in the next heartbeat's ``node_errors``; nothing a
provider does stops the agent.

The listing is all-or-nothing: if one pool's listing fails, the heartbeat carries no nodes at
all (``None``), never a partial list that would make the server's reconciler see the missing
pool's nodes as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from bridgehead.backends.base import Backend
from bridgehead.domain.pools import Pool, pool_from_dict
from bridgehead.pools.providers import make
from bridgehead.pools.providers.base import CapacityShortage, Listed, Provider

logger = logging.getLogger(__name__)

LIST_TIMEOUT_S = 20.0
"""The most one pool's listing may take (the heartbeat waits for it)."""
CALL_TIMEOUT_S = 120.0
"""The most one launch or terminate call may take (it runs beside the heartbeat)."""
MAX_ERRORS = 200
"""Errors kept for the next heartbeat at most (the newest): a server away for long does not
make the agent hold an unbounded list."""

Op = Literal["launch", "terminate"]


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeError:
    """A scale command that failed, as the next heartbeat reports it."""

    pool: str
    keys: list[str]
    op: Op
    error: str
    shortage: bool = False


@dataclass(slots=True)
class _Running:
    config: Mapping[str, Any]
    pool: Pool
    provider: Provider


class PoolRunner:
    """The providers of the pools the server sent, and the commands in flight."""

    def __init__(self, backend: Backend, *, list_timeout_s: float = LIST_TIMEOUT_S,
                 call_timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.backend = backend
        self.list_timeout_s = list_timeout_s
        self.call_timeout_s = call_timeout_s
        self._pools: dict[str, _Running] = {}
        self._errors: list[NodeError] = []
        self._reported: list[NodeError] = []
        """The errors of the last :meth:`report`, dropped by :meth:`sent`."""
        self._busy: set[tuple[Op, str]] = set()
        """Commands running now: ("launch", key), ("terminate", provider id)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self.ended = asyncio.Event()
        """Set when a command ends: the agent's next heartbeat need not wait its interval to
        tell the server (a node's billing ends when the server sees it gone)."""

    @property
    def pools(self) -> dict[str, Pool]:
        return {name: r.pool for name, r in self._pools.items()}

    # -- before the heartbeat ------------------------------------------------------------
    async def report(self) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]]]:
        """(nodes, node_errors) for the heartbeat: nodes None when this agent runs no pool
        or a listing failed. The errors stay until :meth:`sent` confirms them."""
        self._reported = list(self._errors)
        errors = [asdict(e) for e in self._reported]
        if not self._pools:
            return None, errors
        names = list(self._pools)
        listings = await asyncio.gather(*(self._list(name) for name in names))
        if any(listed is None for listed in listings):
            return None, errors  # never a partial list: the missing nodes would be "lost"
        return [_wire(asdict(n)) for name, listed in zip(names, listings, strict=True)
                for n in listed or () if n.pool == name], errors

    async def _list(self, name: str) -> list[Listed] | None:
        """The nodes of pool ``name``; None if its provider failed or took too long."""
        running = self._pools[name]
        try:
            return await asyncio.wait_for(running.provider.list([running.pool]),
                                          self.list_timeout_s)
        except Exception as exc:  # any provider failure: logged, never the agent's end
            logger.warning("pool %s: listing its nodes failed, none reported this time: %s",
                           name, _describe(exc))
            return None

    def sent(self) -> None:
        """The server has the errors of the last :meth:`report` (the heartbeat went through)."""
        gone = {id(e) for e in self._reported}
        self._errors = [e for e in self._errors if id(e) not in gone]
        self._reported = []

    # -- after the heartbeat -------------------------------------------------------------
    def configure(self, pools: Sequence[Mapping[str, Any]]) -> None:
        """Run the providers of ``pools`` (the answer's): a pool whose table changed gets a
        new provider, one no longer sent is dropped. A pool this agent cannot run is logged
        and left out (its commands then fail as of an unknown pool)."""
        kept: dict[str, _Running] = {}
        for config in pools:
            name = str(config.get("name"))
            old = self._pools.get(name)
            if old is not None and old.config == config:
                kept[name] = old
                continue
            try:
                pool = pool_from_dict(config)
                kept[name] = _Running(dict(config), pool, make(pool, self.backend))
            except Exception as exc:  # InvalidPool, or a provider that cannot start here
                logger.error("pool %s from the server cannot run in this agent: %s", name,
                             _describe(exc))
                continue
            logger.info("pool %s: provider %s, %d-%d nodes of %d cpus", name, pool.provider,
                        pool.min_nodes, pool.max_nodes, pool.shape.cpus)
        self._pools = kept

    def apply(self, scale: Sequence[Mapping[str, Any]]) -> None:
        """Start the answer's commands (launches grouped per pool) in their own tasks."""
        launches: dict[str, list[str]] = {}
        for command in scale:
            op, pool, key = command.get("op"), str(command.get("pool")), command.get("key")
            pid = command.get("provider_id")
            if op == "launch" and key is not None and ("launch", str(key)) not in self._busy:
                launches.setdefault(pool, []).append(str(key))
            elif op == "terminate" and pid is not None and (
                    "terminate", str(pid)) not in self._busy:  # no provider id: nothing to stop
                self._start("terminate", pool, [str(key)] if key is not None else [], str(pid))
        for pool, keys in launches.items():
            self._start("launch", pool, keys, None)

    def _start(self, op: Op, pool: str, keys: list[str], provider_id: str | None) -> None:
        busy = {(op, k) for k in keys} if provider_id is None else {(op, provider_id)}
        self._busy |= busy
        task = asyncio.create_task(self._run(op, pool, keys, provider_id),
                                   name=f"pool-{op}-{pool}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._busy.difference_update(busy))

    async def _run(self, op: Op, name: str, keys: list[str], provider_id: str | None) -> None:
        what = ", ".join(keys) or provider_id or ""
        try:
            running = self._pools.get(name)
            if running is None:
                raise LookupError(f"pool {name} is not run by this agent")
            logger.info("pool %s: %s %s", name, op, what)
            await asyncio.wait_for(
                running.provider.launch(running.pool, keys) if provider_id is None
                else running.provider.terminate(running.pool, [provider_id]),
                self.call_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Reported with the next regular heartbeat, not one brought forward: its answer
            # asks for the same command again, and a provider that keeps failing (a cluster
            # still starting) must be asked once a heartbeat, not in a tight loop.
            logger.warning("pool %s: %s of %s failed: %s", name, op, what, _describe(exc))
            self._errors.append(NodeError(pool=name, keys=keys, op=op, error=_describe(exc),
                                          shortage=isinstance(exc, CapacityShortage)))
            del self._errors[:-MAX_ERRORS]
            return
        self.ended.set()  # done: the next heartbeat comes at once and lists the result

    async def settled(self) -> None:
        """Until every command started so far has ended."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        """Cancel the commands still running (launch is idempotent: the server asks again)."""
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _wire(node: dict[str, Any]) -> dict[str, Any]:
    """A listed node as JSON holds it (a set of ids becomes a sorted list)."""
    return {k: sorted(v) if isinstance(v, set | frozenset | tuple) else v
            for k, v in node.items()}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
