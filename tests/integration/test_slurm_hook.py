"""``bridgehead slurm-event --server``: the Slurm hook posts the job's start/end to a real
server (deduped on retry), spools what an unreachable server cannot take and sends it with the
next call, refuses a token file others may read, and always exits 0."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.procs import Server, Stack, eventually, free_port, make_token, stack

EPILOG = {"SLURM_SCRIPT_CONTEXT": "epilog_slurmctld", "SLURM_CLUSTER_NAME": "alpha",
          "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "wrf", "SLURM_JOB_USER": "ana",
          "SLURM_JOB_COMMENT": "j-abc", "SLURM_JOB_EXIT_CODE2": "3:0",
          "SLURM_JOB_START_TIME": "1700000000", "SECRET_OF_THE_JOB": "x"}
PROLOG = {**EPILOG, "SLURM_SCRIPT_CONTEXT": "prolog_slurmctld", "SLURM_JOB_ID": "4243"}


def hook(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridgehead.backends.slurm_event", *args],
                          env={"PATH": os.environ["PATH"], **env}, capture_output=True,
                          text=True, timeout=60)


def token_file(tmp_path: Path, secret: str, mode: int = 0o600) -> Path:
    path = tmp_path / "hook.token"
    path.write_text(secret + "\n")
    path.chmod(mode)
    return path


def logged(server: Server, admin: str) -> list[dict]:
    r = httpx.get(f"{server.url}/v1/events", headers={"Authorization": f"Bearer {admin}"},
                  params={"limit": 1000})
    return r.json()["events"]


@pytest.fixture
def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    dsn = f"sqlite:///{tmp_path / 'bh.db'}"
    tokens = {"admin": make_token(dsn, "admin"), "agent": make_token(dsn, "agent", "alpha")}
    running = Server(dsn, tmp_path).start()
    try:
        yield running, tokens
    finally:
        running.kill()


def test_the_hook_posts_the_jobs_end_once(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    srv, tokens = server
    args = ("--server", srv.url, "--token-file", str(token_file(tmp_path, tokens["agent"])),
            "--spool-dir", str(tmp_path / "spool"))
    for _ in range(2):  # slurmctld may run a hook again: one event
        done = hook(EPILOG, *args)
        assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    [event] = logged(srv, tokens["admin"])
    assert (event["type"], event["source"], event["subject"]) == (
        "slurm.job.finished", "slurm/alpha", "4242")
    assert event["id"] == "alpha:4242:finished:1700000000"
    data = event["data"]
    assert (data["exit_code"], data["signal"], data["comment"], data["name"]) == (
        3, 0, "j-abc", "wrf")
    assert "SECRET_OF_THE_JOB" not in json.dumps(event) and tokens["agent"] not in str(event)
    assert not list((tmp_path / "spool").glob("*.json"))


def test_an_unreachable_server_spools_and_the_next_call_sends(tmp_path: Path) -> None:
    dsn = f"sqlite:///{tmp_path / 'bh.db'}"
    tokens = {"admin": make_token(dsn, "admin"), "agent": make_token(dsn, "agent", "alpha")}
    port = free_port()  # nobody listens there yet
    spool = tmp_path / "spool"
    args = ("--server", f"http://127.0.0.1:{port}", "--token-file",
            str(token_file(tmp_path, tokens["agent"])), "--spool-dir", str(spool))
    for env in (EPILOG, PROLOG, EPILOG):  # slurmctld retried the first: still one event
        assert hook(env, *args).returncode == 0
    kept = sorted(spool.glob("*.json"))
    assert len(kept) == 2 and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in kept)
    assert "unreachable" in (spool / "last-error").read_text()
    srv = Server(dsn, tmp_path, port=port).start()
    try:
        later = {**EPILOG, "SLURM_JOB_ID": "4244"}
        assert hook(later, *args).returncode == 0
        events = logged(srv, tokens["admin"])
        assert sorted(e["subject"] for e in events) == ["4242", "4243", "4244"]
        assert not list(spool.glob("*.json"))
    finally:
        srv.kill()


def test_a_server_that_does_not_answer_is_not_waited_on_again(tmp_path: Path) -> None:
    """A hung server (it accepts, never answers) costs one call its timeout; the calls after
    it spool at once for a while instead of holding up each job's start again."""
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)
    spool = tmp_path / "spool"
    args = ("--server", f"http://127.0.0.1:{hung.getsockname()[1]}", "--token-file",
            str(token_file(tmp_path, "bh_whatever")), "--spool-dir", str(spool),
            "--timeout", "0.5")
    try:
        for job in ("1", "2", "3"):
            assert hook({**EPILOG, "SLURM_JOB_ID": job}, *args).returncode == 0
        hung.setblocking(False)
        tries = 0
        with contextlib.suppress(BlockingIOError):
            while hung.accept():
                tries += 1
    finally:
        hung.close()
    assert tries == 1 and len(list(spool.glob("*.json"))) == 3
    assert "timed out" in (spool / "last-error").read_text()


def test_a_token_file_others_may_read_is_not_used(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    srv, tokens = server
    loose = token_file(tmp_path, tokens["agent"], mode=0o644)
    spool = tmp_path / "spool"
    done = hook(EPILOG, "--server", srv.url, "--token-file", str(loose), "--spool-dir",
                str(spool))
    assert done.returncode == 0
    assert logged(srv, tokens["admin"]) == []
    assert "mode 600" in (spool / "last-error").read_text()


def test_a_refused_event_is_dropped_not_retried(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    srv, tokens = server
    spool = tmp_path / "spool"
    other = {**EPILOG, "SLURM_CLUSTER_NAME": "beta"}  # alpha's token may not post as beta
    done = hook(other, "--server", srv.url, "--token-file",
                str(token_file(tmp_path, tokens["agent"])), "--spool-dir", str(spool))
    assert done.returncode == 0
    assert logged(srv, tokens["admin"]) == [] and not list(spool.glob("*.json"))
    assert "HTTP 403" in (spool / "last-error").read_text()


def test_an_agent_elsewhere_is_woken_by_the_hooks_event(tmp_path: Path) -> None:
    """A real agent (local backend, no wake socket shared with the hook, 60 s polls): the
    hook's event reaches it through its claim long-poll, and it counts the wake-up."""
    with stack(tmp_path, poll=60.0, BRIDGEHEAD_HEARTBEAT_S="0.5") as s:
        eventually(lambda: any(c["name"] == "local" and c["online"]
                               for c in clusters(s)), 30, what="the agent online")
        eventually(lambda: waiters(s) > 0, 30, what="the agent's claim to wait on the server")
        env = {**EPILOG, "SLURM_CLUSTER_NAME": "local"}
        done = hook(env, "--server", s.server.url, "--token-file",
                    str(token_file(tmp_path, s.agent_token)))
        assert done.returncode == 0
        wakes = eventually(lambda: next(c for c in clusters(s) if c["name"] == "local")
                           ["info"].get("wakes", {}).get("server"), 30,
                           what="the agent to count the server's wake-up")
        assert wakes == 1


def clusters(s: Stack) -> list[dict]:
    return httpx.get(f"{s.server.url}/v1/clusters",
                     headers={"Authorization": f"Bearer {s.admin}"}).json()


def waiters(s: Stack) -> float:
    text = httpx.get(f"{s.server.url}/metrics",
                     headers={"Authorization": f"Bearer {s.admin}"}).text
    found = re.search(r"^bridgehead_waiters (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0
