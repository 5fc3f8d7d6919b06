"""A REST agent with no hook socket on its host learns a job's end from the Slurm hook's event
through the server: the lab's alpha runs ``bridgehead slurm-event --server`` (a hook.d drop-in
running this interpreter), the server wakes alpha's agent, whose claim long-poll answers with
``poll``. Its poll interval is 60 s: ending within 15 s is impossible by polling."""

from __future__ import annotations

import os
import re
import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from bridgehead.client import Client
from bridgehead.domain.jobs import JobSpec, JobState
from tests.procs import Stack, eventually, make_token
from tests.slurm.conftest import Lab
from tests.slurm.test_agent_e2e import bh_stack, start_slurm_agent  # noqa: F401 - fixture

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


@contextmanager
def hook_drop_in(lab: Lab, cluster: str, s: Stack) -> Iterator[Path]:
    """Install a hook.d drop-in of ``cluster`` posting job events to ``s``'s server with an
    agent token of the cluster (in a 600 file); yields its spool dir; removed at the end."""
    c = lab.cluster(cluster)
    hook_dir = Path(c.get("hook_dir") or Path(c["hook_cmd"]).parent / "hook.d")
    if not hook_dir.is_dir() or "hook.d" not in Path(c["hook_cmd"]).read_text():
        lab.lab_cmd("up")  # an older lab: up rewrites hook.cmd (no restart)
        hook_dir.mkdir(exist_ok=True)
    token = s.home / f"hook-{cluster}.token"
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(make_token(s.dsn, "agent", cluster) + "\n")
    spool = s.home / f"hook-spool-{cluster}"
    script = hook_dir / f"test-{secrets.token_hex(4)}"
    tmp = hook_dir / f".{script.name}.tmp"
    tmp.write_text(f"#!/bin/sh\nexec {sys.executable} -m bridgehead.backends.slurm_event "
                   f"--server {s.server.url} --token-file {token} --spool-dir {spool}\n")
    tmp.chmod(0o755)
    tmp.rename(script)  # never half-written when slurmctld runs it
    try:
        yield spool
    finally:
        script.unlink(missing_ok=True)


def test_a_rest_agent_on_another_host_learns_a_jobs_end_from_the_hooks_event(
        bh_stack: tuple[Stack, Client], lab: Lab) -> None:  # noqa: F811
    s, bh = bh_stack
    with hook_drop_in(lab, "alpha", s) as spool:
        agent = start_slurm_agent(s, lab, "alpha", backend="slurm_rest", poll=60.0, hook=False)
        eventually(lambda: agent.alive and any(
            c["name"] == "alpha" and c["online"] for c in bh.clusters()), 60,
            what="the agent to come online")
        job = bh.submit(JobSpec(cluster="alpha", command=("sh", "-c", "sleep 3; exit 5")))
        eventually(lambda: bh.get(job.id).state is JobState.RUNNING, 60,
                   what="the job to run (the prolog's event wakes the agent)")
        started = time.monotonic()
        done = bh.wait(job.id, until="terminal", timeout=60)
        assert time.monotonic() - started < 15, "only a poll (every 60 s) saw the end"
        assert (done.state, done.exit_code) == (JobState.FAILED, 5)
        ends = [e for e in bh.events(after=0, limit=1000)["events"]
                if e["type"] == "slurm.job.finished" and e["subject"] == done.native_id]
        assert len(ends) == 1 and ends[0]["source"] == "slurm/alpha", ends
        assert ends[0]["data"]["exit_code"] == 5 and ends[0]["data"]["comment"] == job.id
        metrics = httpx.get(f"{s.server.url}/metrics",
                            headers={"Authorization": f"Bearer {s.admin}"}).text
        hints = re.search(r'bridgehead_agent_poll_hints_total\{cluster="alpha"\} (\S+)', metrics)
        assert hints and float(hints.group(1)) >= 1, "the agent was never woken by an event"
        wakes = eventually(lambda: next(c for c in bh.clusters() if c["name"] == "alpha")
                           ["info"].get("wakes", {}).get("server"), 30,
                           what="the agent's heartbeat to count the server's wake-ups")
        assert wakes >= 1
        assert not list(spool.glob("*.json"))  # every event reached the server
