"""The cost watch: a ``bridgehead.cost.anomaly`` event when a workflow run costs more than
1.5x its workflow's trailing p90, so a rule can act on it (page someone, pause a schedule).

It reads the event log like the runner (one leader among replicas, a durable cursor): each
run's end event makes it price that run and the workflow's earlier runs from the attempts
ledger (the same prices and roll-up as ``GET /v1/costs``). The anomaly event's id is derived
from the run, so a batch handed again after a crash logs it once (the store refuses a second
event with the same source and id). Airflow DAG runs have no end event in Bridgehead: they are
not watched here (their cost is in ``bridgehead cost --by dag``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from bridgehead.controllers.consumers import EventConsumer
from bridgehead.domain.costs import ANOMALY_RATIO, Price, anomaly, attempt_price
from bridgehead.domain.events import Event
from bridgehead.domain.runs import RunState
from bridgehead.metrics import Metrics
from bridgehead.store import JobStore

logger = logging.getLogger(__name__)

ANOMALY_EVENT = "bridgehead.cost.anomaly"
TRAILING_RUNS = 20
"""The earlier runs of a workflow whose p90 a run is compared with (the most recent ones)."""


class CostWatch(EventConsumer):
    name = "cost-watch"
    types = tuple(f"bridgehead.workflow.{s.value}" for s in RunState if s.terminal)

    def __init__(self, store: JobStore, prices: Mapping[str, Price], *, window_s: float,
                 lease_s: float = 15.0, metrics: Metrics | None = None) -> None:
        super().__init__(store, lease_s=lease_s, metrics=metrics)
        self.prices = prices
        self.window_s = window_s
        self.anomalies = 0
        """Anomaly events this watch logged (not counting repeats refused by the store)."""

    async def handle(self, events: list[Event]) -> bool:
        if not self.prices:
            return False  # nothing is priced: every run costs 0
        acted = False
        for event in events:
            run_id, workflow = event.data.get("run_id"), event.data.get("workflow")
            if isinstance(run_id, str) and isinstance(workflow, str):
                acted = await self._check(run_id, workflow, event.tenant) or acted
        return acted

    async def _check(self, run_id: str, workflow: str, tenant: str) -> bool:
        now = time.time()
        records = await self.store.attempts(since=now - self.window_s, until=now + 1.0,
                                            tenant=tenant or None)
        costs: dict[str, float] = {}
        ended: dict[str, float] = {}
        for a in records:
            run = a.labels.get("run")
            if run is None or a.labels.get("workflow") != workflow:
                continue
            price = self.prices.get(a.cluster)
            costs[run] = costs.get(run, 0.0) + (attempt_price(a, price) if price else 0.0)
            ended[run] = max(ended.get(run, 0.0), a.ended_at)
        if run_id not in costs:
            return False
        earlier = sorted((r for r in costs if r != run_id and ended[r] <= ended[run_id]),
                         key=lambda r: ended[r])[-TRAILING_RUNS:]
        usual = anomaly(costs[run_id], [costs[r] for r in earlier])
        if usual is None:
            return False
        cost = costs[run_id]
        event = Event(type=ANOMALY_EVENT, subject=f"runs/{run_id}", id=f"cost-anomaly-{run_id}",
                      tenant=tenant, data={
                          "run_id": run_id, "workflow": workflow, "cost": round(cost, 6),
                          "trailing_p90": round(usual, 6), "ratio": round(cost / usual, 3),
                          "threshold": ANOMALY_RATIO, "runs_compared": len(earlier)})
        [(_, new)] = await self.store.append_events([event])
        if new:
            self.anomalies += 1
            logger.info("run %s of %s cost %.4f, %.1fx its trailing p90 %.4f: %s", run_id,
                        workflow, cost, cost / usual, usual, ANOMALY_EVENT)
        return new
