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
        self._scheduler_events = Counter(
            "bridgehead_scheduler_events_total",
            "Scheduler job events posted (Slurm hook), each waking the cluster's agents.",
            ["cluster"], registry=self.registry)
        self._poll_hints = Counter(
            "bridgehead_agent_poll_hints_total",
            "Claims answered early with 'poll now' (a scheduler event of the cluster).",
            ["cluster"], registry=self.registry)
        self._throttled = Counter(
            "bridgehead_requests_throttled_total",
            "Requests refused 429: their token had max_requests_per_token in service.",
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

        self._pool_nodes = Gauge("bridgehead_pool_nodes", "Nodes of each pool by state.",
                                 ["pool", "state"], registry=self.registry)
        self._scale = Counter("bridgehead_scale_decisions_total",
                              "Node changes the scaler wrote (launch, cordon, terminate, ...).",
                              ["pool", "op"], registry=self.registry)
        self._boot = Histogram("bridgehead_pool_boot_seconds",
                               "From a node's launch to its first ready report.", ["pool"],
                               buckets=(5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 1200),
                               registry=self.registry)
        self._idle_share = Gauge("bridgehead_pool_idle_share",
                                 "Ready nodes of each pool with no job, as a share of them.",
                                 ["pool"], registry=self.registry)

    def scale_decision(self, pool: str, op: str) -> None:
        self._scale.labels(pool, op).inc()

    def booted(self, pool: str, seconds: float) -> None:
        self._boot.labels(pool).observe(max(0.0, seconds))

    def pools(self, states: dict[tuple[str, str], int], idle_share: dict[str, float]) -> None:
        """Set the pool gauges (each pool's every state, 0 for none)."""
        for (pool, state), n in states.items():
            self._pool_nodes.labels(pool, state).set(n)
        for pool, share in idle_share.items():
            self._idle_share.labels(pool).set(share)

    def submitted(self, n: int) -> None:
        self._submitted.inc(n)

    def claimed(self, cluster: str, n: int) -> None:
        if n:
            self._claimed.labels(cluster).inc(n)

    def scheduler_event(self, cluster: str) -> None:
        self._scheduler_events.labels(cluster).inc()

    def throttled(self) -> None:
        self._throttled.inc()

    def poll_hint(self, cluster: str) -> None:
        self._poll_hints.labels(cluster).inc()

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
