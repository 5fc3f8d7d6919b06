"""The tally: every ``TALLY_S`` it folds the job counts' deltas into the counts (PostgreSQL;
migration 0011) and samples each cluster's queue and running jobs into its hour, for the
Clusters page's last day.

Sampled from the exact counts rather than derived from the jobs' transitions: a sample is
O(clusters) whatever the number of jobs, whereas a queue length at each past hour from the
transitions needs every job's state intervals (the event log, or times the jobs table does
not keep for a job queued again). What a sample misses, a spike shorter than ``TALLY_S``, is
below what an hourly chart shows. It is a leased consumer (one server among replicas; another
takes over if it dies) that reads no events: only its timer wakes it.
"""

from __future__ import annotations

from typing import cast

from bridgehead.controllers.consumers import EventConsumer
from bridgehead.metrics import Metrics
from bridgehead.store import JobStore
from bridgehead.store.ui_sql import UiStore

TALLY_S = 5.0
"""Between passes: the deltas a reader sums stay a few seconds' worth of writes."""


class Tally(EventConsumer):
    name = "tally"

    def __init__(self, store: JobStore, *, interval_s: float = TALLY_S, lease_s: float = 15.0,
                 metrics: Metrics | None = None) -> None:
        super().__init__(store, lease_s=lease_s, metrics=metrics)
        self.interval_s = interval_s
        self._due = 0.0

    async def start(self) -> None:
        self._due = 0.0

    async def skip_to(self) -> int | None:
        return self.cursor  # no event concerns it: read none (tick moves the cursor on)

    def next_wake(self) -> float | None:
        return self._due

    async def tick(self, now: float) -> None:
        if now >= self._due:
            self._due = now + self.interval_s
            await cast(UiStore, self.store).tally(now)
            self.cursor = await self.store.last_event_seq()  # the consumer-lag metric's 0
