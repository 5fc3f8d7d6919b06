"""Background readers of the event log: the workflow runner and the rule engine.

Each consumer has a durable cursor in the store and runs in one server at a time: the one
that holds its lease (several servers may share a PostgreSQL store; if the holder dies, the
lease expires and another takes over from the stored cursor). A consumer handles a batch of
events, then stores the cursor; a crash in between hands the batch again to the next holder,
so handling must be idempotent (the runner's plans are compare-and-set; rule actions carry
idempotency keys). It sleeps until the store publishes ``events`` or its next timer is due:
no busy polling.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

from bridgehead.domain.events import Event
from bridgehead.errors import StoreError
from bridgehead.metrics import Metrics
from bridgehead.store import JobStore

logger = logging.getLogger(__name__)

CURSOR_EVERY_S = 1.0
"""A consumer that only read events it ignores stores its cursor at most this often (one
write per busy second instead of one per batch of job reports)."""


class EventConsumer:
    """Subclasses set ``name`` and implement :meth:`handle`; :meth:`start` and :meth:`tick`
    do nothing by default."""

    name = "consumer"
    batch = 500
    types: tuple[str, ...] = ()
    """The event types it handles (empty: all); the others are skipped in the store."""

    def __init__(self, store: JobStore, *, lease_s: float = 15.0,
                 metrics: Metrics | None = None) -> None:
        self.store = store
        self.lease_s = lease_s
        self.metrics = metrics or Metrics()
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.cursor = 0
        self.leading = False

    async def start(self) -> None:
        """Called each time this server becomes the holder (catch up on stored state)."""

    async def handle(self, events: list[Event]) -> bool:
        """Act on a batch of events, in log order; False if none concerned this consumer
        (then its cursor is stored lazily: re-reading such events after a crash is free)."""
        return False

    async def tick(self, now: float) -> None:
        """Act on timers that are due."""

    async def skip_to(self) -> int | None:
        """An event ``seq`` the consumer may jump to without reading the events before it
        (it has nothing to do with them), or None to read them. Nothing by default."""
        return None

    def next_wake(self) -> float | None:
        """When :meth:`tick` has something to do next (None: only events wake it)."""
        return None

    async def run(self, stop: asyncio.Event) -> None:
        """Hold the lease and consume until ``stop`` is set; store failures are retried."""
        delay = 0.2
        while not self._stopping(stop):
            try:
                if await self.store.acquire_lease(self.name, self.holder, self.lease_s):
                    self.leading = True
                    try:
                        await self._lead(stop)
                    finally:
                        self.leading = False
                    delay = 0.2
                await self._sleep(stop, self.lease_s / 3)
            except StoreError as exc:
                logger.warning("%s: store failed (%s); retrying in %.1fs", self.name, exc, delay)
                await self._sleep(stop, delay)
                delay = min(delay * 2, 5.0)
            except Exception:  # a bug must not stop the consumer for good
                logger.exception("%s failed; starting again in %.1fs", self.name, delay)
                await self._sleep(stop, delay)
                delay = min(delay * 2, 5.0)
        try:
            await self.store.release_lease(self.name, self.holder)
        except StoreError:
            pass  # it expires by itself

    async def _lead(self, stop: asyncio.Event) -> None:
        stored = await self.store.cursor(self.name)
        if stored is None:  # first run: start at the end, not with the whole history
            stored = await self.store.last_event_seq()
            await self.store.set_cursor(self.name, stored)
        self.cursor = stored
        logger.info("%s: leading from event %d", self.name, self.cursor)
        await self.start()
        renew_at = time.monotonic() + self.lease_s / 3
        stored_at = time.monotonic()
        async with self.store.hub.watch("events") as changed:
            while not self._stopping(stop):
                if time.monotonic() >= renew_at:
                    if not await self.store.acquire_lease(self.name, self.holder, self.lease_s):
                        logger.warning("%s: lease lost; standing by", self.name)
                        return
                    renew_at = time.monotonic() + self.lease_s / 3
                skip = await self.skip_to()
                events, scanned = await self._read(skip)
                acted = bool(events) and await self.handle(events)
                moved, self.cursor = scanned > self.cursor, max(self.cursor, scanned)
                if acted or (moved and time.monotonic() >= stored_at + CURSOR_EVERY_S):
                    await self.store.set_cursor(self.name, self.cursor)
                    stored_at = time.monotonic()
                await self.tick(time.time())
                if len(events) == self.batch:
                    continue
                wait = renew_at - time.monotonic()
                due = self.next_wake()
                if due is not None:
                    wait = min(wait, due - time.time())
                if wait > 0:
                    await changed.wait(wait)

    async def _read(self, skip: int | None) -> tuple[list[Event], int]:
        """The next batch to handle and the cursor after it."""
        if skip is not None:
            return [], skip
        if self.types:
            return await self.store.events_of(after=self.cursor, limit=self.batch,
                                              types=self.types)
        events = await self.store.events(after=self.cursor, limit=self.batch)
        return events, events[-1].seq if events else self.cursor

    def _stopping(self, stop: asyncio.Event) -> bool:
        return stop.is_set() or self.store.hub.closed

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        try:
            await asyncio.wait_for(stop.wait(), seconds)
        except TimeoutError:
            pass
