"""Cost accuracy on real Slurm: each job's cost in ``GET /v1/costs`` is within 0.5% of what
sacct's Start/End (ElapsedRaw) and AllocTRES say it held, times the cluster's price, through
both Slurm backends; and the roll-ups add up to the same total as the jobs.

The agent sees a job start and end up to a poll interval late; the ledger must price the
scheduler's own accounting, not those sightings (a 3 s job seen 1 s late is 33% off)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridgehead.client import Client
from bridgehead.domain.jobs import JobSpec, JobState, Resources
from tests.procs import eventually, stack
from tests.slurm.conftest import Lab
from tests.slurm.test_agent_e2e import start_slurm_agent

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
CORE_HOUR = {"alpha": 3.6, "beta": 7.2}
"""Prices per core-hour: at 3.6, a core-second costs 0.001."""


def sacct_cost(lab: Lab, cluster: str, native_id: str) -> float:
    out = lab.run(cluster, "sacct", "--noheader", "--parsable2", "--allocations",
                  "--format=JobIDRaw,ElapsedRaw,AllocTRES", f"--jobs={native_id}")
    [row] = [line.split("|") for line in out.splitlines() if line.split("|")[0] == native_id]
    tres = dict(part.split("=", 1) for part in row[2].split(",") if "=" in part)
    return int(row[1]) * int(tres["cpu"]) * CORE_HOUR[cluster] / 3600.0


def test_each_jobs_cost_is_within_half_a_percent_of_sacct(tmp_path: Path, lab: Lab) -> None:
    (tmp_path / "config.toml").write_text("".join(
        f"[server.prices.{c}]\ncore_hour = {p}\n" for c, p in CORE_HOUR.items()))
    with stack(tmp_path, agent=False) as s, Client(s.server.url, s.admin, timeout=30) as bh:
        start_slurm_agent(s, lab, "alpha", backend="slurm_cli", poll=2.0)
        start_slurm_agent(s, lab, "beta", backend="slurm_rest", poll=2.0)
        specs = [JobSpec(cluster=cluster, name=f"cost-{cluster}-{cores}-{secs}",
                         command=("sleep", str(secs)), resources=Resources(cores=cores),
                         labels={"workflow": "costs"})
                 for cluster in CORE_HOUR for cores, secs in ((1, 3), (2, 5), (1, 8))]
        jobs = [bh.wait(j.id, until="terminal", timeout=300) for j in bh.submit_many(specs)]
        assert [j.state for j in jobs] == [JobState.SUCCEEDED] * len(jobs), jobs
        since = min(j.created_at for j in jobs) - 60
        by_job = {r["group"]: r["cost"] for r in
                  bh.costs(by="job", bucket="none", since=since)["rows"]}
        for job in jobs:
            expected = eventually(lambda j=job: sacct_cost(lab, j.cluster, j.native_id or ""),
                                  30, what="sacct's record")
            assert expected > 0, job
            assert by_job[job.id] == pytest.approx(expected, rel=0.005), (job, expected)
        total = sum(by_job.values())
        for by in ("cluster", "tenant", "workflow", "total"):
            rows = bh.costs(by=by, bucket="day", since=since)["rows"]
            assert sum(r["cost"] for r in rows) == pytest.approx(total, rel=1e-9), by
        per_cluster = {r["group"]: r["cost"] for r in
                       bh.costs(by="cluster", bucket="none", since=since)["rows"]}
        assert per_cluster == pytest.approx(
            {c: sum(by_job[j.id] for j in jobs if j.cluster == c) for c in CORE_HOUR})
