"""The pool behind an ``emr`` cluster: exactly once across kill -9 (a real SIGKILL of a process
driving the backend, at each boundary), reuse across a workflow's phases, automatic recovery
from a cluster's death, scaling on queue depth with throttling injected."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from bridgehead.backends.emr_pool import ClusterView, PoolRecord, place, retire, wanted
from bridgehead.domain.jobs import JobSpec, JobState
from bridgehead.errors import BackendUnavailable
from bridgehead.testing.emr_sim import EmrSimulator
from tests.emr.conftest import backend, ended, settings, until

CRASHER = """\
import asyncio, sys
from pathlib import Path
from bridgehead.backends.emr import EmrBackend
from bridgehead.config import EmrSettings
from bridgehead.domain.jobs import JobSpec

async def main():
    emr = EmrBackend(EmrSettings.model_validate_json(sys.argv[1]), state_dir=Path(sys.argv[2]),
                     failpoint=sys.argv[3])
    await emr.submit("crash-1", JobSpec(cluster="emr", command=("sleep", "0.5")))
    for _ in range(600):
        await emr.poll(["crash-1"])
        await asyncio.sleep(0.05)

asyncio.run(main())
"""


def step(*argv: str, run: str | None = None) -> JobSpec:
    return JobSpec(cluster="emr", command=argv, labels={"run": run} if run else {})


def steps_named(sim: EmrSimulator, name: str) -> list[object]:
    return [s for c in sim.clusters() for s in c.steps if s.name == name]


@pytest.mark.parametrize("failpoint", ["emr-after-run-job-flow", "emr-after-add-steps"])
async def test_kill_9_between_the_call_and_its_record(sim: EmrSimulator, tmp_path: Path,
                                                      failpoint: str) -> None:
    """SIGKILL right after RunJobFlow (the cluster is adopted by its tag, not created again)
    or right after AddJobFlowSteps (the step is found by its name: one step per attempt)."""
    given = settings(sim).model_dump_json()
    crashed = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", CRASHER, given, str(tmp_path), failpoint],
        timeout=120, capture_output=True)
    assert crashed.returncode == -9, crashed.stderr.decode()[-2000:]
    assert sim.calls["RunJobFlow"] == 1
    emr = backend(sim, tmp_path)
    assert await emr.find(["crash-1"]) == {"crash-1": ["crash-1"]}
    done = await until(emr, ["crash-1"], ended(["crash-1"]))
    assert done["crash-1"].state is JobState.SUCCEEDED, done
    assert sim.calls["RunJobFlow"] == 1  # adopted, never created twice
    assert len(steps_named(sim, "bh:crash-1")) == 1  # one step for the attempt
    assert emr.record.clusters == {sim.clusters()[0].id: 1}


async def test_a_lost_record_is_rebuilt_from_step_names(sim: EmrSimulator,
                                                        tmp_path: Path) -> None:
    first = backend(sim, tmp_path / "a")
    await first.submit("orphan-1", step("sleep", "0.3"))
    await until(first, ["orphan-1"], lambda s: s["orphan-1"].state is JobState.RUNNING)
    again = backend(sim, tmp_path / "b")  # an empty state dir: only EMR knows
    assert await again.find(["orphan-1", "other-1"]) == {"orphan-1": ["orphan-1"],
                                                         "other-1": []}
    done = await until(again, ["orphan-1"], ended(["orphan-1"]))
    assert done["orphan-1"].state is JobState.SUCCEEDED
    assert sim.calls["RunJobFlow"] == 1 and len(steps_named(sim, "bh:orphan-1")) == 1


async def test_a_four_phase_run_reuses_one_cluster_and_two_pools_use_two(
        sim: EmrSimulator, tmp_path: Path) -> None:
    small = backend(sim, tmp_path, pool="small")
    for phase in range(4):
        tag = await small.submit(f"r1-phase{phase}", step("true", run="r1"))
        assert (await until(small, [tag], ended([tag])))[tag].state is JobState.SUCCEEDED
    assert sim.calls["RunJobFlow"] == 1
    assert {s.name for s in sim.clusters()[0].steps} == {f"bh:r1-phase{i}" for i in range(4)}
    big = backend(sim, tmp_path, pool="big", step_concurrency=8)
    for phase in range(4):  # phases alternate between the pools
        emr = (small, big)[phase % 2]
        tag = await emr.submit(f"r2-phase{phase}", step("true", run="r2"))
        assert (await until(emr, [tag], ended([tag])))[tag].state is JobState.SUCCEEDED
    assert sim.calls["RunJobFlow"] == 2
    names = {c.name: {s.name for s in c.steps} for c in sim.clusters()}
    assert names["bh-big-g1"] == {"bh:r2-phase1", "bh:r2-phase3"}
    assert {"bh:r2-phase0", "bh:r2-phase2"} <= names["bh-small-g1"]


async def test_a_dead_cluster_loses_its_steps_to_the_infrastructure_in_one_cycle(
        sim: EmrSimulator, tmp_path: Path) -> None:
    emr = backend(sim, tmp_path, max_clusters=2)
    tags = [await emr.submit(f"spot-{i}", step("sleep", "60", run="r")) for i in range(3)]
    await until(emr, tags, lambda s: all(s[t].state is JobState.RUNNING for t in tags))
    dead = sim.clusters()[0].id
    sim.kill(dead, "INSTANCE_FAILURE", "Spot instances were reclaimed")
    answer = await emr.poll(tags)  # ONE cycle
    for tag in tags:
        assert answer[tag].state is JobState.LOST and answer[tag].infrastructure, answer[tag]
        assert "INSTANCE_FAILURE" in (answer[tag].reason or "")
        assert dead in (answer[tag].reason or "")
    assert sim.calls["RunJobFlow"] == 2  # the replacement, started in that cycle
    retries = [await emr.submit(f"{t}.a2", step("true", run="r")) for t in tags]
    done = await until(emr, retries, ended(retries))
    assert all(done[t].state is JobState.SUCCEEDED for t in retries), done
    assert {s.name for s in sim.clusters()[1].steps} == {f"bh:{t}" for t in retries}


async def test_a_cluster_ended_by_hand_loses_steps_but_not_to_the_infrastructure(
        sim: EmrSimulator, tmp_path: Path) -> None:
    emr = backend(sim, tmp_path)
    tag = await emr.submit("byhand-1", step("sleep", "60"))
    await until(emr, [tag], lambda s: s[tag].state is JobState.RUNNING)
    sim.kill(sim.clusters()[0].id, "USER_REQUEST", "Terminated by user request")
    lost = (await emr.poll([tag]))[tag]
    assert lost.state is JobState.LOST and not lost.infrastructure, lost


async def test_fan_out_grows_the_pool_to_its_max_and_shrinks_it_when_idle_despite_throttling(
        sim: EmrSimulator, tmp_path: Path) -> None:
    emr = backend(sim, tmp_path, step_concurrency=8, min_clusters=1, max_clusters=3,
                  idle_timeout_s=1.0)
    tags = [await emr.submit(f"bin-{i}", step("sleep", "0.3", run="fan")) for i in range(64)]
    most, throttled, answer = 0, 0, {}
    for cycle in range(2000):
        if cycle % 5 == 0:
            sim.throttle(1)
        try:
            answer = await emr.poll(tags)
        except BackendUnavailable:
            throttled += 1
        alive = sim.clusters("STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING")
        most = max(most, len(alive))
        assert all(len([s for s in c.steps if s.state == "RUNNING"]) <= 8 for c in alive)
        if ended(tags)(answer) and len(alive) == 1:
            break
        await asyncio.sleep(0.05)
    assert throttled > 0 and most == 3
    assert all(answer[t].state is JobState.SUCCEEDED for t in tags), {
        t: s for t, s in answer.items() if s.state is not JobState.SUCCEEDED}
    assert len(sim.clusters("STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING")) == 1
    assert sim.calls["RunJobFlow"] == 3 and sim.calls["DescribeStep"] == 0
    assert sum(len(steps_named(sim, f"bh:{t}")) for t in tags) == 64


def test_placement_prefers_the_runs_cluster_and_spreads_a_fan_out() -> None:
    views = [ClusterView(id="a", generation=1, state="WAITING"),
             ClusterView(id="b", generation=2, state="RUNNING", active=3),
             ClusterView(id="c", generation=3, state="STARTING")]
    assert place([("t1", "r")], views, 4, {"r": "b"}) == {"b": ["t1"]}
    plan = place([(f"t{i}", "r") for i in range(9)], views, 4, {"r": "b"})
    assert plan == {"b": ["t0"], "a": ["t1", "t2", "t3", "t4"]}  # c is still booting
    assert wanted(queued=17, active=0, concurrency=8, low=0, high=3) == 3
    assert wanted(queued=0, active=0, concurrency=8, low=1, high=3) == 1
    idle = {"a": 0.0, "b": 0.0}
    assert retire(views, idle, 100.0, 10.0, keep=1, placed=set()) == ["a"]
    assert retire(views, idle, 100.0, 10.0, keep=1, placed={"a"}) == []


async def test_a_throttled_add_puts_its_steps_back_in_the_queue(sim: EmrSimulator,
                                                                tmp_path: Path) -> None:
    emr = backend(sim, tmp_path)
    tags = [await emr.submit(f"thr-{i}", step("true")) for i in range(3)]
    await emr.poll(tags)  # the cluster is made; the steps wait for it to boot
    while not sim.clusters("WAITING"):
        await asyncio.sleep(0.05)
    sim.throttle(1, "AddJobFlowSteps")
    with pytest.raises(BackendUnavailable, match="throttled AddJobFlowSteps"):
        await emr.poll(tags)
    assert all(emr.record.steps[t]["cluster"] is None for t in tags)  # queued again
    done = await until(emr, tags, ended(tags))
    assert all(done[t].state is JobState.SUCCEEDED for t in tags)
    assert all(len(steps_named(sim, f"bh:{t}")) == 1 for t in tags)


async def test_a_refused_run_job_flow_backs_off_and_statuses_still_flow(
        sim: EmrSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    emr = backend(sim, tmp_path)
    sim.refuse("RunJobFlow", "Invalid InstanceProfile: EMR_EC2_DefaultRole.")
    tag = await emr.submit("waits-1", step("true"))
    for _ in range(5):
        assert (await emr.poll([tag]))[tag].state is JobState.SUBMITTED
    assert sim.calls["RunJobFlow"] == 1 and not sim.clusters()  # asked once, then waits
    assert "Invalid InstanceProfile" in caplog.text and emr.record.intents == {}


async def test_a_cluster_with_an_active_step_is_never_retired(sim: EmrSimulator,
                                                              tmp_path: Path) -> None:
    emr = backend(sim, tmp_path, idle_timeout_s=0.3)
    tag = await emr.submit("long-1", step("sleep", "3"))
    done = await until(emr, [tag], ended([tag]), every=0.05)  # far past the idle timeout
    assert done[tag].state is JobState.SUCCEEDED
    assert sim.calls["TerminateJobFlows"] == 0
    await until(emr, [], lambda _: not sim.clusters("RUNNING", "WAITING"))  # then idle: gone
    assert sim.calls["TerminateJobFlows"] == 1 and sim.calls["RunJobFlow"] == 1


def test_the_record_journals_submits_and_survives_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "emr" / "p.json"
    record = PoolRecord(path)
    record.add_step("a", {"queued_at": 1.0, "cluster": None, "final": None})
    record.add_step("b", {"queued_at": 2.0, "cluster": None, "final": None})
    with open(record.journal, "a") as journal:
        journal.write('{"tag": "c", "entr')  # a crash mid-append: that submit never returned
    again = PoolRecord(path)
    assert again.queued() == ["a", "b"] and again.journal.read_text() == ""  # folded
    again.add_step("d", {"queued_at": 3.0, "cluster": None, "final": None})
    assert PoolRecord(path).queued() == ["a", "b", "d"]
