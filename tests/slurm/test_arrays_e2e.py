"""Job arrays on a real Slurm cluster through a real server and agent, with either backend
(slurm_cli, and slurm_rest on v0.0.38 and v0.0.40-42): ONE submission of the array, one
Bridgehead job per element with its own state, exit code, usage and logs, a parent that ends
with its last element, cancels of one element and of the whole array, and exactly one array
in accounting after the agent dies between the submit and its report."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bridgehead.client import Client
from bridgehead.domain.jobs import Job, JobSpec, JobState
from tests.procs import Agent, Stack, env_for, eventually, stack
from tests.slurm.conftest import Lab, Target
from tests.slurm.test_agent_e2e import start_slurm_agent
from tests.slurm.test_rest_versions import token_file

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
S = JobState
TARGETS = [Target("slurm_cli", "beta"), Target("slurm_cli", "gamma"),
           Target("slurm_rest", "beta"), Target("slurm_rest", "gamma")]
"""Slurm 22.05 and 24.11, 8 CPUs each, through either backend (REST: beta speaks v0.0.38,
gamma the newest it serves, v0.0.42). Waits are generous: the lab is shared, and other tests
queue hundreds of jobs there."""
V40 = Target("slurm_rest", "gamma", {"rest_version": "v0.0.40"})
"""v0.0.40 (and 41) read and write some fields otherwise than 42: forced once, for the test
that reads every element's end."""
SCRIPT = """#!/bin/sh
echo "element $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_JOB_ID"
echo "stderr $SLURM_ARRAY_TASK_ID" >&2
[ $((SLURM_ARRAY_TASK_ID % 10)) -eq 7 ] && exit 3
exit 0
"""


@pytest.fixture
def bh_stack(tmp_path: Path) -> Iterator[tuple[Stack, Client]]:
    with stack(tmp_path, agent=False) as s, Client(s.server.url, s.admin, timeout=15) as bh:
        yield s, bh


def start_agent(s: Stack, lab: Lab, target: Target, tmp_path: Path, **env: str) -> Agent:
    """An agent of ``target``'s backend on its cluster (a REST agent with the lab's token
    where the cluster's slurmrestd wants one, and the version the target forces)."""
    if target.kind == "slurm_rest" and (token := token_file(
            lab, target.cluster, tmp_path)) is not None:
        env["BRIDGEHEAD_SLURM__REST_TOKEN_FILE"] = str(token)
    if version := target.options.get("rest_version"):
        env["BRIDGEHEAD_SLURM__REST_VERSION"] = version
    return start_slurm_agent(s, lab, target.cluster, backend=target.kind, **env)


def elements(bh: Client, parent_id: str) -> list[Job]:
    """The array's elements in index order (a listing is in id order: ``<parent>_10`` comes
    before ``<parent>_2``)."""
    jobs, _ = bh.list_jobs(parent=parent_id, limit=1000)
    return sorted(jobs, key=lambda j: j.array_index or 0)


def sacct_arrays(lab: Lab, cluster: str, tag: str) -> set[str]:
    """The array ids (JOBID of JOBID_INDEX) accounting holds under ``tag``."""
    out = lab.run(cluster, "sacct", "--noheader", "--parsable2", "--allocations",
                  "--format=JobID,Comment", "--starttime=now-1days")
    return {line.split("|")[0].partition("_")[0] for line in out.splitlines()
            if line.split("|")[-1] == tag}


@pytest.mark.parametrize("target", [*TARGETS, V40], ids=lambda t: t.id)
def test_a_100_element_array_has_100_jobs_with_their_own_ends_and_logs(
        bh_stack: tuple[Stack, Client], lab: Lab, target: Target, tmp_path: Path) -> None:
    s, bh = bh_stack
    cluster = target.cluster
    agent = start_agent(s, lab, target, tmp_path)
    parent = bh.submit(JobSpec(cluster=cluster, script=SCRIPT, array="0-99", name="arr"))
    assert parent.elements == 100
    done = bh.wait(parent.id, until="terminal", timeout=600)
    members = elements(bh, parent.id)
    assert [e.array_index for e in members] == list(range(100))
    ends = {e.array_index: (e.state, e.exit_code) for e in members}
    assert ends == {i: (S.FAILED, 3) if i % 10 == 7 else (S.SUCCEEDED, 0) for i in range(100)}
    native = done.native_id
    assert native and all(e.native_id == f"{native}_{e.array_index}" for e in members)
    assert (done.state, done.exit_code) == (S.FAILED, 3)
    assert "10 of 100 array elements did not succeed" in (done.reason or "")
    assert all(e.usage is not None and e.usage.cores >= 1 for e in members)
    assert done.usage is not None
    assert done.usage.core_seconds == pytest.approx(
        sum(e.usage.core_seconds for e in members if e.usage))
    for e in members[::9]:
        out, _, _ = bh.read_logs(e.id)
        assert out.decode() == f"element {e.array_index} of {native}\n"
        err, _, _ = bh.read_logs(e.id, stream="stderr")
        assert err.decode() == f"stderr {e.array_index}\n"
    assert eventually(lambda: sacct_arrays(lab, cluster, parent.id), 30,
                      what="sacct to list the array") == {native}  # ONE sbatch
    assert "sbatch refused" not in agent.output()
    assert "slurmrestd refused" not in agent.output()


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.id)
def test_cancel_one_element_then_the_whole_array(bh_stack: tuple[Stack, Client],
                                                 lab: Lab, target: Target,
                                                 tmp_path: Path) -> None:
    s, bh = bh_stack
    cluster = target.cluster
    start_agent(s, lab, target, tmp_path)
    script = "#!/bin/sh\necho up $SLURM_ARRAY_TASK_ID\nsleep 60\n"
    # the throttle: at most 2 elements run at once, 4 and 5 wait
    parent = bh.submit(JobSpec(cluster=cluster, script=script, array="0-5%2"))
    running = f"{parent.id}_0"
    eventually(lambda: bh.read_logs(running)[0] == b"up 0\n", 300, what="element 0 to run")
    bh.cancel(running)
    bh.cancel(f"{parent.id}_4")  # still pending in Slurm
    for one in (running, f"{parent.id}_4"):
        assert bh.wait(one, until="terminal", timeout=120).state is S.CANCELLED
    rest = [e for e in elements(bh, parent.id) if e.array_index not in (0, 4)]
    assert not any(e.terminal for e in rest)
    assert not bh.get(parent.id).terminal
    bh.cancel(parent.id)
    done = bh.wait(parent.id, until="terminal", timeout=120)
    assert done.state is S.CANCELLED
    assert Counter(e.state for e in elements(bh, parent.id)) == Counter({S.CANCELLED: 6})
    # nothing of it left in Slurm's queue: a cancelled element that was running may show
    # as CG (completing: its processes being killed) for a moment on a busy machine
    eventually(lambda: lab.run(cluster, "squeue", "--noheader",
                               f"--jobs={done.native_id}").strip() == "", 60,
               what="Slurm's queue to hold nothing of the cancelled array")


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.id)
def test_agent_killed_after_submit_leaves_one_array(bh_stack: tuple[Stack, Client],
                                                    lab: Lab, target: Target,
                                                    tmp_path: Path) -> None:
    s, bh = bh_stack
    cluster = target.cluster
    parent = bh.submit(JobSpec(cluster=cluster, script=SCRIPT, array="5-8"))
    doomed = start_agent(s, lab, target, tmp_path, BRIDGEHEAD_FAILPOINT="after-backend-submit")
    eventually(lambda: not doomed.alive, 60, what="the agent to kill itself after submit")
    assert doomed.popen is not None and doomed.popen.returncode == -signal.SIGKILL
    assert bh.get(parent.id).state is S.SUBMITTING  # the server never heard the native id
    start_agent(s, lab, target, tmp_path)
    done = bh.wait(parent.id, until="terminal", timeout=300)
    assert (done.state, done.exit_code) == (S.FAILED, 3)  # element 7
    members = elements(bh, parent.id)
    assert [(e.array_index, e.state) for e in members] == [
        (5, S.SUCCEEDED), (6, S.SUCCEEDED), (7, S.FAILED), (8, S.SUCCEEDED)]
    assert all(e.native_id == f"{done.native_id}_{e.array_index}" for e in members)
    assert eventually(lambda: sacct_arrays(lab, cluster, parent.id), 30,
                      what="sacct to list the array") == {done.native_id}


FANOUT = """\
name: fan
defaults: {cluster: CLUSTER}
steps:
  - id: each
    foreach: {range: 200}
    command: [sh, -c, 'echo "item $1 as $SLURM_ARRAY_TASK_ID"', sh, "{{ item }}"]
  - {id: after, needs: [each], command: [echo, done]}
"""


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.id)
def test_a_200_item_fanout_is_one_submission(bh_stack: tuple[Stack, Client], lab: Lab,
                                             target: Target, tmp_path: Path) -> None:
    s, bh = bh_stack
    cluster = target.cluster
    start_agent(s, lab, target, tmp_path)
    eventually(lambda: any(c["name"] == cluster for c in bh.clusters()), 60,
               what="the agent's first heartbeat")  # the runner asks what it runs
    run = bh.start_run(FANOUT.replace("CLUSTER", cluster))
    done = bh.wait_run(run["id"], timeout=600)
    jobs, _ = bh.list_jobs(labels={"run": run["id"]}, limit=1000)
    assert done["state"] == "succeeded", [
        (j.id, j.state.value, j.exit_code, j.reason, j.native_id) for j in jobs
        if j.state is not S.SUCCEEDED][:20]
    [parent] = [j for j in jobs if j.elements is not None]
    assert parent.elements == 200 and parent.spec.array == "0-199"
    tasks = [t for t in done["tasks"] if t["step"] == "each"]
    assert sorted(t["job_id"] for t in tasks) == sorted(f"{parent.id}_{i}" for i in range(200))
    for task in tasks[::37]:
        out, _, _ = bh.read_logs(task["job_id"])
        assert out.decode() == f"item {task['item']} as {task['index']}\n"
    assert eventually(lambda: sacct_arrays(lab, cluster, parent.id), 30,
                      what="sacct to list the array") == {parent.native_id}
    tagged = {j.id for j in jobs if j.parent_id is None}  # the array and 'after'
    assert len(tagged) == 2


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.id)
def test_an_arrays_own_output_paths_are_each_elements_log(
        bh_stack: tuple[Stack, Client], lab: Lab, target: Target, tmp_path: Path) -> None:
    s, bh = bh_stack
    cluster = target.cluster
    start_agent(s, lab, target, tmp_path)
    work = lab.job_root(cluster, tmp_path) / "work"  # seen by gamma's chroot too
    work.mkdir(parents=True)
    script = ("#!/bin/sh\n#SBATCH --array=1-3\n#SBATCH -o out_%A_%a.log\n"
              "echo \"mine is $SLURM_ARRAY_TASK_ID\"\n")
    parent = bh.submit(JobSpec(cluster=cluster, script=script, working_dir=str(work)))
    assert parent.elements == 3  # the directive made it an array
    done = bh.wait(parent.id, until="terminal", timeout=300)
    assert done.state is S.SUCCEEDED
    for e in elements(bh, parent.id):
        assert (work / f"out_{done.native_id}_{e.array_index}.log").exists()
        out, _, _ = bh.read_logs(e.id)
        assert out.decode() == f"mine is {e.array_index}\n"


def test_the_cli_submits_lists_and_cancels_an_array(bh_stack: tuple[Stack, Client], lab: Lab,
                                                    tmp_path: Path) -> None:
    s, bh = bh_stack
    start_slurm_agent(s, lab, "beta", backend="slurm_cli")
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\necho up $SLURM_ARRAY_TASK_ID\nsleep 120\n")
    env = env_for(s.home, BRIDGEHEAD_URL=s.server.url, BRIDGEHEAD_TOKEN=s.admin)

    def cli(*argv: str) -> Any:
        done = subprocess.run([sys.executable, "-m", "bridgehead.cli.main", *argv], env=env,
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    parent = cli("submit", "--cluster", "beta", "--array", "0-3%2", "--script", str(script),
                 "--workdir", str(lab.job_root("beta", tmp_path)), "--json")
    assert parent["elements"] == 4 and parent["spec"]["array"] == "0-3%2"
    listed = cli("list", "--parent", parent["id"], "--json")["jobs"]
    assert sorted(j["array_index"] for j in listed) == [0, 1, 2, 3]
    first = f"{parent['id']}_0"
    eventually(lambda: bh.read_logs(first)[0] == b"up 0\n", 300, what="element 0 to run")
    [one] = cli("cancel", first, "--json")["jobs"]  # shown as it is a few seconds later
    assert one["state"] == "cancelled" or one["cancel_requested"]
    assert bh.wait(first, until="terminal", timeout=120).state is S.CANCELLED
    assert not bh.get(f"{parent['id']}_1").terminal
    [whole] = cli("cancel", parent["id"], "--json")["jobs"]
    assert bh.wait(whole["id"], until="terminal", timeout=120).state is S.CANCELLED
    assert {j.state for j in elements(bh, parent["id"])} == {S.CANCELLED}


def test_cancelling_a_run_cancels_its_fanout_array(bh_stack: tuple[Stack, Client],
                                                   lab: Lab) -> None:
    s, bh = bh_stack
    start_slurm_agent(s, lab, "beta", backend="slurm_cli")
    eventually(lambda: any(c["name"] == "beta" for c in bh.clusters()), 60,
               what="the agent's first heartbeat")
    text = FANOUT.replace("CLUSTER", "beta").replace("range: 200", "range: 20").replace(
        'echo "item $1 as $SLURM_ARRAY_TASK_ID"', 'echo "item $1"; sleep 120')
    run = bh.start_run(text)
    first = eventually(lambda: [t for t in bh.get_run(run["id"])["tasks"]
                                if t["step"] == "each" and t["job_id"]], 60,
                       what="the fan-out to be submitted")
    eventually(lambda: bh.read_logs(first[0]["job_id"])[0] == b"item 0\n", 300,
               what="its first element to run")  # the others run or wait in Slurm
    bh.cancel_run(run["id"])
    done = bh.wait_run(run["id"], timeout=300)
    assert done["state"] == "cancelled"
    parent_id = first[0]["job_id"].rpartition("_")[0]
    assert {e.state for e in elements(bh, parent_id)} == {S.CANCELLED}
    assert bh.wait(parent_id, until="terminal", timeout=60).state is S.CANCELLED
