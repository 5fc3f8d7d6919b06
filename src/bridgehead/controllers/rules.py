"""The rule engine: every event of the log against every enabled rule; matches run actions.

It is an event-log consumer (:mod:`bridgehead.controllers.consumers`): one server runs it, from a
durable cursor. Each action is isolated: a failure is logged as a ``bridgehead.rule.failed``
event and stops neither the rule's other actions nor other rules; a success is logged as
``bridgehead.rule.fired`` with what it made (a job id, a run id, a webhook's status). The
cursor moves once a batch's actions are done, so after a crash a batch may be acted on
again: a submitted job and a started run carry the key ``rule:<rule>:<event id>:<action>``
and come back as they are; a webhook is delivered again with the same
``X-Bridgehead-Delivery`` header, for receivers to drop (at-least-once).

Events of the engine itself (``bridgehead.rule.*``) are not matched: a rule cannot feed on
its own results.

A rule acts for its event's poster: a job it submits and a run it starts belong to the
event's tenant (a job template naming another tenant fails for that event), so a client of
one tenant cannot make an admin's rule put its data into another tenant.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import replace
from typing import Any

import httpx

from bridgehead.controllers.consumers import EventConsumer
from bridgehead.domain.clusters import route
from bridgehead.domain.egress import Egress
from bridgehead.domain.events import Event
from bridgehead.domain.jobs import JobSpec
from bridgehead.domain.rules import Action, Rule, StartWorkflow, SubmitJob, Webhook
from bridgehead.errors import BridgeheadError
from bridgehead.metrics import Metrics
from bridgehead.rules.spec import validate_rule
from bridgehead.rules.webhook import deliver
from bridgehead.store import JobStore
from bridgehead.workflows.launch import create_run

logger = logging.getLogger(__name__)

OWN_EVENTS = "bridgehead.rule."
CONCURRENCY = 32
"""Actions of one batch in flight at once (webhooks wait on the network)."""


class RuleEngine(EventConsumer):
    name = "rule-engine"

    def __init__(self, store: JobStore, *, cluster_ttl_s: float = 30.0,
                 lease_s: float = 15.0, http: httpx.AsyncClient | None = None,
                 metrics: Metrics | None = None, egress: Egress | None = None) -> None:
        super().__init__(store, lease_s=lease_s, metrics=metrics)
        self.cluster_ttl_s = cluster_ttl_s
        self.egress = egress or Egress()
        """Where webhooks may go (public addresses unless ``[server] webhook_allow``)."""
        self._http = http
        self._limit = asyncio.Semaphore(CONCURRENCY)
        self._rules: dict[tuple[Any, Any], Rule] = {}

    async def load(self) -> list[Rule]:
        """The stored rules (validated when stored; one that no longer loads is skipped).
        Each is built once per version (its ``updated_at``), not once per batch."""
        rules, cache = [], {}
        for stored in await self.store.list_rules():
            data = {k: v for k, v in stored.items() if k not in ("created_at", "updated_at")}
            version = (data.get("name"), stored.get("updated_at"))
            rule = self._rules.get(version)
            if rule is None:
                try:
                    rule = validate_rule(data)
                except BridgeheadError as exc:
                    logger.error("rule %r no longer loads, skipped: %s", data.get("name"), exc)
                    continue
            cache[version] = rule
            rules.append(rule)
        self._rules = cache
        return rules

    async def skip_to(self) -> int | None:
        """With no enabled rule, the log's end: no event needs reading. (The end is read
        before the rules, so an event logged after a rule was stored is never skipped.)"""
        last = await self.store.last_event_seq()
        return None if any(r.enabled for r in await self.load()) else last

    async def handle(self, events: list[Event]) -> bool:
        rules = [r for r in await self.load() if r.enabled]
        fired = [self._fire(rule, event) for event in events
                 if not event.type.startswith(OWN_EVENTS) for rule in rules
                 if rule.matches(event)]
        if not fired:
            return False
        results = await asyncio.gather(*fired)
        outcomes = [e for batch in results for e in batch]
        if outcomes:
            await self.store.append_events(outcomes)
        return True

    async def _fire(self, rule: Rule, event: Event) -> list[Event]:
        """Run the rule's actions in order; one outcome event per action."""
        out = []
        for index, action in enumerate(rule.actions):
            data: dict[str, Any] = {"rule": rule.name, "event_id": event.id,
                                    "event_type": event.type, "action": index,
                                    "kind": action.kind}
            try:
                async with self._limit:
                    data.update(await self._act(rule, event, index, action))
                kind = "fired"
            except BridgeheadError as exc:
                data["error"] = exc.message
                kind = "failed"
            except Exception as exc:  # an action's bug must not stop the engine
                logger.exception("rule %s action %d failed", rule.name, index)
                data["error"] = f"{type(exc).__name__}: {exc}"
                kind = "failed"
            self.metrics.rule_action(rule.name, kind)
            if kind == "failed":
                logger.warning("rule %s action %d (%s) on event %s failed: %s", rule.name,
                               index, action.kind, event.id, data["error"])
            out.append(Event(type=f"bridgehead.rule.{kind}", source="bridgehead.rules",
                             subject=f"rules/{rule.name}", data=data,
                             id=_outcome_id(kind, rule.name, event, index),
                             tenant=event.tenant))
        return out

    async def _act(self, rule: Rule, event: Event, index: int,
                   action: Action) -> dict[str, Any]:
        if isinstance(action, SubmitJob):
            spec = await self._routed(action.job_spec(event, rule.name, index))
            [submitted] = await self.store.submit([spec])
            return {"job_id": submitted.job.id, "created": submitted.created}
        if isinstance(action, StartWorkflow):
            params = {k: _scalar(v) for k, v in action.params_for(event).items()}
            run, created = await create_run(
                self.store, action.spec, filename=action.filename, params=params,
                tenant=action.tenant_for(event),
                idempotency_key=action.idempotency_key(rule.name, event, index))
            return {"run_id": run.id, "created": created}
        assert isinstance(action, Webhook)
        return await self._webhook(rule, event, action)

    async def _webhook(self, rule: Rule, event: Event, action: Webhook) -> dict[str, Any]:
        body = action.body(event, rule.name)
        headers = action.headers_for(event, rule.name, body)
        client = self._http or httpx.AsyncClient()
        try:
            delivery = await deliver(action, body, headers, client=client, egress=self.egress)
        finally:
            if self._http is None:
                await client.aclose()
        if not delivery.ok:
            raise _WebhookFailed(f"webhook failed after {delivery.attempts} attempts: "
                                 f"{delivery.error}", delivery.attempts, delivery.status)
        return {"status": delivery.status, "attempts": delivery.attempts}

    async def _routed(self, spec: JobSpec) -> JobSpec:
        if spec.cluster:
            return spec
        known = [(s.cluster, s.counts) for s in await self.store.clusters()]
        return replace(spec, cluster=route(spec.cluster_labels, known, now=time.time(),
                                           ttl_s=self.cluster_ttl_s))


class _WebhookFailed(BridgeheadError):
    """A webhook was not delivered."""

    def __init__(self, message: str, attempts: int, status: int | None) -> None:
        super().__init__(message)
        self.attempts, self.status = attempts, status


def _outcome_id(kind: str, rule: str, event: Event, index: int) -> str:
    """One outcome of each kind per (rule, event, action): a batch acted on again after a
    crash logs nothing twice."""
    digest = hashlib.sha256(f"{kind}\0{rule}\0{event.source}\0{event.id}\0{index}".encode())
    return digest.hexdigest()[:40]


def _scalar(value: str) -> Any:
    """A rendered param: a JSON number, boolean or list stays one (``8`` -> 8); the rest is
    the string itself."""
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    return parsed if isinstance(parsed, int | float | bool | list) else value
