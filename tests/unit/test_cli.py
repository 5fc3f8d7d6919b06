"""The CLI's contract for bad input (exit code 2 and one clear line, nothing sent), and what
``bridgehead status`` shows of a job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from rich.text import Text

from bridgehead.cli.main import parse_memory, parse_walltime
from bridgehead.cli.output import show_job
from bridgehead.cli.pools import status as pools_status
from bridgehead.cli.runs_view import run_duration
from bridgehead.domain.jobs import Job, JobSpec, JobState, Resources
from bridgehead.errors import InvalidSpec


def run(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {"BRIDGEHEAD_HOME": str(home), "BRIDGEHEAD_URL": "http://127.0.0.1:9",
           "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "bridgehead.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, words", [
    (("submit",), "give a command"),
    (("submit", "--cores", "0", "--", "echo"), "cores"),
    (("submit", "--walltime", "soon", "--", "echo"), "walltime"),
    (("submit", "--memory", "lots", "--", "echo"), "memory"),
    (("submit", "--env", "NOEQUALS", "--", "echo"), "KEY=VALUE"),
    (("submit", "--option", "; rm -rf /", "--", "echo"), "--name"),
    (("submit", "--workdir", "relative", "--", "echo"), "absolute"),
    (("list", "--state", "bogus"), "bogus"),
    (("nosuchcommand",), "nosuchcommand"),
    (("token", "create", "--name", "x", "--role", "agent"), "--cluster"),
    (("server", "--store", "mysql://x/y"), "scheme"),
])
def test_bad_input_exits_2_with_one_line(args: tuple[str, ...], words: str,
                                         tmp_path: Path) -> None:
    result = run(*args, home=tmp_path)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bridgehead: error:"), result.stderr
    assert words.lower() in lines[0].lower()


def test_unreachable_server_exits_1_with_one_line(tmp_path: Path) -> None:
    result = run("list", home=tmp_path)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "cannot reach" in result.stderr


def test_durations_and_sizes() -> None:
    assert [parse_walltime(t) for t in ("90", "30m", "2h", "1d", "01:30", "1:00:00",
                                        "1-00:00:00")] == [90, 1800, 7200, 86400, 90, 3600,
                                                           86400]
    assert [parse_memory(t) for t in ("512", "512M", "4G", "1T", "2048K")] == [
        512, 512, 4096, 1048576, 2]
    with pytest.raises(InvalidSpec):
        parse_walltime("1:2:3:4:5")


def status_of(job: Job, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """``bridgehead status``'s table, as {row name: value}."""
    show_job(job)
    rows = [line.strip().split("  ", 1) for line in capsys.readouterr().out.splitlines()]
    return {row[0]: row[1].strip() for row in rows if len(row) == 2}


def test_status_shows_labels_resources_and_env_names_but_not_their_values(
        capsys: pytest.CaptureFixture[str]) -> None:
    spec = JobSpec(
        cluster="hpc", command=("train", "[/]"), labels={"run": "r-1", "step": "[b]fit"},
        env={"API_TOKEN": "s3cret-value", "OMP_NUM_THREADS": "8"},
        working_dir="/scratch/fit", scheduler_options=("--qos=high", "--exclusive"),
        resources=Resources(cores=8, nodes=2, memory_mb=4096, gpus=1, walltime_s=5400,
                            partition="gpu", account="proj7", max_cores=4))
    rows = status_of(Job(id="j-1", spec=spec, state=JobState.QUEUED), capsys)
    assert rows["labels"] == "run=r-1, step=[b]fit"  # shown as written, not as markup
    assert rows["resources"] == ("cores=8, nodes=2, memory=4G, gpus=1, walltime=1h30m, "
                                 "partition=gpu, account=proj7, max-cores=4")
    assert rows["env"] == "API_TOKEN OMP_NUM_THREADS"
    assert rows["working dir"] == "/scratch/fit"
    assert rows["scheduler options"] == "--qos=high --exclusive"
    assert rows["command"] == "train [/]"
    show_job(Job(id="j-1", spec=spec, state=JobState.QUEUED))
    assert "s3cret" not in capsys.readouterr().out


def test_status_leaves_out_what_a_job_does_not_set(capsys: pytest.CaptureFixture[str]) -> None:
    spec = JobSpec(cluster="local", command=("echo",),
                   resources=Resources(memory_mb=1536, walltime_s=90))
    rows = status_of(Job(id="j-2", spec=spec, state=JobState.QUEUED), capsys)
    assert rows["resources"] == "cores=1, nodes=1, memory=1536M, walltime=1m30s"
    assert not {"labels", "env", "working dir", "scheduler options"} & set(rows)


def test_a_runs_duration_is_the_servers_not_its_wall_time() -> None:
    run = {"created_at": "2026-01-01T10:00:00+00:00", "finished_at": "2026-01-01T10:05:00+00:00"}
    assert run_duration({**run, "duration_s": 4.5}) == 4.5  # it sat failed before a retry
    assert run_duration(run) == 300  # a server that does not say


@pytest.mark.parametrize(("pool", "shown"), [
    ({"quarantined": True, "failures_in_row": 5, "backoff_until": None}, "quarantined"),
    ({"quarantined": False, "failures_in_row": 2, "backoff_until": "2026-12-05T03:14:00Z",
      "shortage_since": None}, "backing off (2 failed)"),
    ({"quarantined": False, "failures_in_row": 0, "backoff_until": "2026-12-05T03:14:00Z",
      "shortage_since": "2026-12-05T03:12:09.5Z"},
     "capacity shortage since 2026-12-05 03:12 UTC: one node at a time"),
    ({"quarantined": False, "failures_in_row": 0, "backoff_until": None,
      "shortage_since": "2026-12-05T03:12:09Z"},  # past its backoff, still probing
     "capacity shortage since 2026-12-05 03:12 UTC: one node at a time"),
    ({"quarantined": False, "failures_in_row": 0, "backoff_until": None}, "ok"),
])
def test_a_pools_status_says_why_it_does_not_buy(pool: dict[str, object], shown: str) -> None:
    """A shortage is told apart from failed boots (it used to read "backing off (0 failed)"),
    with its date: it lasts until the provider takes a node, however long ago it began."""
    assert Text.from_markup(pools_status(pool)).plain == shown
