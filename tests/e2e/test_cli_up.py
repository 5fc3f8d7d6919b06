"""The CLI as a user meets it: `bridgehead up`, then commands in another shell."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest

from tests.procs import Proc, bh, bh_in, env_for, eventually, free_port

pytestmark = pytest.mark.slow


def test_submit_wait_status_logs_and_list(up: tuple[Path, Proc]) -> None:
    home, _ = up
    run = bh(home, "submit", "--wait", "--json", "--label", "run=r1", "--",
             "/bin/echo", "hello from $(bridgehead)")
    assert run.returncode == 0, run.stderr
    job = json.loads(run.stdout)
    assert job["state"] == "succeeded" and job["exit_code"] == 0
    logs = bh(home, "logs", job["id"])
    assert logs.stdout == "hello from $(bridgehead)\n"
    status = json.loads(bh(home, "status", job["id"], "--json").stdout)
    assert status["id"] == job["id"] and status["spec"]["labels"] == {"run": "r1"}
    listed = json.loads(bh(home, "list", "--label", "run=r1", "--json").stdout)
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]
    failing = bh(home, "submit", "--wait", "--", sys.executable, "-c", "raise SystemExit(4)")
    assert failing.returncode == 1  # the job failed: so does the command


def test_clusters_show_the_local_agent_online(up: tuple[Path, Proc]) -> None:
    home, _ = up
    clusters = eventually(lambda: json.loads(bh(home, "clusters", "--json").stdout), 15,
                          what="a cluster")
    [local] = clusters
    assert local["name"] == "local" and local["online"] and local["backend"] == "local"


def test_cancel_and_wait_exit_codes(up: tuple[Path, Proc]) -> None:
    home, _ = up
    job = json.loads(bh(home, "submit", "--json", "--", "sleep", "60").stdout)
    eventually(lambda: json.loads(bh(home, "status", job["id"], "--json").stdout)["state"]
               == "running", 30, what="the job to run")
    cancelled = bh(home, "cancel", job["id"])
    assert cancelled.returncode == 0, cancelled
    assert f"{job['id']}: cancel requested -> cancelled" in cancelled.stdout, cancelled.stdout
    assert "running" not in cancelled.stdout, cancelled.stdout  # not the state before
    waited = bh(home, "wait", job["id"], "--json", "--timeout", "30")
    assert waited.returncode == 1
    assert json.loads(waited.stdout)["jobs"][0]["state"] == "cancelled"
    assert bh(home, "status", "no-such-job").returncode == 2


def test_up_stops_promptly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    proc = Proc(["up", "--port", str(port)], tmp_path / "up.log", env_for(tmp_path)).start()
    eventually(lambda: (tmp_path / "client.toml").exists(), 30, what="bridgehead up")
    eventually(lambda: "Bridgehead is up" in proc.output(), 30, what="the ready line")
    assert proc.kill(signal.SIGTERM) in (0, -signal.SIGTERM)
    assert "Traceback" not in proc.output()


def test_logs_show_stdout_and_stderr_marked(up: tuple[Path, Proc], tmp_path: Path) -> None:
    home, _ = up
    code = ("import sys, time; print('out 1', flush=True); print('err 1', file=sys.stderr, "
            "flush=True); time.sleep(0.5); print('out 2'); sys.stderr.write('no newline')")
    followed = bh_in(home, tmp_path, "submit", "-f", "--", sys.executable, "-c", code)
    assert followed.returncode == 0, followed
    lines = followed.stdout.splitlines()[:4]  # then the job's table
    # Each stream in its own order, stderr's lines marked (the two interleave as they arrive).
    assert [line for line in lines if not line.startswith("[stderr] ")] == ["out 1", "out 2"]
    assert [line for line in lines if line.startswith("[stderr] ")] == [
        "[stderr] err 1", "[stderr] no newline"], followed.stdout
    jobs = json.loads(bh(home, "list", "--json", "--limit", "1000").stdout)["jobs"]
    job_id = next(j["id"] for j in reversed(jobs) if j["spec"]["command"][-1] == code)
    both = bh(home, "logs", job_id)
    assert both.stdout == "out 1\nout 2\n[stderr] err 1\n[stderr] no newline\n", both
    assert bh(home, "logs", job_id, "--stdout").stdout == "out 1\nout 2\n"
    assert bh(home, "logs", job_id, "--stderr").stdout == "err 1\nno newline"
    assert bh(home, "logs", "-f", job_id, "--stderr").stdout == "err 1\nno newline"


def test_relative_paths_run_where_the_user_stands(up: tuple[Path, Proc],
                                                  tmp_path: Path) -> None:
    home, _ = up
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\necho \"job.sh in $(pwd)\"\n")
    script.chmod(0o755)
    (tmp_path / "train.py").write_text("import sys\nprint('training', *sys.argv[1:])\n")
    run = bh_in(home, tmp_path, "submit", "--wait", "--json", "--", "./job.sh")
    assert run.returncode == 0, run
    job = json.loads(run.stdout)
    assert job["spec"]["working_dir"] == str(tmp_path.resolve())
    assert bh(home, "logs", job["id"]).stdout == f"job.sh in {tmp_path.resolve()}\n"
    train = bh_in(home, tmp_path, "submit", "-f", "--", "python3", "train.py", "--epochs", "3")
    assert train.returncode == 0 and "training --epochs 3" in train.stdout, train
    elsewhere = bh_in(home, tmp_path, "submit", "--wait", "--json", "--workdir", "/tmp", "--",
                      "./job.sh")
    assert elsewhere.returncode == 1  # --workdir is honoured: no job.sh in /tmp
    assert json.loads(elsewhere.stdout)["spec"]["working_dir"] == "/tmp"


def test_a_job_bigger_than_the_cluster_is_refused_at_submit(up: tuple[Path, Proc]) -> None:
    home, _ = up
    eventually(lambda: json.loads(bh(home, "clusters", "--json").stdout), 15, what="a cluster")
    before = len(json.loads(bh(home, "list", "--json", "--limit", "1000").stdout)["jobs"])
    refused = bh(home, "submit", "--cores", "8", "--", "true")
    assert refused.returncode == 2, refused
    [line] = refused.stderr.strip().splitlines()
    assert "asks for 8 cores" in line and "at most 4 cores" in line, line
    after = len(json.loads(bh(home, "list", "--json", "--limit", "1000").stdout)["jobs"])
    assert after == before  # nothing was stored
    capped = bh(home, "submit", "--wait", "--cores", "8", "--max-cores", "2", "--", "true")
    assert capped.returncode == 0, capped  # the cap makes it fit
