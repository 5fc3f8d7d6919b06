"""The backend contract on EMR (moto + the simulator, whose steps run for real on this host):
success with logs and estimated usage, a non-zero exit, cancel, an unknown id, hostile
arguments verbatim, a Spark application's spark-submit arguments, bad input refused with a
clear error, and the batched poll's request count."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from bridgehead.domain.jobs import JobSpec, JobState, Resources
from bridgehead.domain.spark import SparkApp
from bridgehead.errors import InvalidSpec, SubmitRejected
from bridgehead.testing.emr_sim import EmrSimulator
from tests.emr.conftest import backend, ended, until

HOSTILE = ("a b", "$(touch /tmp/bh-emr-pwned)", "; rm -rf /", "'\"`", "--conf", "-e",
           "ünï*?", "line\nbreak", "", "X=Y")
PRINT_ARGV = "import json, os, sys; print(json.dumps([sys.argv[1:], os.environ.get('BRIDGEHEAD_JOB_ID'), os.environ.get('COLOUR')])); print('err line', file=sys.stderr)"  # noqa: E501


def command(*argv: str, **kw: object) -> JobSpec:
    return JobSpec(cluster="emr", command=argv, **kw)  # type: ignore[arg-type]


async def test_success_logs_estimated_usage_and_hostile_arguments(sim: EmrSimulator,
                                                                  tmp_path: Path) -> None:
    emr = backend(sim, tmp_path)
    spec = command(sys.executable, "-c", PRINT_ARGV, *HOSTILE, env={"COLOUR": "blue"},
                   resources=Resources(cores=2))
    tag = await emr.submit("ok-1", spec)
    assert tag == "ok-1"
    assert (await emr.poll([tag]))[tag].state is JobState.SUBMITTED  # queued: booting
    done = (await until(emr, [tag], ended([tag])))[tag]
    assert done.state is JobState.SUCCEEDED and done.exit_code == 0, done
    out = await emr.read_log(tag, "stdout", 0, 1 << 20)
    assert json.loads(out) == [list(HOSTILE), "ok-1", "blue"]
    assert await emr.read_log(tag, "stderr", 0, 1 << 20) == b"err line\n"
    assert await emr.read_log(tag, "stdout", 3, 4) == out[3:7]
    assert not await asyncio.to_thread(Path("/tmp/bh-emr-pwned").exists)
    usage = done.usage
    assert usage is not None and usage.estimated and usage.cores == 2
    assert usage.elapsed_s > 0 and usage.instance_hours is not None and usage.instance_hours > 0
    step = sim.clusters()[0].steps[0]
    assert step.name == "bh:ok-1" and step.action_on_failure == "CONTINUE"
    assert step.jar == "command-runner.jar"


async def test_non_zero_exit_fails_with_emr_failure_details(sim: EmrSimulator,
                                                            tmp_path: Path) -> None:
    emr = backend(sim, tmp_path)
    tag = await emr.submit("bad-1", command("sh", "-c", "echo oops >&2; exit 3"))
    done = (await until(emr, [tag], ended([tag])))[tag]
    assert done.state is JobState.FAILED, done
    assert done.exit_code is None and "EMR reports no exit code" in (done.reason or "")
    assert "stderr.gz" in (done.reason or "")  # the FailureDetails' log file
    assert await emr.read_log(tag, "stderr", 0, 100) == b"oops\n"


async def test_cancel_a_running_and_a_queued_step(sim: EmrSimulator, tmp_path: Path) -> None:
    emr = backend(sim, tmp_path, step_concurrency=1)
    running = await emr.submit("long-1", command("sleep", "60"))
    queued = await emr.submit("long-2", command("sleep", "60"))
    await until(emr, [running], lambda s: s[running].state is JobState.RUNNING)
    await emr.cancel([running, queued])
    done = await until(emr, [running, queued], ended([running, queued]))
    assert done[running].state is JobState.CANCELLED, done
    assert done[queued].state is JobState.CANCELLED, done
    assert sim.calls["CancelSteps"] >= 1
    states = {s.name: s.state for s in sim.clusters()[0].steps}
    assert states.get("bh:long-1") == "CANCELLED" and "bh:long-2" not in states


async def test_unknown_id_is_absent_never_succeeded(sim: EmrSimulator, tmp_path: Path) -> None:
    emr = backend(sim, tmp_path)
    tag = await emr.submit("known-1", command("true"))
    await until(emr, [tag], ended([tag]))
    answer = await emr.poll(["never-submitted", tag])
    assert "never-submitted" not in answer and answer[tag].state is JobState.SUCCEEDED
    assert await emr.find(["never-submitted", tag]) == {"never-submitted": [], tag: [tag]}
    assert await emr.read_log("never-submitted", "stdout", 0, 10) == b""


async def test_spark_application_runs_as_spark_submit(sim: EmrSimulator,
                                                      tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text("import json, os, sys\n"
                   "print(json.dumps([sys.argv[1:], os.environ.get('BRIDGEHEAD_JOB_ID')]))\n")
    emr = backend(sim, tmp_path)
    spec = JobSpec(cluster="emr", name="nightly", env={"COLOUR": "red"}, spark=SparkApp(
        application=str(app), arguments=HOSTILE, executors=3, executor_cores=2,
        conf={"spark.yarn.tags": "team-a", "spark.sql.shuffle.partitions": "8"}))
    tag = await emr.submit("spark-1", spec)
    done = (await until(emr, [tag], ended([tag])))[tag]
    assert done.state is JobState.SUCCEEDED, done
    assert json.loads(await emr.read_log(tag, "stdout", 0, 1 << 20)) == [list(HOSTILE), tag]
    assert done.usage is not None and done.usage.cores == 1 + 3 * 2
    args = sim.clusters()[0].steps[0].args
    assert args[:5] == ["spark-submit", "--master", "yarn", "--deploy-mode", "cluster"]
    assert "spark.yarn.tags=team-a,bh:spark-1" in args
    assert "spark.yarn.appMasterEnv.COLOUR=red" in args
    assert args[args.index("--name") + 1] == "nightly bh:spark-1"
    assert args[-len(HOSTILE) - 1:] == [str(app), *HOSTILE]


def test_bad_input_is_refused_with_a_clear_error(sim: EmrSimulator, tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match=r"spark\.master is Bridgehead's to set"):
        SparkApp(application="s3://b/app.py", conf={"spark.master": "local"})
    with pytest.raises(InvalidSpec, match=r"not a spark\.\* setting"):
        SparkApp(application="s3://b/app.py", conf={"hadoop.x": "1"})


@pytest.mark.parametrize(("spec", "message"), [
    (JobSpec(cluster="emr", script="#!/bin/sh\necho hi\n"), "script: an EMR step runs an argv"),
    (command("A=B", "x"), "contains '='"),
    (command("true", working_dir="/tmp"), "working_dir"),
    (command("true", resources=Resources(gpus=1)), "resources.gpus"),
    (command("true", resources=Resources(walltime_s=60)), "resources.walltime_s"),
    (command("true", resources=Resources(memory_mb=100)), "resources.memory_mb"),
    (JobSpec(cluster="emr", env={"A": "1"}, spark=SparkApp(
        application="s3://b/app.py", conf={"spark.executorEnv.A": "2"})),
     "spark.executorEnv.A: the job's env sets A"),
])
async def test_what_emr_cannot_honour_is_refused(sim: EmrSimulator, tmp_path: Path,
                                                 spec: JobSpec, message: str) -> None:
    emr = backend(sim, tmp_path)
    with pytest.raises(SubmitRejected, match=message):
        await emr.submit("refused-1", spec)
    assert emr.record.steps == {}


async def test_one_poll_is_one_list_per_cluster_plus_ended_steps(sim: EmrSimulator,
                                                                 tmp_path: Path) -> None:
    """ListClusters + ListSteps(active) per cluster + ListSteps by id (10 a call) for the
    steps that ended: never DescribeStep."""
    emr = backend(sim, tmp_path, step_concurrency=30)
    tags = [await emr.submit(f"many-{i}", command("sleep", "3")) for i in range(25)]
    await until(emr, tags, lambda s: all(s[t].state is JobState.RUNNING for t in tags))
    await emr.poll(tags)
    assert emr.cycle_calls == 2  # ListClusters + one ListSteps
    await until(emr, tags, ended(tags))
    assert sim.calls["DescribeStep"] == 0
    assert emr.api.by_action["ListSteps"] >= 3  # by id: 25 ended steps -> 3 calls of 10


async def test_without_a_log_uri_a_step_has_no_logs_and_its_end_is_not_held(
        sim: EmrSimulator, tmp_path: Path) -> None:
    emr = backend(sim, tmp_path, log_uri=None)
    tag = await emr.submit("nolog-1", command("echo", "hello"))
    done = (await until(emr, [tag], ended([tag])))[tag]
    assert done.state is JobState.SUCCEEDED
    assert await emr.read_log(tag, "stdout", 0, 100) == b""  # documented: none without it
    assert not sim.clusters()[0].log_uri  # RunJobFlow was sent without LogUri
