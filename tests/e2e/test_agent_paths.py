"""A real server and agent running everyday jobs: exit codes, cancel, walltime, bad paths."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridgehead.client import Client
from bridgehead.domain.jobs import Job, JobSpec, JobState, Resources
from tests.procs import env_for, eventually, stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    home = tmp_path_factory.mktemp("paths")
    allowed = home / "work"
    allowed.mkdir()
    with stack(home, BRIDGEHEAD_ALLOWED_ROOTS=f'["{allowed}"]') as s, \
            Client(s.server.url, s.admin) as client:
        client.allowed, client.token = allowed, s.admin
        yield client


def run(bh: Client, *argv: str, **kw: object) -> Job:
    spec = JobSpec(cluster="local", command=argv, **kw)
    return bh.wait(bh.submit(spec).id, until="terminal", timeout=60)


def test_exit_codes_and_usage(bh: Client) -> None:
    ok = run(bh, sys.executable, "-c", "print('fine')")
    assert ok.state is JobState.SUCCEEDED and ok.exit_code == 0 and ok.usage is not None
    bad = run(bh, sys.executable, "-c", "import sys; sys.exit(3)")
    assert bad.state is JobState.FAILED and bad.exit_code == 3


def test_shell_metacharacters_reach_the_process_literally(bh: Client) -> None:
    hostile = "$(touch PWNED); `id`; rm -rf ./x && echo | cat"
    job = run(bh, "/bin/echo", hostile, working_dir=str(bh.allowed))
    data, _, _ = bh.read_logs(job.id)
    assert job.state is JobState.SUCCEEDED and data == (hostile + "\n").encode()
    assert not (bh.allowed / "PWNED").exists()


def test_walltime_ends_as_timed_out(bh: Client) -> None:
    job = run(bh, "sleep", "30", resources=Resources(walltime_s=1))
    assert job.state is JobState.TIMED_OUT


def test_cancel_of_a_running_job_goes_through_the_agent(bh: Client) -> None:
    job = bh.submit(JobSpec(cluster="local", command=("sleep", "60")))
    eventually(lambda: bh.get(job.id).state is JobState.RUNNING, 30, what="the job to run")
    flagged = bh.cancel(job.id)
    assert flagged.cancel_requested and not flagged.terminal
    done = bh.wait(job.id, until="terminal", timeout=30)
    assert done.state is JobState.CANCELLED


def test_working_dir_outside_the_allowed_roots_fails_with_the_reason(bh: Client) -> None:
    job = run(bh, "/bin/true", working_dir="/etc")
    assert job.state is JobState.FAILED
    assert "allowed roots" in (job.reason or "")


def _cli(bh: Client, cwd: object, *args: str) -> subprocess.CompletedProcess[str]:
    env = env_for(Path(str(cwd)) / ".home", BRIDGEHEAD_URL=bh.url,
                  BRIDGEHEAD_TOKEN=bh.token)  # type: ignore[attr-defined]
    return subprocess.run([sys.executable, "-m", "bridgehead", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_the_cli_works_in_the_callers_dir_only_under_the_allowed_roots(
        bh: Client, tmp_path: Path) -> None:
    inside = bh.allowed / "project"  # type: ignore[attr-defined]
    inside.mkdir(exist_ok=True)
    for where in (inside, tmp_path):
        (where / "job.sh").write_text("#!/bin/sh\npwd\n")
        (where / "job.sh").chmod(0o755)
    ran = _cli(bh, inside, "submit", "--wait", "--json", "--", "./job.sh")
    assert ran.returncode == 0, ran
    assert json.loads(ran.stdout)["spec"]["working_dir"] == str(inside.resolve())
    outside = _cli(bh, tmp_path, "submit", "--wait", "--", "./job.sh")
    assert outside.returncode == 1, outside  # the job ran in its job dir: no ./job.sh there
    note = [line for line in outside.stderr.splitlines() if line.startswith("bridgehead: note")]
    assert len(note) == 1 and "ran in its job directory" in note[0], outside.stderr
    assert "(./job.sh)" in note[0] and "--workdir" in note[0] and str(tmp_path) in note[0]
