"""A ``slurm_powersave`` pool end to end: a real server (with its scaler) and a real agent on
the lab's elastic cluster ``delta`` (CLOUD nodes d1-d3, every one powered down at the start):
scale from zero, idle release, a node that never boots, and an eviction (the node's whole
process tree killed) re-run by Bridgehead exactly once.

Timings are printed (pytest -s), never asserted: this machine is shared."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridgehead.client import Client
from bridgehead.domain.jobs import JobSpec, JobState
from tests.procs import Stack, eventually, stack
from tests.slurm import test_pools_e2e
from tests.slurm.conftest import Lab
from tests.slurm.test_agent_e2e import start_slurm_agent
from tests.slurm.test_pools_e2e import CLUSTER, Elastic

elastic = test_pools_e2e.elastic
"""Every delta node powered down before each test (the provider tests' fixture)."""

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

CONFIG = """
[server]
scale_interval_s = 1

[agent]
heartbeat_s = 1

[[server.pools]]
name = "elastic"
cluster = "delta"
provider = "slurm_powersave"
shape = {{ cpus = {cpus}, memory_mb = {memory} }}
max_nodes = 3
price_per_hour = 3.6
expected_boot_s = 5
boot_timeout_s = 40
idle_grace_s = 5
backoff_s = 1
options = {{ partition = "{partition}" }}
"""


@pytest.fixture
def scaled(elastic: Elastic, tmp_path: Path) -> Iterator[tuple[Stack, Client, httpx.Client]]:
    info = elastic.info
    (tmp_path / "config.toml").write_text(CONFIG.format(
        cpus=info["cpus"], memory=info["memory_mb"], partition=info["partition"]))
    with stack(tmp_path, agent=False) as s, Client(s.server.url, s.admin, timeout=30) as bh, \
            httpx.Client(base_url=s.server.url, timeout=30,
                         headers={"Authorization": f"Bearer {s.admin}"}) as http:
        start_slurm_agent(s, elastic.lab, CLUSTER, backend="slurm_cli", poll=1.0)
        yield s, bh, http


def nodes(http: httpx.Client) -> list[dict[str, Any]]:
    [pool] = http.get("/v1/pools").json()
    return list(pool["nodes"])


def sacct_rows(lab: Lab, tag: str) -> list[tuple[str, str, str]]:
    """(job id, state, node list) of every Slurm run of Bridgehead job ``tag``."""
    out = lab.run(CLUSTER, "sacct", "--noheader", "--parsable2", "--allocations",
                  "--duplicates", "--format=JobIDRaw,State,NodeList,Comment",
                  "--starttime=now-1hours")
    return [(c[0], c[1], c[2]) for c in (line.split("|") for line in out.splitlines())
            if c[-1] == tag or c[-1].startswith(f"{tag}.a")]  # attempt 2 on: <tag>.a<n>


def test_scale_from_zero_then_idle_release(scaled: tuple[Stack, Client, httpx.Client],
                                          elastic: Elastic, tmp_path: Path) -> None:
    s, bh, http = scaled
    assert not nodes(http)
    started = tmp_path / "started"
    t0 = time.monotonic()
    job = bh.submit(JobSpec(cluster=CLUSTER, name="from-zero",
                            command=("sh", "-c", f'touch "{started}"; sleep 3')))
    # Slurm says RUNNING (CONFIGURING) while the node boots: the job's own process is the proof
    eventually(started.exists, 180, interval=0.2,
               what=f"the job's process started ({s.agents[0].output()[-1500:]})")
    to_running = time.monotonic() - t0
    ran_on = elastic.run("squeue", "-h", "-j", bh.get(job.id).native_id or "", "-o", "%N").strip()
    bought = {n["provider_id"]: n for n in nodes(http)}
    # The job's node is the pool's, tracked and billed: launched by the scaler when its pass
    # came before the agent's sbatch, else powered up by Slurm for the pending job and adopted
    # (both by design: slurm_powersave's docstring; CI under load saw each). That the scaler
    # launches nodes itself is shown by test_min_nodes_are_launched_by_the_scaler.
    assert ran_on in bought, (ran_on, bought)
    done = bh.wait(job.id, until="terminal", timeout=120)
    assert done.state is JobState.SUCCEEDED, done
    t1 = time.monotonic()
    eventually(lambda: not elastic.listed(), 120, interval=0.5,
               what=f"the idle node released ({nodes(http)})")
    released = time.monotonic() - t1
    eventually(lambda: all("POWERED_DOWN" in elastic.node(n)["state"]
                           for n in elastic.info["nodes"]), 60, interval=0.5,
               what="every node powered down")
    powered_down = time.monotonic() - t1
    how = "adopted" if bought[ran_on]["adopted"] else "launched by the scaler"
    print(f"\nscale from zero: submit -> job process {to_running:.1f} s on {ran_on} ({how}; "
          f"{len(bought)} node(s) bought); job end -> nodes released {released:.1f} s, "
          f"-> powered down {powered_down:.1f} s")
    assert [r[1] for r in sacct_rows(elastic.lab, job.id)] == ["COMPLETED"]


def test_min_nodes_are_launched_by_the_scaler(elastic: Elastic, tmp_path: Path) -> None:
    """With no work at all, ``min_nodes = 1`` makes the scaler launch a node through the
    agent's provider: Slurm powers it up with Bridgehead's key in its Comment (not adopted),
    and it stays up, idle, as the floor of the pool."""
    info = elastic.info
    (tmp_path / "config.toml").write_text(CONFIG.format(
        cpus=info["cpus"], memory=info["memory_mb"], partition=info["partition"]).replace(
        "max_nodes = 3", "min_nodes = 1\nmax_nodes = 3"))
    with stack(tmp_path, agent=False) as s, httpx.Client(
            base_url=s.server.url, timeout=30,
            headers={"Authorization": f"Bearer {s.admin}"}) as http:
        start_slurm_agent(s, elastic.lab, CLUSTER, backend="slurm_cli", poll=1.0)
        [node] = eventually(lambda: [n for n in nodes(http) if n["state"] == "idle"], 180,
                            interval=0.5, what=f"one idle node ({s.agents[0].output()[-1500:]})")
        assert not node["adopted"] and len(nodes(http)) == 1, nodes(http)
        seen = elastic.node(node["provider_id"])
        assert "POWER" not in seen["state"] and seen["comment"], seen  # up, with our key
        time.sleep(8)  # past idle_grace_s (5 s), and several scaler passes (1 s): the floor stays
        assert [n["id"] for n in nodes(http)] == [node["id"]], nodes(http)


def test_a_node_that_never_boots_is_replaced_and_the_job_runs_elsewhere(
        scaled: tuple[Stack, Client, httpx.Client], elastic: Elastic) -> None:
    s, bh, http = scaled
    (Path(elastic.info["noboot_dir"]) / "d1").touch()
    job = bh.submit(JobSpec(cluster=CLUSTER, name="dud", command=("sleep", "1")))
    done = bh.wait(job.id, until="terminal", timeout=240)
    assert done.state is JobState.SUCCEEDED, (done, nodes(http), s.agents[0].output()[-2000:])
    # accounting lags slurmctld: wait for the run that completed
    runs = eventually(lambda: (r := sacct_rows(elastic.lab, job.id)) and r[-1][1] == "COMPLETED"
                      and r, 60, interval=1, what="sacct's record of the completed run")
    assert runs[-1][2] != "d1", runs
    print(f"\nnever-booting d1: Slurm runs {runs}; Bridgehead attempts {done.attempt}")
    assert done.attempt <= 2, done


def test_an_eviction_reruns_the_job_exactly_once(scaled: tuple[Stack, Client, httpx.Client],
                                                 elastic: Elastic, tmp_path: Path) -> None:
    _, bh, _ = scaled
    marker = tmp_path / "first-run"
    # the first run holds (until evicted); the re-run finds the marker and ends at once
    script = f'if [ -e "{marker}" ]; then echo rerun; exit 0; fi; touch "{marker}"; sleep 317'
    job = bh.submit(JobSpec(cluster=CLUSTER, name="evicted", command=("sh", "-c", script)))
    running = eventually(lambda: (j := bh.get(job.id)).state is JobState.RUNNING
                         and marker.exists() and j, 180, interval=0.5,
                         what="the first run started")
    native = running.native_id
    node = elastic.run("squeue", "-h", "-j", native, "-o", "%N").strip()
    elastic.evict(node)
    done = bh.wait(job.id, until="terminal", timeout=300)
    assert done.state is JobState.SUCCEEDED, done
    assert done.attempt == 2, done  # two attempts, never three
    runs = eventually(lambda: (r := sacct_rows(elastic.lab, job.id)) and len(r) == 2
                      and r[-1][1] == "COMPLETED" and r, 60, interval=1,
                      what="sacct's records of both runs")
    # one Slurm row per attempt: the evicted one ended NODE_FAIL, Slurm never requeued it
    assert [r[1] for r in runs] == ["NODE_FAIL", "COMPLETED"], runs
    assert runs[0][0] == native and runs[1][0] != native, runs
    print(f"\neviction: Slurm runs {runs}; Bridgehead attempts {done.attempt}")
