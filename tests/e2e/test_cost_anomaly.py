"""``bridgehead.cost.anomaly``: a workflow run that costs more than 1.5x the trailing p90 of
its workflow's earlier runs is announced once, as an event a rule can act on; ordinary runs
are not. Real server and local agent, the local cluster priced in the server's config."""

from __future__ import annotations

from pathlib import Path

from bridgehead.client import Client
from bridgehead.controllers.cost_watch import ANOMALY_EVENT
from tests.procs import eventually, stack

FLOW = """\
name: nightly
steps:
  - {id: work, cluster: local, command: [sleep, "SECONDS"]}
"""


def anomalies(bh: Client) -> list[dict]:
    page = bh.events(after=0, limit=1000)
    return [e for e in page["events"] if e["type"] == ANOMALY_EVENT]


def test_a_run_costing_far_more_than_usual_is_announced_once(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[server.prices.local]\ncore_hour = 3600.0\n")
    with stack(tmp_path) as s, Client(s.server.url, s.admin, timeout=30) as bh:
        usual = []
        for _ in range(5):
            run = bh.start_run(FLOW.replace("SECONDS", "0.2"))
            assert bh.wait_run(run["id"], timeout=120)["state"] == "succeeded"
            usual.append(run["id"])
        assert anomalies(bh) == []  # five ordinary runs: nothing to say
        big = bh.start_run(FLOW.replace("SECONDS", "6"))
        assert bh.wait_run(big["id"], timeout=120)["state"] == "succeeded"
        [event] = eventually(lambda: anomalies(bh), 60, what="the anomaly event")
        data = event["data"]
        assert event["subject"] == f"runs/{big['id']}"
        assert data["run_id"] == big["id"] and data["workflow"] == "nightly"
        assert data["runs_compared"] == 5 and data["threshold"] == 1.5
        costs = {r["group"]: r["cost"] for r in
                 bh.costs(by="run", bucket="none")["rows"]}
        assert abs(data["cost"] - costs[big["id"]]) < 1e-3
        assert abs(data["trailing_p90"] - max(costs[r] for r in usual)) < 1e-3
        assert data["cost"] > 1.5 * data["trailing_p90"]
