"""The local backend with real processes: supervisors, process groups, restarts, crashes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import psutil
import pytest

from bridgehead.backends.base import Backend, NativeStatus
from bridgehead.backends.local import LocalBackend, LocalBackendSettings
from bridgehead.domain.jobs import JobSpec, JobState, Resources
from bridgehead.errors import InvalidSpec, SubmitRejected

MakeBackend = Callable[..., LocalBackend]

WAIT_FOR_RELEASE = "#!/bin/sh\nwhile [ ! -f release ]; do sleep 0.05; done\necho released\n"
"""A script that runs until a ``release`` file appears in its working dir."""
PGID_THEN_SLEEP = "#!/bin/sh\necho $$ > pgid\nexec sleep 30\n"
"""A script that records its process group (it leads it) and sleeps."""


@pytest.fixture
async def make_backend(tmp_path: Path) -> AsyncIterator[MakeBackend]:
    """Backends on one state dir; at teardown every job still running is cancelled."""
    backends: list[LocalBackend] = []

    def make(**overrides: object) -> LocalBackend:
        options: dict[str, object] = {"slots": 4, "kill_grace_s": 1.0, **overrides}
        backend = LocalBackend(LocalBackendSettings(state_dir=tmp_path / "state", **options))
        backends.append(backend)
        return backend

    yield make
    jobs = tmp_path / "state" / "jobs"
    if backends and jobs.is_dir():
        await backends[-1].cancel([job.name for job in jobs.iterdir()])
    for backend in backends:
        await backend.close()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path.resolve()


def command(*argv: str, **kwargs: Any) -> JobSpec:
    return JobSpec(cluster="local", command=argv, **kwargs)


def script(text: str, workdir: Path, **kwargs: Any) -> JobSpec:
    return JobSpec(cluster="local", script=text, working_dir=str(workdir), **kwargs)


async def wait_for(
    backend: LocalBackend, job_id: str, states: Iterable[JobState], within_s: float = 60.0
) -> NativeStatus:
    wanted = set(states)
    deadline = time.monotonic() + within_s
    status = None
    while time.monotonic() < deadline:
        status = (await backend.poll([job_id])).get(job_id)
        if status is not None and status.state in wanted:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {wanted}; last status: {status}")


def read_nonempty(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


async def wait_file(path: Path, within_s: float = 10.0) -> str:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if text := read_nonempty(path):
            return text
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def group_alive(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``."""
    alive = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            pass
    return alive


async def wait_group_gone(pgid: int, within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    while group_alive(pgid):
        assert time.monotonic() < deadline, f"process group {pgid} still alive"
        await asyncio.sleep(0.05)


async def test_is_a_backend(make_backend: MakeBackend) -> None:
    assert isinstance(make_backend(), Backend)


async def test_success_captures_output_read_by_offset(make_backend: MakeBackend) -> None:
    backend = make_backend()
    spec = command("/bin/sh", "-c", "printf hello-out; printf hello-err >&2")
    assert await backend.submit("job-ok", spec) == "job-ok"
    assert await backend.read_log("job-ok", "stdout", 0, 100) == b""  # not started yet

    status = await wait_for(backend, "job-ok", [JobState.SUCCEEDED])
    assert status.exit_code == 0 and status.reason is None
    assert status.usage is not None and status.usage.cores == 1 and status.usage.nodes == 1
    assert 0 <= status.usage.elapsed_s < 10
    assert await backend.read_log("job-ok", "stdout", 0, 100) == b"hello-out"
    assert await backend.read_log("job-ok", "stdout", 6, 2) == b"ou"
    assert await backend.read_log("job-ok", "stdout", 100, 10) == b""
    assert await backend.read_log("job-ok", "stderr", 6, 100) == b"err"
    with pytest.raises(InvalidSpec):
        await backend.read_log("job-ok", "spec.json", 0, 100)

    await backend.cancel(["job-ok"])  # already finished: no-op
    assert (await backend.poll(["job-ok"]))["job-ok"].state is JobState.SUCCEEDED


async def test_failures_exit_code_signal_and_exec_errors(
    make_backend: MakeBackend, workdir: Path
) -> None:
    backend = make_backend()
    (workdir / "not-exec").write_text("#!/bin/sh\n")
    await backend.submit("exit3", command("/bin/sh", "-c", "exit 3"))
    await backend.submit("killed", command("/bin/sh", "-c", "kill -KILL $$"))
    await backend.submit("missing", command("/no/such/program"))
    await backend.submit("noexec", command(str(workdir / "not-exec")))

    exit3 = await wait_for(backend, "exit3", [JobState.FAILED])
    assert (exit3.exit_code, exit3.reason) == (3, "exit code 3")
    killed = await wait_for(backend, "killed", [JobState.FAILED])
    assert (killed.exit_code, killed.reason) == (137, "killed by signal SIGKILL")
    missing = await wait_for(backend, "missing", [JobState.FAILED])
    assert missing.exit_code == 127 and "/no/such/program" in (missing.reason or "")
    noexec = await wait_for(backend, "noexec", [JobState.FAILED])
    assert noexec.exit_code == 126 and "Permission denied" in (noexec.reason or "")


async def test_script_job_with_env_and_working_dir(
    make_backend: MakeBackend, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_SECRET", "do-not-leak")
    backend = make_backend()
    text = '#!/bin/sh\necho "$BRIDGEHEAD_JOB_ID $FOO ${AGENT_SECRET:-none}"\npwd\n'
    await backend.submit("scripted", script(text, workdir, env={"FOO": "bar"}))

    await wait_for(backend, "scripted", [JobState.SUCCEEDED])
    out = (await backend.read_log("scripted", "stdout", 0, 1000)).decode()
    assert out.splitlines() == ["scripted bar none", str(workdir)]


async def test_shell_metacharacters_are_passed_literally(
    make_backend: MakeBackend, workdir: Path
) -> None:
    backend = make_backend()
    nasty = "$(touch PWNED); `id`; rm -rf x > y"
    await backend.submit("literal", command("/bin/echo", nasty, working_dir=str(workdir)))

    await wait_for(backend, "literal", [JobState.SUCCEEDED])
    assert await backend.read_log("literal", "stdout", 0, 1000) == f"{nasty}\n".encode()
    assert os.listdir(workdir) == []


async def test_walltime_times_out_and_kills_the_group(
    make_backend: MakeBackend, workdir: Path
) -> None:
    backend = make_backend()
    spec = script(PGID_THEN_SLEEP, workdir, resources=Resources(walltime_s=1))
    began = time.monotonic()
    await backend.submit("slow", spec)

    status = await wait_for(backend, "slow", [JobState.TIMED_OUT])
    assert time.monotonic() - began < 6
    assert status.reason == "walltime of 1 s exceeded"
    assert status.exit_code == 128 + signal.SIGTERM
    await wait_group_gone(int((workdir / "pgid").read_text()))


async def test_cancel_running_escalates_to_sigkill(
    make_backend: MakeBackend, workdir: Path
) -> None:
    backend = make_backend(kill_grace_s=0.5)
    stubborn = "#!/bin/sh\ntrap '' TERM\necho $$ > pgid\nwhile :; do sleep 0.1; done\n"
    await backend.submit("stubborn", script(stubborn, workdir))
    await wait_for(backend, "stubborn", [JobState.RUNNING])
    pgid = int(await wait_file(workdir / "pgid"))

    await backend.cancel(["stubborn"])
    status = await wait_for(backend, "stubborn", [JobState.CANCELLED], within_s=60)
    assert status.reason == "cancelled" and status.exit_code == 128 + signal.SIGKILL
    await wait_group_gone(pgid)


async def test_cancel_pending_never_starts(make_backend: MakeBackend, workdir: Path) -> None:
    backend = make_backend(slots=1)
    await backend.submit("first", script(WAIT_FOR_RELEASE, workdir))
    touch = command("/usr/bin/env", "touch", str(workdir / "second-ran"))
    await backend.submit("second", touch)
    await wait_for(backend, "first", [JobState.RUNNING])
    assert (await backend.poll(["second"]))["second"].state is JobState.SUBMITTED

    await backend.cancel(["second"])
    status = (await backend.poll(["second"]))["second"]
    assert status.state is JobState.CANCELLED and status.usage is None
    (workdir / "release").touch()
    await wait_for(backend, "first", [JobState.SUCCEEDED])
    for _ in range(5):  # the freed slot must not start the cancelled job
        assert (await backend.poll(["second"]))["second"].state is JobState.CANCELLED
    assert not (workdir / "second-ran").exists()


async def test_slot_limit_runs_jobs_fifo(make_backend: MakeBackend, workdir: Path) -> None:
    backend = make_backend(slots=1)
    await backend.submit("a", script(WAIT_FOR_RELEASE, workdir))
    await backend.submit("b", command("/bin/true"))
    await wait_for(backend, "a", [JobState.RUNNING])
    for _ in range(5):
        statuses = await backend.poll(["a", "b"])
        assert statuses["a"].state is JobState.RUNNING
        assert statuses["b"].state is JobState.SUBMITTED
        await asyncio.sleep(0.05)

    (workdir / "release").touch()
    await wait_for(backend, "a", [JobState.SUCCEEDED])
    await wait_for(backend, "b", [JobState.SUCCEEDED])


async def test_free_slots_accounting(make_backend: MakeBackend, workdir: Path) -> None:
    backend = make_backend(slots=4)
    assert backend.free_slots() == 4
    await backend.submit("two", script(WAIT_FOR_RELEASE, workdir, resources=Resources(cores=2)))
    assert backend.free_slots() == 2  # pending cores count
    await wait_for(backend, "two", [JobState.RUNNING])
    assert backend.free_slots() == 2
    await backend.submit("three", command("/bin/true", resources=Resources(cores=3)))
    await backend.poll(["three"])
    assert backend.free_slots() == 0  # 2 free, 3 waiting
    assert make_backend(slots=4).free_slots() == 0  # a new backend reads the state dir
    with pytest.raises(SubmitRejected, match="5 cores"):
        await backend.submit("five", command("/bin/true", resources=Resources(cores=5)))
    with pytest.raises(SubmitRejected, match="one node"):
        await backend.submit("nodes", command("/bin/true", resources=Resources(nodes=2)))

    (workdir / "release").touch()
    await wait_for(backend, "three", [JobState.SUCCEEDED])
    await backend.poll([])
    assert backend.free_slots() == 4


async def test_restart_finds_and_finishes_jobs(make_backend: MakeBackend, workdir: Path) -> None:
    first = make_backend()
    await first.submit("running", script(WAIT_FOR_RELEASE, workdir))
    await wait_for(first, "running", [JobState.RUNNING])
    await first.submit("queued", command("/bin/echo", "late"))  # never polled by `first`
    await first.close()
    del first

    second = make_backend()
    assert await second.find(["running", "queued", "unknown"]) == {
        "running": ["running"], "queued": ["queued"], "unknown": []}
    assert (await second.poll(["running"]))["running"].state is JobState.RUNNING
    assert await second.poll(["unknown"]) == {}
    (workdir / "release").touch()
    await wait_for(second, "running", [JobState.SUCCEEDED])
    await wait_for(second, "queued", [JobState.SUCCEEDED])
    assert await second.read_log("running", "stdout", 0, 100) == b"released\n"
    assert await second.read_log("queued", "stdout", 0, 100) == b"late\n"


AGENT = """
import asyncio, sys, time
from pathlib import Path
from bridgehead.backends.local import LocalBackend, LocalBackendSettings
from bridgehead.domain.jobs import JobSpec, JobState

async def main():
    backend = LocalBackend(LocalBackendSettings(state_dir=Path(sys.argv[1]), slots=1))
    wait = JobSpec(cluster="local", script=sys.argv[3], working_dir=sys.argv[2])
    await backend.submit("survivor", wait)
    await backend.submit("next", JobSpec(cluster="local", command=("/bin/echo", "next")))
    while (await backend.poll(["survivor"]))["survivor"].state is not JobState.RUNNING:
        await asyncio.sleep(0.05)
    print("running", flush=True)
    time.sleep(60)

asyncio.run(main())
"""


async def test_jobs_survive_an_agent_killed_with_sigkill(
    make_backend: MakeBackend, workdir: Path, tmp_path: Path
) -> None:
    agent = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        AGENT,
        str(tmp_path / "state"),
        str(workdir),
        WAIT_FOR_RELEASE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert agent.stdout is not None
        assert await asyncio.wait_for(agent.stdout.readline(), 20) == b"running\n"
    finally:
        agent.kill()
        await agent.wait()

    backend = make_backend(slots=1)
    assert (await backend.poll(["survivor", "next"])) == {
        "survivor": NativeStatus(state=JobState.RUNNING),
        "next": NativeStatus(state=JobState.SUBMITTED),
    }
    (workdir / "release").touch()
    await wait_for(backend, "survivor", [JobState.SUCCEEDED])
    await wait_for(backend, "next", [JobState.SUCCEEDED])


async def test_submit_twice_runs_once(make_backend: MakeBackend, workdir: Path) -> None:
    first, second = make_backend(), make_backend()
    counter = workdir / "counter"
    spec = command("/bin/sh", "-c", f"echo ran >> {counter}")
    ids = [await first.submit("once", spec), await second.submit("once", spec)]
    ids += await asyncio.gather(first.submit("once", spec), second.submit("once", spec))
    assert ids == ["once"] * 4

    await asyncio.gather(*(wait_for(b, "once", [JobState.SUCCEEDED]) for b in (first, second)))
    await first.submit("once", spec)  # a resubmit after the end does not rerun it either
    for backend in (first, second):
        assert (await backend.poll(["once"]))["once"].state is JobState.SUCCEEDED
    assert counter.read_text() == "ran\n"


async def test_working_dir_must_be_inside_allowed_roots(
    make_backend: MakeBackend, workdir: Path, tmp_path: Path
) -> None:
    allowed = workdir / "allowed"
    (allowed / "sub").mkdir(parents=True)
    (allowed / "escape").symlink_to(tmp_path)
    backend = make_backend(allowed_roots=(allowed,))

    await backend.submit("inside", command("/bin/true", working_dir=str(allowed / "sub")))
    with pytest.raises(SubmitRejected, match="outside the allowed roots"):
        await backend.submit("outside", command("/bin/true", working_dir=str(tmp_path)))
    with pytest.raises(SubmitRejected, match="outside the allowed roots"):
        await backend.submit("symlink", command("/bin/true", working_dir=str(allowed / "escape")))
    with pytest.raises(SubmitRejected, match="does not exist"):
        await backend.submit("missing", command("/bin/true", working_dir=str(allowed / "nope")))
    assert await backend.find(["outside"]) == {"outside": []}
    await wait_for(backend, "inside", [JobState.SUCCEEDED])


@pytest.mark.parametrize("bad", ["", "../escape", "a/b", ".", "x" * 65, "job id", "é"])
async def test_bad_job_ids_are_rejected(make_backend: MakeBackend, bad: str) -> None:
    backend = make_backend()
    with pytest.raises(InvalidSpec):
        await backend.submit(bad, command("/bin/true"))
    with pytest.raises(InvalidSpec):
        await backend.poll(["fine", bad])
    with pytest.raises(InvalidSpec):
        await backend.cancel([bad])
    with pytest.raises(InvalidSpec):
        await backend.find([bad])
    with pytest.raises(InvalidSpec):
        await backend.read_log(bad, "stdout", 0, 10)


async def test_killed_supervisor_is_lost(make_backend: MakeBackend, workdir: Path) -> None:
    backend = make_backend(start_grace_s=0.5)
    await backend.submit("orphan", script(PGID_THEN_SLEEP, workdir))
    await wait_for(backend, "orphan", [JobState.RUNNING])
    pgid = int(await wait_file(workdir / "pgid"))
    runner_pid = int((backend_job_dir(workdir, "orphan") / "runner.pid").read_text())

    os.kill(runner_pid, signal.SIGKILL)
    status = await wait_for(backend, "orphan", [JobState.LOST], within_s=60)
    assert "died without recording a result" in (status.reason or "")
    await wait_group_gone(pgid)  # the orphaned job was killed, it holds no slot any more
    assert (await backend.poll(["orphan"]))["orphan"].state is JobState.LOST


async def test_supervisor_that_never_starts_is_lost(
    make_backend: MakeBackend, workdir: Path
) -> None:
    backend = make_backend(start_grace_s=0.5)
    await backend.submit("stillborn", command("/usr/bin/env", "touch", str(workdir / "ran")))
    # An agent crashed right after claiming the start, before spawning the supervisor.
    (backend_job_dir(workdir, "stillborn") / "started").touch()

    assert (await backend.poll(["stillborn"]))["stillborn"].state is JobState.SUBMITTED
    status = await wait_for(backend, "stillborn", [JobState.LOST], within_s=60)
    assert "did not start within 0.5 s" in (status.reason or "")
    assert not (workdir / "ran").exists()


def backend_job_dir(workdir: Path, job_id: str) -> Path:
    return workdir.parent / "state" / "jobs" / job_id
