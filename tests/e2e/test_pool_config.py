"""``[[server.pools]]`` in a real ``bridgehead server``: a bad table stops it at start (one
line naming the field, exit code 2); a good one gets a scaler, whose leased loop buys a node
for a queued job (the test is the agent: it heartbeats what its provider lists), and
``bridgehead pools`` shows it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.procs import Server, bh, env_for, eventually, free_port, make_token

GOOD = """
[[server.pools]]
name = "elastic"
cluster = "local"
provider = "local"
shape = { cpus = 2, memory_mb = 2048 }
"""


def _server(home: Path, config: str) -> subprocess.CompletedProcess[str]:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(config)
    return subprocess.run(
        [sys.executable, "-m", "bridgehead", "server", "--port", str(free_port()),
         "--store", f"sqlite:///{home / 'bh.db'}"],
        env=env_for(home), capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("extra", "field", "says"), [
    ("min_nodes = 3\nmax_nodes = 2", "pools[0].min_nodes", "more than max_nodes"),
    ("price_per_hour = -1.0", "pools[0].price_per_hour", "must be a number >= 0"),
    ('provider = "ec3"', "pools[0].provider", "unknown provider 'ec3'"),
    ("max_nodez = 4", "pools[0].max_nodez", "unknown field 'max_nodez'"),
    ("options = { boot_s = [1, 2] }", "pools[0].options.boot_s", "string, number or boolean"),
    ("options = { boot_z = 1 }", "pools[0].options.boot_z", "unknown option 'boot_z' for "
                                                            "provider local"),
    ('provider = "emr"', "pools[0].options.instance_type", "EC2 instance type"),
    ('provider = "emr"\nmax_nodes = 49\noptions = { instance_type = "m5.xlarge" }',
     "pools[0].max_nodes", "at most 48 nodes"),
])
def test_a_bad_pool_stops_the_server_naming_the_field(tmp_path: Path, extra: str, field: str,
                                                      says: str) -> None:
    config = GOOD.replace('provider = "local"\n', "") if "provider" in extra else GOOD
    done = _server(tmp_path / "home", config + extra + "\n")
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"bridgehead: error: {field}: "), line
    assert says in line, line


def test_a_second_pool_of_the_same_name_is_refused(tmp_path: Path) -> None:
    done = _server(tmp_path / "home", GOOD + GOOD)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == ("bridgehead: error: pools[1].name: pool 'elastic' is "
                                   "defined twice"), done.stderr


def test_the_scaler_runs_in_the_server_and_bridgehead_pools_shows_its_nodes(
        tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("[server]\nscale_interval_s = 0.2\n" + GOOD.replace(
        "[[server.pools]]", "[[server.pools]]\nprice_per_hour = 0.5\nmax_nodes = 2"))
    dsn = f"sqlite:///{home / 'bh.db'}"
    admin, agent = make_token(dsn, "admin"), make_token(dsn, "agent", "local")
    server = Server(dsn, home).start()
    try:
        (home / "client.toml").write_text(f'[client]\nurl = "{server.url}"\n'
                                          f'token = "{admin}"\n')
        assert bh(home, "submit", "--cores", "2", "--", "true").returncode == 0

        def beat(*nodes: dict[str, Any]) -> list[dict[str, Any]]:
            r = httpx.post(f"{server.url}/v1/agent/heartbeat", timeout=10,
                           headers={"Authorization": f"Bearer {agent}"},
                           json={"cluster": "local", "agent_id": "a1", "nodes": list(nodes)})
            assert r.status_code == 200, r.text
            return r.json()["scale"]

        [launch] = eventually(beat, 30, what="a launch command from the scaler's own loop")
        assert launch["op"] == "launch" and launch["pool"] == "elastic"
        beat({"provider_id": "p1", "pool": "elastic", "key": launch["key"], "ready": True})
        [pool] = json.loads(bh(home, "pools", "--json").stdout)
        assert pool["states"] == {"idle": 1} and pool["max_nodes"] == 2
        table = bh(home, "pools")
        assert table.returncode == 0, table.stderr
        assert "elastic" in table.stdout and "1 idle" in table.stdout and "0/2" in table.stdout
        [lifted] = json.loads(bh(home, "pools", "--lift", "elastic", "--json").stdout)
        assert (lifted["quarantined"], lifted["failures_in_row"]) == (False, 0)
        cost = bh(home, "cost", "--by", "cluster")
        assert cost.returncode == 0, cost.stderr
        # the node is up, billed at least its minimum (60 s at 0.5/h), and ran nothing
        assert re.search(r"pool elastic \(local\): nodes (0\.0[1-9]) over [0-9.]+ node-hours, "
                         r"used by attempts 0\.00, idle \1", cost.stdout), cost.stdout
        wrong = bh(home, "pools", "--lift", "nope")
        assert wrong.returncode == 2 and wrong.stderr.strip() == (
            "bridgehead: error: 404: no pool 'nope' (see GET /v1/pools)"), wrong.stderr
    finally:
        server.kill()


def test_one_scaler_leads_among_replicas_and_another_takes_over(
        tmp_path: Path, pg_database: str) -> None:
    """Two servers on one PostgreSQL store: one scaler leads; killed, the other takes over
    from the store and buys for new demand."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text("[server]\nscale_interval_s = 0.2\n" + GOOD)
    admin, agent = make_token(pg_database, "admin"), make_token(pg_database, "agent", "local")
    servers = [Server(pg_database, home).start(), Server(pg_database, home).start()]
    auth = {"Authorization": f"Bearer {admin}"}

    def leading(server: Server) -> bool:
        text = httpx.get(f"{server.url}/metrics", headers=auth, timeout=10).text
        return 'bridgehead_consumer_leading{consumer="scaler"} 1.0' in text

    def beat(server: Server) -> list[dict[str, Any]]:
        r = httpx.post(f"{server.url}/v1/agent/heartbeat", timeout=10,
                       headers={"Authorization": f"Bearer {agent}"},
                       json={"cluster": "local", "agent_id": "a1", "nodes": []})
        return [c for c in r.json()["scale"] if c["op"] == "launch"]

    def submit(server: Server) -> None:
        r = httpx.post(f"{server.url}/v1/jobs", headers=auth, timeout=10,
                       json={"cluster": "local", "command": ["true"],
                             "resources": {"cores": 2}})
        assert r.status_code == 201, r.text

    try:
        eventually(lambda: [leading(s) for s in servers].count(True) == 1, 60,
                   what="one scaler leading")
        [leader] = [s for s in servers if leading(s)]
        [other] = [s for s in servers if s is not leader]
        assert not leading(other)
        submit(other)
        eventually(lambda: len(beat(other)) == 1, 30, what="one launch")
        leader.kill()
        eventually(lambda: leading(other), 90, what="the other scaler leading")
        submit(other)
        eventually(lambda: len(beat(other)) == 2, 30, what="a second launch")
    finally:
        for s in servers:
            s.kill()
