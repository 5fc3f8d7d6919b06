"""The ``sim`` provider in a real agent against a real server: a cloud whose nodes never boot.
The agent launches what the scaler asks for and lists the nodes as not ready; the server
fails each boot at ``boot_timeout_s`` (the agent then terminates the node), buys a
replacement after its backoff, and quarantines the pool after ``quarantine_after`` failures in
a row. The agent's local backend, with no local pool, keeps its fixed slots."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_local_pool_scaling import FAST, HOLD
from tests.procs import eventually, stack

pytestmark = pytest.mark.slow

POOL = """
[[server.pools]]
name = "cloud"
cluster = "local"
provider = "sim"
shape = { cpus = 1, memory_mb = 512 }
max_nodes = 1
boot_timeout_s = 2
backoff_s = 0.5
quarantine_after = 2
options = { boot_s = 0.5, failed_boot_p = 1.0, seed = 3 }
"""


def test_nodes_that_never_boot_are_failed_replaced_then_the_pool_quarantined(
        tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(FAST + POOL)
    release = tmp_path / "release"
    with stack(home, slots=1) as s:
        http = httpx.Client(base_url=s.server.url, timeout=30,
                            headers={"Authorization": f"Bearer {s.admin}"})

        def submit() -> str:
            r = http.post("/v1/jobs", json={"cluster": "local",
                                            "command": ["sh", "-c", HOLD, str(release)]})
            assert r.status_code in (200, 201), r.text
            return str(r.json()["job"]["id"])

        def get(path: str) -> Any:
            r = http.get(path)
            assert r.status_code == 200, r.text
            return r.json()

        def pool() -> dict[str, Any]:
            [cloud] = get("/v1/pools")
            return dict(cloud)

        def state(job: str) -> str:
            return str(get(f"/v1/jobs/{job}")["state"])

        log = s.agents[0].output

        def until(check: Callable[[], Any], what: str, timeout: float = 120) -> Any:
            try:
                return eventually(check, timeout, what=what)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; pool: {pool()}; agent's log:\n"
                                     f"{log()[-3000:]}") from None

        first = submit()  # takes the agent's one fixed slot
        until(lambda: state(first) == "running", "the first job on the backend's own slot")
        waiting = submit()  # queued: demand for the pool
        quarantined = until(lambda: (p := pool())["quarantined"] and p, "the pool quarantined")
        assert quarantined["failures_in_row"] == 2, quarantined

        def stopped() -> bool:  # every node it launched, it terminated (none left billed)
            launched = set(re.findall(r"pool cloud: launch (\S+)", log()))
            ended = set(re.findall(r"pool cloud: terminate (\S+)", log()))
            return len(launched) == 2 and launched == ended  # a command may come twice

        until(stopped, "both nodes that never booted terminated by the agent")
        assert state(waiting) == "queued"
        release.touch()  # the fixed slot frees: the waiting job runs there
        until(lambda: state(first) == state(waiting) == "succeeded", "both jobs to succeed")
        http.close()
