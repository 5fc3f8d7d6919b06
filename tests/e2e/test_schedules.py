"""Schedules with real server processes driven by a fake clock (the test-only ``[server]
schedule_clock_file``): two servers on PostgreSQL start one run per tick, none is lost when
the leading server is killed and restarted, the missed ticks are caught up as configured, and
runs never overlap with ``max_active_runs: 1``. And ``bridgehead workflow schedule``."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.e2e.test_cli_workflow import CLI
from tests.procs import Agent, Server, eventually, make_token, stack

pytestmark = pytest.mark.slow

T0 = 1_800_000_000  # a multiple of 60
WORKFLOW = """\
name: nightly
params: {day: today}
defaults: {cluster: local}
steps:
  - id: a
    command: [echo, "{{ params.day }}"]
schedule: {every: 60, catchup: all, max_catchup: 3, params: {day: scheduled}}
"""


def home_with(tmp_path: Path, workflow: str = WORKFLOW) -> tuple[Path, Path]:
    """A BRIDGEHEAD_HOME whose config.toml gives the servers the workflow folder and the
    fake clock (returned)."""
    home, folder, clock = tmp_path / "home", tmp_path / "workflows", tmp_path / "clock"
    home.mkdir()
    folder.mkdir()
    (folder / "nightly.yaml").write_text(workflow)
    clock.write_text(str(T0 + 1))
    (home / "config.toml").write_text(
        f'[server]\nworkflows_dir = "{folder}"\nschedule_clock_file = "{clock}"\n'
        "schedule_pass_s = 0.3\n")
    return home, clock


def runs(dsn: str) -> list[dict[str, Any]]:
    """The workflow's runs as stored (with the key of the tick that started each)."""
    async def read() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT idempotency_key, state, params, created_at, finished_at "
                "FROM workflow_runs WHERE workflow = 'nightly' ORDER BY created_at")
        finally:
            await conn.close()
        return [dict(r) for r in rows]

    return asyncio.run(read())


def runs_ended(dsn: str, count: int) -> list[dict[str, Any]] | None:
    """The runs, once there are ``count`` and all have ended."""
    found = runs(dsn)
    ended = [r for r in found if r["state"] != "running"]
    return found if len(found) == count and len(ended) == count else None


def leader_pid(dsn: str) -> int:
    async def holder() -> str:
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetchval(
                "SELECT holder FROM leases WHERE name = 'scheduler' AND expires_at > "
                "extract(epoch from now())") or ""
        finally:
            await conn.close()

    found = eventually(lambda: asyncio.run(holder()), 30, what="a scheduler leader")
    return int(found.split(":")[1])


def test_two_servers_one_run_per_tick_across_a_leader_restart(pg_database: str,
                                                              tmp_path: Path) -> None:
    home, clock = home_with(tmp_path)
    admin = make_token(pg_database, "admin")
    servers = [Server(pg_database, home).start(), Server(pg_database, home).start()]
    agent = Agent(",".join(s.url for s in servers), make_token(pg_database, "agent", "local"),
                  home).start()
    try:
        url = servers[1].url
        eventually(lambda: httpx.get(f"{url}/v1/schedules", timeout=5, headers={
            "Authorization": f"Bearer {admin}"}).json(), 30, what="the schedule synced")
        for step in (1, 2):  # one run per tick, whichever server leads
            clock.write_text(str(T0 + 60 * step))
            eventually(lambda n=step: runs_ended(pg_database, n), 60, what=f"run {step}")

        leader = next(s for s in servers if s.popen and s.popen.pid == leader_pid(pg_database))
        leader.kill(signal.SIGKILL)
        clock.write_text(str(T0 + 60 * 7))  # five ticks fall while the leader is dead
        standby = next(s for s in servers if s is not leader)
        restarted = Server(pg_database, home, port=leader.port).start()
        servers.append(restarted)
        done = eventually(lambda: runs_ended(pg_database, 5), 120,
                          what="the ticks caught up")
        assert standby.alive
    finally:
        agent.kill()
        for s in servers:
            if s.alive:
                s.kill()
    keys = [r["idempotency_key"] for r in done]
    # catchup: all with max_catchup 3: the three newest of the five missed ticks
    assert keys == [f"schedule:nightly:{T0 + 60 * k}" for k in (1, 2, 5, 6, 7)], keys
    assert {r["state"] for r in done} == {"succeeded"}
    assert {r["params"] for r in done} == {json.dumps({"day": "scheduled"})}
    for before, after in itertools.pairwise(done):  # max_active_runs 1: no overlap
        assert after["created_at"] >= before["finished_at"], (before, after)


def test_cli_lists_pauses_and_resumes(tmp_path: Path) -> None:
    home, _clock = home_with(tmp_path, WORKFLOW.replace(
        "schedule: {every: 60,", 'schedule: {cron: "0 2 * * *", timezone: Europe/Paris,'))
    with stack(home, agent=False) as s:
        bh = CLI(s, tmp_path)
        listed = eventually(lambda: bh.json("workflow", "schedule", "list"), 30,
                            what="the schedule synced")
        [one] = listed
        assert (one["workflow"], one["when"], one["paused"]) == (
            "nightly", "0 2 * * * (Europe/Paris)", False)
        # 2026-01-15T08:00Z is T0: the next 02:00 in Paris (UTC+1 in January) is 01:00Z
        assert one["next_runs"][:2] == ["2027-01-16T01:00:00Z", "2027-01-17T01:00:00Z"]
        table = bh("workflow", "schedule", "list")
        assert table.returncode == 0 and "nightly" in table.stdout
        assert "2027-01-16T01:00:00Z" in table.stdout
        paused = bh.json("workflow", "schedule", "pause", "nightly")
        assert paused["paused"] is True and paused["next_runs"] == []
        assert bh.json("workflow", "schedule", "list")[0]["paused"] is True
        resumed = bh("workflow", "schedule", "resume", "nightly")
        assert resumed.returncode == 0 and "resumed; next run 2027-01-16T01:00:00Z" in \
            resumed.stdout, resumed
        missing = bh("workflow", "schedule", "pause", "nope")
        assert missing.returncode == 2
        assert missing.stderr.strip() == \
            "bridgehead: error: 404: no schedule for workflow 'nope'", missing.stderr
