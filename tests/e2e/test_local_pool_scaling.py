"""Scaling on the embedded default: ``bridgehead up`` with the README's ``local`` pool in its
config.toml. From zero nodes, a queued job makes the scaler buy a node, the agent's
local provider adds its slots, the job runs on it, and the idle node is released after its
grace; a node with a job on it is never released."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.procs import Proc, bh, eventually, start_up

pytestmark = pytest.mark.slow

FAST = """
[server]
scale_interval_s = 0.5

[agent]
heartbeat_s = 0.5
"""
"""Scaler passes and heartbeats fast enough for a test (the defaults are 5 s each)."""
README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
_EXAMPLE = README.index("**Scaling on the embedded default.**")
POOL = re.search(r"```toml\n(.*?)```", README[_EXAMPLE:], re.S)[1]  # type: ignore[index]
"""The README's local pool (1 cpu a node, at most 2 nodes, 10 s idle grace), as a user
copies it."""
HOLD = "i=0; while [ ! -f \"$0\" ] && [ $i -lt 3000 ]; do sleep 0.1; i=$((i+1)); done"
"""A job (``sh -c HOLD <file>``) that runs until ``<file>`` exists (5 minutes at most: a test
that fails leaves no job running for long)."""


class Api:
    """The server of a ``bridgehead up`` in ``home``, as its admin (client.toml)."""

    def __init__(self, home: Path, proc: Proc) -> None:
        client = tomllib.loads((home / "client.toml").read_text())["client"]
        self.home, self.proc = home, proc
        self.http = httpx.Client(base_url=client["url"], timeout=30,
                                 headers={"Authorization": f"Bearer {client['token']}"})

    def submit(self, *command: str) -> str:
        r = self.http.post("/v1/jobs", json={"cluster": "local", "command": list(command)})
        assert r.status_code in (200, 201), r.text
        return str(r.json()["job"]["id"])

    def state(self, job_id: str) -> str:
        r = self.http.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return str(r.json()["state"])

    def nodes(self) -> list[dict[str, Any]]:
        """The pool's live nodes (terminated ones are not listed)."""
        r = self.http.get("/v1/pools")
        assert r.status_code == 200, r.text
        [pool] = r.json()
        assert pool["name"] == "laptop"
        return [n for n in pool["nodes"]
                if n["state"] not in ("terminated", "failed_boot", "lost")]

    def until(self, check: Callable[[], Any], what: str, timeout: float = 90) -> Any:
        """``eventually``; on timeout, the nodes and the end of ``up``'s log say where."""
        try:
            return eventually(check, timeout, what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; nodes: {json.dumps(self.nodes())}; up.log:\n"
                                 f"{self.proc.output()[-3000:]}") from None


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(FAST + POOL)
    proc = start_up(home, slots=4)
    api = Api(home, proc)
    yield api
    api.http.close()
    proc.kill()


def test_scale_from_zero_run_then_release_the_idle_node(api: Api, tmp_path: Path) -> None:
    pools = bh(api.home, "pools")  # as the README's commands show it
    assert pools.returncode == 0 and "laptop" in pools.stdout and "none" in pools.stdout, pools
    assert api.nodes() == []  # min_nodes 0: nothing before there is work
    release = tmp_path / "release"
    job = api.submit("sh", "-c", HOLD, str(release))
    [node] = api.until(api.nodes, "a node launched for the queued job")
    busy = api.until(lambda: [n for n in api.nodes() if n["state"] == "busy"], "a busy node")
    assert [n["id"] for n in busy] == [node["id"]] and busy[0]["jobs"] == 1
    api.until(lambda: api.state(job) == "running", "the job running")
    assert "1 busy" in bh(api.home, "pools").stdout
    assert len(api.nodes()) == 1  # one job of one core: one node, not max_nodes
    release.touch()
    api.until(lambda: api.state(job) == "succeeded", "the job to end")
    api.until(lambda: api.nodes() == [], "the idle node released after idle_grace_s")


def test_a_node_with_a_job_is_never_released(api: Api, tmp_path: Path) -> None:
    long, short = tmp_path / "long", tmp_path / "short"
    kept = api.submit("sh", "-c", HOLD, str(long))
    brief = api.submit("sh", "-c", HOLD, str(short))
    api.until(lambda: api.state(kept) == api.state(brief) == "running",
              "both jobs running, one node each")
    # The nodes' job counts come with the agent's next pool report, a heartbeat after the
    # jobs' own "running" reports: wait for it.
    def one_job_each() -> list[dict[str, Any]] | None:
        nodes = api.nodes()
        return nodes if [n["jobs"] for n in nodes] == [1, 1] else None

    nodes = api.until(one_job_each, "one job on each of two nodes")
    assert len(nodes) == 2 and all(n["jobs"] == 1 for n in nodes), nodes
    short.touch()
    api.until(lambda: len(api.nodes()) == 1,
              "the node of the job that ended released after its grace")
    [node] = api.nodes()  # by then the other node went past idle_grace_s busy: it stays
    assert node["state"] == "busy" and node["jobs"] == 1, node
    assert api.state(kept) == "running"
    long.touch()
    api.until(lambda: api.state(kept) == "succeeded", "the long job to end")
    api.until(lambda: api.nodes() == [], "the last node released")


def test_a_restart_loses_its_nodes_but_never_runs_their_jobs_again(tmp_path: Path) -> None:
    """A local pool's nodes live in the agent's process: ``up`` killed and started again
    finds them lost; the job on one went on under its supervisor and ends as attempt 1."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(FAST + POOL)
    release = tmp_path / "release"
    first = Api(home, start_up(home, slots=4))
    try:
        job = first.submit("sh", "-c", HOLD, str(release))
        [node] = first.until(lambda: [n for n in first.nodes() if n["state"] == "busy"],
                             "the job on a node")
        first.until(lambda: first.state(job) == "running", "the job running")
    finally:
        first.http.close()
        first.proc.kill()  # the agent and its nodes die; the job's supervisor does not
    again = Api(home, start_up(home, slots=4))
    try:
        def states() -> list[str]:
            r = again.http.get("/v1/events", params={
                "subject": f"pools/laptop/nodes/{node['id']}", "limit": 1000})
            assert r.status_code == 200, r.text
            return [e["data"]["state"] for e in r.json()["events"]]

        again.until(lambda: "lost" in states(), "the node of the dead agent lost")
        assert again.state(job) == "running"  # adopted by the new agent, not queued again
        release.touch()
        again.until(lambda: again.state(job) == "succeeded", "the job to end")
        r = again.http.get(f"/v1/jobs/{job}")
        assert r.json()["attempt"] == 1, r.text  # it ran once
    finally:
        again.http.close()
        again.proc.kill()
