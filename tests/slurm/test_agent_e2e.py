"""A real server with real agents on the two real Slurm clusters: routing, exactly-once
against sbatch, a slurmctld restart mid-run, and the epilog hook's push wake-up."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridgehead.client import Client
from bridgehead.domain.jobs import JobSpec, JobState
from tests.procs import Agent, Stack, env_for, eventually, stack
from tests.slurm.conftest import Lab

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
TRANSPORT = {"alpha": "slurm_cli", "beta": "slurm_rest", "gamma": "slurm_cli"}


def start_slurm_agent(s: Stack, lab: Lab, cluster: str, *, backend: str | None = None,
                      poll: float = 1.0, hook: bool = True, **env: str) -> Agent:
    c = lab.cluster(cluster)
    args = ("--backend", backend or TRANSPORT[cluster])
    if hook:
        args += ("--wake-dir", c["wake_dir"])
    job_root = lab.job_root(cluster, s.home / f"jobs-{cluster}")
    return s.start_agent(cluster=cluster, poll=poll, args=args,
                         **{**lab.agent_env(cluster, job_root), **env})


@pytest.fixture
def bh_stack(tmp_path: Path) -> Iterator[tuple[Stack, Client]]:
    with stack(tmp_path, agent=False) as s, Client(s.server.url, s.admin, timeout=15) as bh:
        yield s, bh


def sacct_tagged(lab: Lab, cluster: str, tag: str) -> list[str]:
    out = lab.run(cluster, "sacct", "--noheader", "--parsable2", "--allocations",
                  "--format=JobIDRaw,Comment", "--starttime=now-1days")
    return [line.split("|")[0] for line in out.splitlines() if line.split("|")[-1] == tag]


def test_alpha_and_beta_run_concurrently_through_one_server(
        bh_stack: tuple[Stack, Client], lab: Lab) -> None:
    s, bh = bh_stack
    for cluster in ("alpha", "beta"):
        start_slurm_agent(s, lab, cluster)
    specs = [JobSpec(cluster=cluster, name=f"hello-{i}",
                     command=("sh", "-c", 'echo "$1 on $SLURM_CLUSTER_NAME"', "sh", f"job{i}"))
             for cluster in ("alpha", "beta") for i in range(6)]
    jobs = bh.submit_many(specs)
    refused = bh.submit(JobSpec(cluster="alpha", command=("true",),
                                scheduler_options=("--array=1-3",)))
    done = [bh.wait(j.id, until="terminal", timeout=120) for j in jobs]
    refused = bh.wait(refused.id, until="terminal", timeout=60)
    assert refused.state is JobState.FAILED and refused.native_id is None
    assert "--array is not allowed" in (refused.reason or "")  # failed once, not retried
    assert Counter(j.state for j in done) == Counter({JobState.SUCCEEDED: 12})
    for job, spec in zip(done, specs, strict=True):
        assert job.usage is not None and job.usage.cores >= 1, job
        first = int(job.native_id or 0)
        assert (first >= 100000) == (spec.cluster == "beta")  # beta's ids start at 100000
        data, _, _ = bh.read_logs(job.id)
        assert data.decode() == f"{spec.command[-1]} on {spec.cluster}\n"
    shown = subprocess.run(
        [sys.executable, "-m", "bridgehead.cli.main", "clusters", "--json"],
        env=env_for(s.home, BRIDGEHEAD_URL=s.server.url, BRIDGEHEAD_TOKEN=s.admin),
        capture_output=True, text=True, check=True)
    clusters = {c["name"]: c for c in json.loads(shown.stdout)}
    assert clusters["alpha"]["online"] and clusters["beta"]["online"]
    assert {clusters["alpha"]["backend"], clusters["beta"]["backend"]} == {"slurm_cli",
                                                                          "slurm_rest"}


@pytest.mark.parametrize("cluster", ["alpha", "beta", "gamma"])
def test_agent_killed_right_after_sbatch_submits_exactly_once(
        bh_stack: tuple[Stack, Client], lab: Lab, cluster: str) -> None:
    """The agent dies right after the scheduler took the first job of a claimed batch: that
    job is on Slurm, the others not yet, and all are 'submitting' on the server."""
    s, bh = bh_stack
    jobs = bh.submit_many([JobSpec(cluster=cluster, command=("sh", "-c", "sleep 2; exit 4"))] * 3)
    doomed = start_slurm_agent(s, lab, cluster, BRIDGEHEAD_FAILPOINT="after-backend-submit")
    eventually(lambda: not doomed.alive, 60, what="the agent to kill itself after sbatch")
    assert doomed.popen is not None and doomed.popen.returncode == -signal.SIGKILL
    assert {bh.get(j.id).state for j in jobs} == {JobState.SUBMITTING}  # no native id known
    eventually(lambda: any(sacct_tagged(lab, cluster, j.id) for j in jobs), 30,
               what="sacct to show the job the scheduler took")
    start_slurm_agent(s, lab, cluster)
    done = [bh.wait(j.id, until="terminal", timeout=120) for j in jobs]
    assert [(j.state, j.exit_code) for j in done] == [(JobState.FAILED, 4)] * 3  # true ends
    for job in done:  # ONE Slurm job per Bridgehead job
        assert eventually(lambda job=job: sacct_tagged(lab, cluster, job.id), 30,
                          what="sacct to list the job") == [job.native_id]


@pytest.mark.parametrize("cluster", ["alpha", "beta", "gamma"])
def test_slurmctld_restart_mid_run_loses_nothing(bh_stack: tuple[Stack, Client], lab: Lab,
                                                cluster: str) -> None:
    s, bh = bh_stack
    # Slurm commands retry a missing controller for ~9 s before they fail: a 4 s timeout
    # makes the agent meet the outage as timeouts, the harder case for submissions (a timed
    # out sbatch may or may not have queued the job)
    agent = start_slurm_agent(s, lab, cluster, BRIDGEHEAD_SLURM__COMMAND_TIMEOUT_S="4")
    jobs = bh.submit_many([JobSpec(cluster=cluster, command=(
        "sh", "-c", "echo started; sleep 4"))] * 2)
    # really running on the node: a job slurmctld has started but whose launch message it
    # had not yet sent when it died stays "running" there for good (a Slurm matter)
    eventually(lambda: all(bh.read_logs(j.id)[0] == b"started\n" for j in jobs), 60,
               what="both jobs to start")
    lab.lab_cmd("stop-ctld", cluster)
    try:
        late = bh.submit(JobSpec(cluster=cluster, command=("true",)))  # meets the outage
        time.sleep(10)  # the agent sees the controller gone and changes nothing
        assert all(not bh.get(j.id).terminal for j in jobs)
        assert bh.get(late.id).state is JobState.SUBMITTING
    finally:
        lab.lab_cmd("start-ctld", cluster)
    done = [bh.wait(j.id, until="terminal", timeout=180) for j in [*jobs, late]]
    assert [j.state for j in done] == [JobState.SUCCEEDED] * 3
    assert agent.alive
    assert re.search(r"scheduler unavailable", agent.output())
    # a listing lags a moment behind a job's end: wait for it to show, then count
    assert len(eventually(lambda: sacct_tagged(lab, cluster, late.id), 30,
                          what="sacct to list the late job")) == 1


@pytest.mark.parametrize("cluster", ["alpha", "gamma"])
def test_epilog_hook_reports_a_job_end_long_before_the_poll_interval(
        bh_stack: tuple[Stack, Client], lab: Lab, cluster: str) -> None:
    """With a 60 s poll interval, only the hook can make the server know within seconds
    (gamma's hook runs in its chroot and reaches the host's agent through the lab's relay)."""
    s, bh = bh_stack
    start_slurm_agent(s, lab, cluster, poll=60.0)
    job = bh.submit(JobSpec(cluster=cluster, command=("sleep", "1")))
    done = bh.wait(job.id, until="terminal", timeout=40)
    assert done.state is JobState.SUCCEEDED, "the end was not pushed: only a poll would see it"
