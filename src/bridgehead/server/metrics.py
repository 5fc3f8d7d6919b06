"""Prometheus metrics of one server process (own registry, so apps in one process stay apart)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bridgehead.domain.jobs import Job


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._submitted = Counter("bridgehead_jobs_submitted_total",
                                  "Jobs accepted (new, not idempotent repeats).",
                                  registry=self.registry)
        self._claimed = Counter("bridgehead_jobs_claimed_total", "Jobs leased to agents.",
                                ["cluster"], registry=self.registry)
        self._transitions = Counter("bridgehead_job_transitions_total",
                                    "Applied agent state reports.", ["cluster", "state"],
                                    registry=self.registry)
        self.requests = Histogram("bridgehead_http_request_seconds", "HTTP request latency.",
                                  ["method", "route", "status"], registry=self.registry)
        self._jobs = Gauge("bridgehead_jobs", "Active jobs by cluster and state.",
                           ["cluster", "state"], registry=self.registry)
        self._online = Gauge("bridgehead_cluster_online", "1 while an agent heartbeat is fresh.",
                             ["cluster"], registry=self.registry)
        self._waiters = Gauge("bridgehead_waiters", "Open long-polls in this process.",
                              registry=self.registry)
        self._plans = Counter("bridgehead_workflow_plans_total",
                              "Changes to workflow runs applied by this process's runner.",
                              registry=self.registry)
        self._rule_actions = Counter("bridgehead_rule_actions_total",
                                     "Rule actions run by this process, by outcome.",
                                     ["rule", "outcome"], registry=self.registry)
        self._leading = Gauge("bridgehead_consumer_leading",
                              "1 while this process holds the consumer's lease.",
                              ["consumer"], registry=self.registry)
        self._lag = Gauge("bridgehead_consumer_lag_events",
                          "Events logged that the leading consumer has not handled yet.",
                          ["consumer"], registry=self.registry)

    def submitted(self, n: int) -> None:
        self._submitted.inc(n)

    def claimed(self, cluster: str, n: int) -> None:
        if n:
            self._claimed.labels(cluster).inc(n)

    def transitions(self, jobs: Iterable[Job]) -> None:
        for job in jobs:
            self._transitions.labels(job.cluster, job.state.value).inc()

    def plan_applied(self) -> None:
        self._plans.inc()

    def rule_action(self, rule: str, outcome: str) -> None:
        self._rule_actions.labels(rule, outcome).inc()

    def consumer(self, name: str, *, leading: bool, lag: int) -> None:
        """Set when scraped: whether this process leads ``name`` and how far behind it is."""
        self._leading.labels(name).set(1 if leading else 0)
        self._lag.labels(name).set(lag if leading else 0)

    def render(self, counts: dict[tuple[str, str], int], online: dict[str, bool],
               waiters: int) -> bytes:
        self._jobs.clear()
        for (cluster, state), n in counts.items():
            self._jobs.labels(cluster, state).set(n)
        for cluster, up in online.items():
            self._online.labels(cluster).set(1 if up else 0)
        self._waiters.set(waiters)
        return generate_latest(self.registry)
