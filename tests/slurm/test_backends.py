"""The Slurm backends against the real clusters: one contract, both transports, both Slurm
generations (conftest.CONTRACT: slurm_cli on alpha (22.05) and gamma (24.11), slurm_rest on
beta, so the 22.05 pair also proves the clusters independent).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridgehead.backends.base import Backend, NativeStatus
from bridgehead.backends.slurm_cli import SlurmCliBackend, SlurmCliConfig
from bridgehead.domain.jobs import JobSpec, JobState, Resources
from bridgehead.errors import SubmitRejected
from tests.slurm.conftest import CLUSTER_OF, CONTRACT, Lab, Target

pytestmark = pytest.mark.slurm


@pytest.fixture(params=CONTRACT, ids=lambda t: t.id)
async def backend(request: pytest.FixtureRequest, lab: Lab, tmp_path: Path
                  ) -> AsyncIterator[Backend]:
    target: Target = request.param
    b = lab.backend(target.kind, target.cluster, lab.job_root(target.cluster, tmp_path),
                    **target.options)
    yield b
    await b.close()


def spec_of(backend: Backend, **kw: object) -> JobSpec:
    return JobSpec(**{"cluster": CLUSTER_OF[backend], **kw})  # type: ignore[arg-type]


async def until(backend: Backend, native_id: str, done: frozenset[JobState] | None = None,
                timeout: float = 60.0) -> NativeStatus:
    """Poll until the job reaches one of ``done`` (default: any terminal state)."""
    deadline = time.monotonic() + timeout
    while True:
        status = (await backend.poll([native_id])).get(native_id)
        if status is not None and not status.settling and (
                status.state in done if done else status.state.terminal):
            return status
        assert time.monotonic() < deadline, f"job {native_id} still {status}"
        await asyncio.sleep(0.3)


async def log_of(backend: Backend, native_id: str, stream: str = "stdout") -> str:
    return (await backend.read_log(native_id, stream, 0, 1 << 20)).decode()


async def test_success_with_logs_usage_and_tag(backend: Backend, lab: Lab) -> None:
    tag = f"bh-ok-{secrets.token_hex(4)}"  # unique: accounting remembers earlier runs
    native = await backend.submit(tag, spec_of(
        backend, script="#!/bin/sh\necho hello $BRIDGEHEAD_JOB_ID\necho oops >&2\n",
        resources=Resources(cores=2)))
    status = await until(backend, native)
    assert (status.state, status.exit_code) == (JobState.SUCCEEDED, 0)
    assert status.usage is not None and status.usage.cores == 2 and status.usage.nodes == 1
    assert await log_of(backend, native) == f"hello {tag}\n"
    assert await log_of(backend, native, "stderr") == "oops\n"
    assert await backend.find([tag, "no-such-tag"]) == {tag: [native], "no-such-tag": []}


async def test_non_zero_exit_fails_with_its_code(backend: Backend) -> None:
    native = await backend.submit("bh-exit3", spec_of(backend, command=("sh", "-c", "exit 3")))
    status = await until(backend, native)
    assert (status.state, status.exit_code, status.reason) == (JobState.FAILED, 3, "exit code 3")


async def test_shell_metacharacters_reach_the_job_literally(backend: Backend) -> None:
    canary = backend.settings.job_root / "PWNED"  # type: ignore[attr-defined]  # jobs see it
    hostile = f"a;b|c && touch {canary} $(touch {canary}) `touch {canary}` 'q\" \\n"
    native = await backend.submit("bh-meta", spec_of(backend, command=("printf", "%s", hostile),
                                                     env={"X": f"$(touch {canary})"}))
    status = await until(backend, native)
    assert status.state is JobState.SUCCEEDED
    assert await log_of(backend, native) == hostile
    assert not canary.exists()


async def test_cancel_a_running_job(backend: Backend) -> None:
    # Cancelled once its body runs: Slurm says RUNNING before slurmstepd has started the batch
    # step, and a job killed in that window ends by SIGKILL (137), seen on a busy CI machine.
    native = await backend.submit("bh-cancel", spec_of(
        backend, command=("sh", "-c", "echo started; exec sleep 300")))
    await until(backend, native, frozenset({JobState.RUNNING}))
    deadline = time.monotonic() + 60
    while await log_of(backend, native) != "started\n":
        assert time.monotonic() < deadline, f"job {native} never started its body"
        await asyncio.sleep(0.2)
    await backend.cancel([native])
    status = await until(backend, native)
    assert (status.state, status.exit_code) == (JobState.CANCELLED, 143)  # SIGTERM, as local


async def test_a_held_job_cancelled_has_no_exit_code(backend: Backend) -> None:
    native = await backend.submit("bh-held", spec_of(backend, command=("true",),
                                                     scheduler_options=("--hold",)))
    await backend.cancel([native])
    status = await until(backend, native)
    assert status.state is JobState.CANCELLED and status.exit_code is None, status  # never ran


async def test_a_job_over_its_memory_is_killed_as_out_of_memory(backend: Backend) -> None:
    hog = "import time; x = bytearray(300 << 20); time.sleep(10)"
    native = await backend.submit("bh-oom", spec_of(
        backend, command=("python3", "-c", hog), resources=Resources(memory_mb=64)))
    status = await until(backend, native)
    assert (status.state, status.exit_code) == (JobState.FAILED, 137)
    assert status.reason is not None and status.reason.startswith("out of memory"), status


async def test_jobs_are_submitted_with_no_requeue(backend: Backend, lab: Lab) -> None:
    """Bridgehead re-runs a job its node lost: Slurm must not run the same attempt again."""
    native = await backend.submit("bh-norequeue", spec_of(backend, command=("sleep", "30")))
    try:
        assert "Requeue=0" in lab.run(CLUSTER_OF[backend], "scontrol", "show", "job", native)
    finally:
        await backend.cancel([native])


async def test_pass_through_options_and_caps_in_scontrol(backend: Backend, lab: Lab) -> None:
    native = await backend.submit("bh-opts", spec_of(
        backend, command=("sleep", "30"), scheduler_options=("--nice=7", "--requeue"),
        resources=Resources(cores=4, max_cores=2)))
    try:
        shown = lab.run(CLUSTER_OF[backend], "scontrol", "show", "job", native)
        assert "Nice=7" in shown and "Requeue=1" in shown
        assert re.search(r"NumCPUs=2\b", shown), shown
        assert "Comment=bh-opts" in shown
    finally:
        await backend.cancel([native])


@pytest.mark.parametrize("option, message", [
    ("--array=1-3", "--array is not allowed"),
    ("--output=/etc/passwd", "--output is not allowed"),
    ("--frobnicate=1", "frobnicate"),
])
async def test_bad_options_are_refused_with_a_clear_error(backend: Backend, option: str,
                                                          message: str) -> None:
    with pytest.raises(SubmitRejected, match=message):
        await backend.submit("bh-bad", spec_of(backend, command=("true",),
                                               scheduler_options=(option,)))


async def test_a_job_unknown_to_slurm_is_absent_not_succeeded(backend: Backend) -> None:
    assert await backend.poll(["987654"]) == {}


async def test_working_dir_must_exist(backend: Backend) -> None:
    with pytest.raises(SubmitRejected, match="does not exist"):
        await backend.submit("bh-wd", spec_of(backend, command=("true",),
                                              working_dir="/no/such/dir"))


async def test_cli_polls_many_jobs_with_at_most_two_commands(lab: Lab, tmp_path: Path) -> None:
    backend = SlurmCliBackend(lab.settings("alpha", tmp_path), SlurmCliConfig(state_dir=tmp_path))
    natives = [await backend.submit(f"bh-many-{i}", JobSpec(cluster="alpha", command=("true",)))
               for i in range(12)]
    for _ in range(40):
        backend.calls.clear()
        statuses = await backend.poll(natives)
        assert backend.calls["squeue"] + backend.calls["sacct"] <= 2, backend.calls
        assert backend.calls["squeue"] == 1
        if len(statuses) == 12 and all(s.state.terminal and not s.settling
                                       for s in statuses.values()):
            break
        await asyncio.sleep(0.5)
    assert {s.state for s in statuses.values()} == {JobState.SUCCEEDED}


async def test_rest_polls_many_jobs_with_at_most_two_requests(lab: Lab, tmp_path: Path) -> None:
    backend = lab.backend("slurm_rest", "beta", tmp_path)
    try:
        natives = [await backend.submit(f"bh-many-{i}", JobSpec(cluster="beta",
                                                                command=("true",)))
                   for i in range(12)]
        calls = backend.calls  # type: ignore[attr-defined]
        for _ in range(40):
            calls.clear()
            statuses = await backend.poll([*natives, "987654"])  # one long gone
            assert calls["jobs"] == 1 and calls["accounting"] <= 1, calls
            if len(statuses) == 12 and all(s.state.terminal for s in statuses.values()):
                break
            await asyncio.sleep(0.5)
        assert {s.state for s in statuses.values()} == {JobState.SUCCEEDED}
    finally:
        await backend.close()


async def test_walltime_ends_timed_out_on_every_target(lab: Lab, tmp_path: Path) -> None:
    """Slurm keeps time limits in minutes: this takes a little over one minute. On 24.11 the
    job's own exit code reads 0:0: the signal (SIGTERM) is only on its batch step."""
    backends = [lab.backend(t.kind, t.cluster, lab.job_root(t.cluster, tmp_path / t.id),
                            **t.options) for t in CONTRACT]
    try:
        natives = [await b.submit(f"bh-walltime-{b.kind}", spec_of(
            b, command=("sleep", "600"), resources=Resources(walltime_s=30))) for b in backends]
        results = await asyncio.gather(*(until(b, n, timeout=240)
                                          for b, n in zip(backends, natives, strict=True)))
        assert [r.state for r in results] == [JobState.TIMED_OUT] * len(backends)
        assert all(r.reason == "walltime exceeded" for r in results)
        cli = [r.exit_code for b, r in zip(backends, results, strict=True)
               if b.kind == "slurm_cli"]
        assert cli == [143] * len(cli), results  # SIGTERM, as local
    finally:
        for b in backends:
            await b.close()
