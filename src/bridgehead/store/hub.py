"""In-process change hub: waiters subscribe to keys and are woken when a key is published.

A waiter subscribes *before* it reads the state it waits on, so a change committed between
the read and the wait is never missed::

    async with hub.watch(f"job:{job_id}") as changed:
        job = await store.get(job_id)
        if not done(job):
            await changed.wait(timeout)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable


class Watch:
    """Set once any watched key is published after the watch began."""

    __slots__ = ("_event", "_hub")

    def __init__(self, hub: ChangeHub) -> None:
        self._event = asyncio.Event()
        self._hub = hub

    def _fire(self) -> None:
        self._event.set()

    @property
    def fired(self) -> bool:
        return self._event.is_set()

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True if a watched key changed. Re-arms itself.
        Once the hub is closed (the server is stopping) it answers False at once."""
        if self._hub.closed:
            return False
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        self._event.clear()
        return True


STAMPED = ("poll:",)
"""Keys whose last publish time the hub keeps (one per cluster), so that a waiter that was not
watching at that moment can still learn it missed one (:meth:`ChangeHub.published_at`)."""


class ChangeHub:
    def __init__(self) -> None:
        self._watches: dict[str, set[Watch]] = defaultdict(set)
        self._stamps: dict[str, float] = {}
        self.closed = False

    @contextlib.asynccontextmanager
    async def watch(self, *keys: str) -> AsyncIterator[Watch]:
        watch = Watch(self)
        for key in keys:
            self._watches[key].add(watch)
        try:
            yield watch
        finally:
            for key in keys:
                waiters = self._watches.get(key)
                if waiters is not None:
                    waiters.discard(watch)
                    if not waiters:
                        del self._watches[key]

    def publish(self, keys: Iterable[str]) -> None:
        for key in keys:
            if key.startswith(STAMPED):
                self._stamps[key] = time.time()
            for watch in self._watches.get(key, ()):
                watch._fire()

    def published_at(self, key: str) -> float:
        """When a :data:`STAMPED` key was last published in this process (0: never)."""
        return self._stamps.get(key, 0.0)

    def publish_all(self) -> None:
        """Wake every waiter (e.g. after the notification link was lost and re-made)."""
        for waiters in list(self._watches.values()):
            for watch in waiters:
                watch._fire()

    def close(self) -> None:
        """End every wait now and from now on: long-polls answer so the server can stop."""
        self.closed = True
        self.publish_all()

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._watches.values())
