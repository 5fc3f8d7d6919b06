"""A real server and a real ``emr`` agent on the simulator: a 4-phase workflow run on one
cluster with its steps' logs, and a run whose cluster dies mid-phase with a spot reason,
twice (the second time during the recovery): each lost step runs again on a new cluster
(the server requeues an attempt lost to the infrastructure once, under its own cap) and the
run completes with no human."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridgehead.backends.emr_steps import tag_in
from bridgehead.client import Client
from bridgehead.domain.jobs import JobSpec, JobState
from bridgehead.domain.spark import SparkApp
from bridgehead.testing.emr_sim import EmrSimulator
from tests.emr.conftest import LOG_URI
from tests.procs import Agent, Stack, eventually, stack

pytestmark = pytest.mark.slow

PY = json.dumps(sys.executable)
SLEEP = json.dumps("import sys, time; time.sleep(float(sys.argv[1])); print('phase', sys.argv[2])")


@pytest.fixture
def bh_stack(tmp_path: Path) -> Iterator[tuple[Stack, Client]]:
    with stack(tmp_path, agent=False) as s, Client(s.server.url, s.admin, timeout=15) as bh:
        yield s, bh


def start_emr_agent(s: Stack, sim: EmrSimulator, **env: str) -> Agent:
    given = {"BRIDGEHEAD_EMR__ENDPOINT_URL": sim.endpoint_url,
             "BRIDGEHEAD_EMR__STEP_CONCURRENCY": "4", "BRIDGEHEAD_EMR__MAX_CLUSTERS": "2",
             "BRIDGEHEAD_EMR__IDLE_TIMEOUT_S": "60", "BRIDGEHEAD_EMR__LOG_URI": LOG_URI}
    return s.start_agent(cluster="emr", poll=0.2, args=("--backend", "emr"),
                         **{**given, **env})


def phases(seconds: dict[str, float], width: int = 1) -> str:
    """A workflow of sequential phases p0 -> p1 -> ...; each phase ``width`` steps."""
    out = "name: emr-phases\nparams: {}\ndefaults: {cluster: emr}\nsteps:\n"
    previous = "[]"
    for name, secs in seconds.items():
        fan = f"    foreach: {list(range(width))}\n" if width > 1 else ""
        out += (f"  - id: {name}\n    needs: {previous}\n{fan}"
                f"    command: [{PY}, -c, {SLEEP}, '{secs}', {name}]\n")
        previous = f"[{name}]"
    return out


def running_steps(sim: EmrSimulator, cluster: object) -> list[str]:
    """The tags of the steps running on ``cluster``."""
    return [tag_in(s.name) or "" for s in cluster.steps  # type: ignore[attr-defined]
            if s.state == "RUNNING"]


def test_a_four_phase_run_on_one_cluster_with_logs(bh_stack: tuple[Stack, Client],
                                                    sim: EmrSimulator) -> None:
    s, bh = bh_stack
    start_emr_agent(s, sim)
    run = bh.start_run(phases({"p0": 0, "p1": 0, "p2": 0, "p3": 0}))
    done = bh.wait_run(run["id"], timeout=120)
    assert done["state"] == "succeeded", done
    assert sim.calls["RunJobFlow"] == 1 and sim.calls["DescribeStep"] == 0
    jobs, _ = bh.list_jobs(labels={"run": run["id"]}, limit=100)
    assert len(jobs) == 4 and all(j.state is JobState.SUCCEEDED for j in jobs)
    assert all(j.usage is not None and j.usage.estimated for j in jobs)  # through the API
    last = next(j for j in jobs if j.spec.labels["step"] == "p3")
    out = eventually(lambda: bh.read_logs(last.id)[0], 30, what="p3's stdout")
    assert out == b"phase p3\n"


@pytest.mark.parametrize("failpoint", ["after-backend-submit", "emr-after-run-job-flow",
                                       "emr-after-add-steps"])
def test_agent_killed_at_each_boundary_makes_one_cluster_and_one_step_per_job(
        bh_stack: tuple[Stack, Client], sim: EmrSimulator, failpoint: str) -> None:
    s, bh = bh_stack
    jobs = bh.submit_many([JobSpec(cluster="emr", command=("true",))] * 2)
    doomed = start_emr_agent(s, sim, BRIDGEHEAD_FAILPOINT=failpoint)
    eventually(lambda: not doomed.alive, 60, what=f"the agent to kill itself ({failpoint})")
    assert doomed.popen is not None and doomed.popen.returncode == -signal.SIGKILL
    start_emr_agent(s, sim)
    done = [bh.wait(j.id, until="terminal", timeout=120) for j in jobs]
    assert [(j.state, j.exit_code) for j in done] == [(JobState.SUCCEEDED, 0)] * 2, done
    assert sim.calls["RunJobFlow"] == 1
    tags = [tag_in(st.name) for c in sim.clusters() for st in c.steps]
    assert sorted(tags) == sorted(j.id for j in jobs)  # one step per job


def test_a_cluster_dying_mid_phase_twice_is_recovered(bh_stack: tuple[Stack, Client],
                                                      sim: EmrSimulator) -> None:
    s, bh = bh_stack
    start_emr_agent(s, sim)
    run = bh.start_run(phases({"p0": 0, "p1": 4, "p2": 0}, width=2))
    first = eventually(lambda: next((c for c in sim.clusters("RUNNING")
                                     if len(running_steps(sim, c)) == 2
                                     and c.steps[-1].args[-1] == "p1"), None),
                       60, what="phase p1 running")
    sim.kill(first.id, "INSTANCE_FAILURE", "Spot instances were reclaimed")
    second = eventually(lambda: next((c for c in sim.clusters("RUNNING")
                                      if c.id != first.id
                                      and len(running_steps(sim, c)) == 2), None),
                        60, what="phase p1 running again on a new cluster")
    assert all(tag.endswith(".a2") for tag in running_steps(sim, second))
    sim.kill(second.id, "INSTANCE_FLEET_TIMEOUT", "fleet timed out")  # during the recovery
    done = bh.wait_run(run["id"], timeout=120)
    assert done["state"] == "succeeded", done
    assert sim.calls["RunJobFlow"] == 3
    jobs, _ = bh.list_jobs(labels={"run": run["id"]}, limit=100)
    p1 = [j for j in jobs if j.spec.labels["step"] == "p1"]
    assert len(p1) == 2 and all(j.state is JobState.SUCCEEDED and j.attempt == 3 for j in p1)
    tags = [tag_in(st.name) or "" for c in sim.clusters() for st in c.steps]
    for job in p1:  # one step per attempt, each on its own cluster
        assert sorted(t for t in tags if t.startswith(job.id)) == [
            job.id, f"{job.id}.a2", f"{job.id}.a3"]


def test_a_spark_application_through_the_server(bh_stack: tuple[Stack, Client],
                                                sim: EmrSimulator, tmp_path: Path) -> None:
    """The server routes a Spark job to the emr cluster (its agent says it runs Spark); the
    step is spark-submit on YARN; its arguments arrive verbatim."""
    s, bh = bh_stack
    start_emr_agent(s, sim)
    app = tmp_path / "app.py"
    app.write_text("import json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    eventually(lambda: any(c["backend"] == "emr" and c["online"] for c in bh.clusters()),
               30, what="the emr agent to report (the server routes Spark by its capacity)")
    job = bh.submit(JobSpec(cluster="emr", spark=SparkApp(
        application=str(app), arguments=("a b", "$HOME", "--x=1"), executors=2)))
    done = bh.wait(job.id, until="terminal", timeout=120)
    assert (done.state, done.exit_code) == (JobState.SUCCEEDED, 0), done
    assert done.usage is not None and done.usage.cores == 3 and done.usage.estimated
    out = eventually(lambda: bh.read_logs(job.id)[0], 30, what="the app's stdout")
    assert json.loads(out) == ["a b", "$HOME", "--x=1"]
    assert sim.clusters()[0].steps[0].args[0] == "spark-submit"
