"""The provider's pieces against a real Bridgehead server and local agent (no Airflow
scheduler): trigger serialization, two triggers at once, cleanup, reattach on re-execution,
the failure message, resources and caps, the provider's registration."""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.airflow.requirements import AIRFLOW_2, require_airflow
from tests.procs import Stack, eventually, stack

require_airflow()

from bridgehead.airflow._compat import AirflowException, TaskDeferred  # noqa: E402
from bridgehead.airflow.operators.bridgehead import (  # noqa: E402
    BridgeheadOperator,
    SlurmJobOperator,
    effective_resources,
    idempotency_key,
)
from bridgehead.airflow.triggers.bridgehead import BridgeheadJobTrigger  # noqa: E402
from bridgehead.client import Client  # noqa: E402
from bridgehead.domain.jobs import JobSpec, JobState  # noqa: E402

pytestmark = pytest.mark.airflow


@pytest.fixture(scope="module")
def bh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack(tmp_path_factory.mktemp("bh"), slots=8, poll=0.2) as running:
        yield running


@pytest.fixture
def conn(bh: Stack, monkeypatch: pytest.MonkeyPatch) -> Client:
    monkeypatch.setenv("AIRFLOW_CONN_BRIDGEHEAD_DEFAULT", json.dumps(
        {"conn_type": "bridgehead", "host": bh.server.url, "password": bh.admin}))
    client = Client(bh.server.url, bh.admin)
    yield client
    client.close()


def _ti(task_id: str = "t", try_number: int = 1, map_index: int = -1) -> SimpleNamespace:
    return SimpleNamespace(dag_id="dag1", run_id="manual__2026-11-30T00:00:00+00:00",
                           task_id=task_id, map_index=map_index, try_number=try_number)


def _context(ti: SimpleNamespace, params: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"ti": ti, "params": params or {}}


def _deferred_job_id(op: BridgeheadOperator, context: dict[str, Any]) -> str:
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    deferred = info.value
    assert isinstance(deferred.trigger, BridgeheadJobTrigger)
    assert deferred.timeout is not None  # always an explicit defer timeout
    return deferred.trigger.job_id


def test_trigger_serialization_round_trip() -> None:
    trigger = BridgeheadJobTrigger("job1", "my_conn", stream_logs=False, wait_s=5.0,
                                   poll_interval_s=5.0)
    path, kwargs = trigger.serialize()
    json.dumps(kwargs)  # plain JSON types only
    module, _, name = path.rpartition(".")
    again = getattr(importlib.import_module(module), name)(**kwargs)
    assert again.serialize() == (path, kwargs)


async def test_two_triggers_at_once_fire_one_consistent_event(conn: Client) -> None:
    job = conn.submit(JobSpec(cluster="local", command=(
        sys.executable, "-c", "import time; print('one'); time.sleep(1); print('two')")))
    events = await asyncio.wait_for(asyncio.gather(
        *(anext(BridgeheadJobTrigger(job.id).run()) for _ in range(2))), 60)
    payloads = [e.payload for e in events]
    assert payloads[0] == payloads[1]
    assert payloads[0]["state"] == "succeeded" and payloads[0]["exit_code"] == 0
    assert payloads[0]["tail"] == ["one", "two"]
    json.dumps(payloads[0])


async def test_polling_trigger_fires_the_same_event(conn: Client) -> None:
    job = conn.submit(JobSpec(cluster="local", command=(sys.executable, "-c", "print('p')")))
    waited = await asyncio.wait_for(anext(BridgeheadJobTrigger(job.id).run()), 30)
    polled = await asyncio.wait_for(
        anext(BridgeheadJobTrigger(job.id, poll_interval_s=0.2).run()), 30)
    assert polled.payload == waited.payload and polled.payload["tail"] == ["p"]


async def test_success_ends_the_task_in_the_triggerer_failure_resumes_it(conn: Client) -> None:
    from bridgehead.airflow._compat import TaskSuccessEvent

    ok = conn.submit(JobSpec(cluster="local", command=(sys.executable, "-c", "print('ok')")))
    bad = conn.submit(JobSpec(cluster="local", command=(sys.executable, "-c", "exit(5)")))
    ended = await asyncio.wait_for(
        anext(BridgeheadJobTrigger(ok.id, end_task_on_success=True).run()), 30)
    assert isinstance(ended, TaskSuccessEvent)
    assert ended.xcoms == {"return_value": {"job_id": ok.id, "state": "succeeded",
                                            "exit_code": 0, "native_id": ended.xcoms[
                                                "return_value"]["native_id"],
                                            "cluster": "local"}}
    resumed = await asyncio.wait_for(
        anext(BridgeheadJobTrigger(bad.id, end_task_on_success=True).run()), 30)
    assert not isinstance(resumed, TaskSuccessEvent)
    assert (resumed.payload["state"], resumed.payload["exit_code"]) == ("failed", 5)


async def test_cleanup_does_not_cancel_the_job(conn: Client) -> None:
    job = conn.submit(JobSpec(cluster="local", command=(
        sys.executable, "-c", "import time; print('started', flush=True); time.sleep(2)")))
    trigger = BridgeheadJobTrigger(job.id)
    running = asyncio.ensure_future(anext(trigger.run()))
    await asyncio.to_thread(eventually, lambda: conn.get(job.id).state is JobState.RUNNING,
                            30, 0.05, "job running")
    running.cancel()  # the triggerer drops the trigger (reassignment) ...
    await trigger.cleanup()  # ... and cleans it up
    final = await asyncio.to_thread(conn.wait, job.id, until="terminal", timeout=30)
    assert final.state is JobState.SUCCEEDED and not final.cancel_requested


async def test_trigger_reports_an_unknown_job_as_an_error(conn: Client) -> None:
    event = await asyncio.wait_for(anext(BridgeheadJobTrigger("0" * 26).run()), 30)
    assert event.payload["state"] == "error" and "not found" in event.payload["reason"]


def test_reexecuted_try_reattaches_and_next_try_submits_anew(conn: Client) -> None:
    op = BridgeheadOperator(task_id="t", command=[sys.executable, "-c", "print('once')"])
    ti = _ti()
    first = _deferred_job_id(op, _context(ti))
    again = _deferred_job_id(BridgeheadOperator(task_id="t", command=op.command), _context(ti))
    assert again == first  # the worker died after submitting: same try, same job
    jobs, _ = conn.list_jobs(labels={"airflow.dag_id": "dag1", "airflow.task_id": "t"})
    assert [j.id for j in jobs] == [first]
    assert conn.wait(first, until="terminal", timeout=30).state is JobState.SUCCEEDED
    # re-executed after the job ended: no defer, no new job, the task succeeds at once
    out = BridgeheadOperator(task_id="t", command=op.command).execute(_context(ti))
    assert out["job_id"] == first and out["state"] == "succeeded"
    retry = _deferred_job_id(op, _context(_ti(try_number=2)))
    assert retry != first
    assert conn.get(first).spec.idempotency_key == idempotency_key(ti)


def test_on_kill_cancels_the_job(conn: Client) -> None:
    op = BridgeheadOperator(task_id="killed", command=[sys.executable, "-c",
                            "import time; time.sleep(60)"])
    job_id = _deferred_job_id(op, _context(_ti("killed")))
    op.on_kill()
    assert conn.wait(job_id, until="terminal", timeout=30).state is JobState.CANCELLED


# How the scheduler resumes a task whose deferral timed out: airflow/jobs/scheduler_job_runner.py,
# check_trigger_timeouts (2.10.5 line 2043: a plain string; 3.3.2 line 3407:
# TriggerFailureReason.TRIGGER_TIMEOUT, a str enum, airflow/sdk/bases/operator.py line 124).
TIMED_OUT = {"error": "Trigger/execution timeout" if AIRFLOW_2 else "Trigger timeout"}


def test_deferral_timeout_cancels_the_job_and_fails_the_task(conn: Client) -> None:
    op = BridgeheadOperator(task_id="late", command=[sys.executable, "-c",
                            "import time; time.sleep(60)"])
    job_id = _deferred_job_id(op, _context(_ti("late")))
    resumed = BridgeheadOperator(task_id="late", command=op.command)  # a new worker's copy
    with pytest.raises(AirflowException, match="imeout"):
        resumed.resume_execution("__fail__", dict(TIMED_OUT), _context(_ti("late")))
    assert conn.wait(job_id, until="terminal", timeout=30).state is JobState.CANCELLED


def test_a_failed_trigger_does_not_cancel_the_job(conn: Client) -> None:
    op = BridgeheadOperator(task_id="trigger_failed", command=[sys.executable, "-c",
                            "print('fine')"])
    job_id = _deferred_job_id(op, _context(_ti("trigger_failed")))
    with pytest.raises(AirflowException):
        op.resume_execution("__fail__", {"error": "Trigger failure"},
                            _context(_ti("trigger_failed")))
    final = conn.wait(job_id, until="terminal", timeout=30)
    assert final.state is JobState.SUCCEEDED and not final.cancel_requested


def test_failed_job_fails_the_task_with_exit_code_and_last_lines(conn: Client) -> None:
    op = BridgeheadOperator(task_id="fails", command=[
        sys.executable, "-c",
        "import sys; [print('line', i) for i in range(30)]; print('bad', file=sys.stderr); "
        "sys.exit(3)"])
    job_id = _deferred_job_id(op, _context(_ti("fails")))
    conn.wait(job_id, until="terminal", timeout=30)
    with pytest.raises(AirflowException) as info:
        op.execute_complete(_context(_ti("fails")), event=None, job_id=job_id)
    message = str(info.value)
    assert f"Bridgehead job {job_id} failed with exit code 3" in message
    assert "line 29" in message and "[stderr] bad" in message and "line 0\n" not in message


def test_hostile_arguments_reach_the_job_verbatim(conn: Client, tmp_path: Path) -> None:
    words = ["$(touch PWNED)", "`touch PWNED`", "a;b", "'\"", "", "{{ not jinja here }}"]
    op = BridgeheadOperator(task_id="meta", command=[sys.executable, "-c",
                            "import json, sys; print(json.dumps(sys.argv[1:]))", *words],
                            working_dir=str(tmp_path))
    job_id = _deferred_job_id(op, _context(_ti("meta")))
    assert conn.wait(job_id, until="terminal", timeout=30).state is JobState.SUCCEEDED
    data, _, _ = conn.read_logs(job_id)
    assert json.loads(data) == words
    assert not (tmp_path / "PWNED").exists()


def test_shell_string_command_is_refused(conn: Client) -> None:
    op = BridgeheadOperator(task_id="s", command=[])
    op.command = "echo hi; rm -rf /"  # e.g. a template that rendered to a string
    with pytest.raises(AirflowException, match="not a shell string"):
        op.execute(_context(_ti("s")))


def test_run_resources_override_task_defaults_and_caps_clamp() -> None:
    task = {"cores": 2, "memory": "1G", "walltime": "30m"}
    assert effective_resources(task, None, None, None).cores == 2
    raised = effective_resources(task, {"cores": "64"}, None, None)
    assert (raised.cores, raised.memory_mb, raised.walltime_s) == (64, 1024, 1800)
    capped = effective_resources(task, {"cores": 64, "nodes": 4}, 1, 2)
    assert (capped.cores, capped.max_cores, capped.nodes, capped.max_nodes) == (1, 1, 2, 2)
    with pytest.raises(AirflowException, match="whole number"):
        effective_resources({"cores": "many"}, None, None, None)
    with pytest.raises(AirflowException, match="unknown resources: colour"):
        effective_resources({"colour": "red"}, None, None, None)


def test_build_spec_uses_run_params_and_labels(conn: Client) -> None:
    op = SlurmJobOperator(task_id="step", cluster="alpha", command=["./step"], ntasks=4,
                          cpus_per_task=2, mem="2G", time="01:00:00", partition="debug",
                          qos="high", sbatch_options=["--constraint=a100"], max_cores=8)
    spec = op.build_spec(_context(_ti("step", map_index=3), {"resources": {"cores": 32}}))
    assert spec.resources.cores == 8 and spec.resources.memory_mb == 2048
    assert spec.resources.walltime_s == 3600 and spec.resources.partition == "debug"
    assert spec.scheduler_options == ("--constraint=a100", "--cpus-per-task=2", "--qos=high")
    assert spec.labels["airflow.map_index"] == "3" and spec.labels["airflow.try_number"] == "1"
    assert spec.idempotency_key == "airflow:dag1:manual__2026-11-30T00:00:00+00:00:step:3:1"


def test_script_directives_as_in_a_native_submit(conn: Client) -> None:
    """The operator's default name does not beat a script's --job-name, and a resource the
    task wrote beats the script's directive even at its default (cores 1 over -c 2)."""
    script = "#!/bin/sh\n#SBATCH --job-name=from-script -c 2\necho hi\n"
    plain = BridgeheadOperator(task_id="d1", script=script)
    written = BridgeheadOperator(task_id="d2", script=script, job_resources={"cores": 1})
    named = BridgeheadOperator(task_id="d3", script=script, job_name="mine")
    jobs = [conn.get(_deferred_job_id(op, _context(_ti(op.task_id))))
            for op in (plain, written, named)]
    assert [(j.spec.name, j.spec.resources.cores) for j in jobs] == [
        ("from-script", 2), ("from-script", 1), ("mine", 2)]
    for job in jobs:
        assert conn.wait(job.id, until="terminal", timeout=30).state is JobState.SUCCEEDED


def test_provider_is_registered() -> None:
    out = subprocess.run([sys.executable, "-m", "airflow", "providers", "list", "-o", "json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert any(p["package_name"] == "bridgehead" for p in json.loads(out.stdout))
