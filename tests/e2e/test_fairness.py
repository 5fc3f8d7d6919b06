"""A token flooding the server is refused 429 with Retry-After once it has
``max_requests_per_token`` requests in service; the other tokens are not: a normal client's
submits are accepted at the first try and an agent runs their jobs to the end meanwhile (the
figures: bench/fairness.py; the SDK's wait for Retry-After: tests/unit/test_client_retry.py).
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest

from bridgehead.client import Client
from bridgehead.domain.jobs import JobState
from tests.procs import Agent, Server, eventually, make_token

pytestmark = pytest.mark.slow

LIMIT = 2
FLOODERS = 12
BATCH = {"jobs": [{"cluster": "nowhere", "command": ["true"], "name": "flood"}] * 50}


class Flood:
    """Threads sending batch submits with one token, as fast as answers come, never waiting
    a Retry-After; every answer's status (and each 429's Retry-After and detail) is kept."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.statuses: Counter[int] = Counter()
        self.refusals: list[tuple[str | None, str]] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True)
                        for _ in range(FLOODERS)]

    def __enter__(self) -> Flood:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def _run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=60) as http:
            while not self.stop.is_set():
                r = http.post("/v1/jobs/batch", json=BATCH)
                with self.lock:
                    self.statuses[r.status_code] += 1
                    if r.status_code == 429:
                        self.refusals.append((r.headers.get("retry-after"),
                                              r.json()["detail"]))


def test_a_flooding_token_is_refused_429_and_the_others_go_on(tmp_path: Path,
                                                              pg_database: str) -> None:
    server = Server(pg_database, tmp_path)
    server.env["BRIDGEHEAD_MAX_REQUESTS_PER_TOKEN"] = str(LIMIT)
    server.start()
    admin, flooder = make_token(pg_database, "admin"), make_token(pg_database, "admin")
    agent = Agent(server.url, make_token(pg_database, "agent", "local"), tmp_path).start()
    try:
        with Flood(server.url, flooder) as flood, \
                httpx.Client(base_url=server.url, timeout=60,
                             headers={"Authorization": f"Bearer {admin}"}) as normal:
            eventually(lambda: flood.statuses[429] > 0, 120, what="the flooder refused 429")
            submitted = []
            for i in range(5):  # each accepted at the first try: no 429 for this token
                r = normal.post("/v1/jobs", json={"cluster": "local", "command": ["true"],
                                                  "name": f"normal-{i}"})
                assert r.status_code == 201, r.text
                submitted.append(r.json()["job"]["id"])
            with Client(server.url, admin) as bh:
                ends = [bh.wait(j, until="terminal", timeout=120) for j in submitted]
            assert flood.statuses[429] > 0  # still flooding, still refused
    finally:
        agent.kill()
        server.kill()
    assert [j.state for j in ends] == [JobState.SUCCEEDED] * 5
    assert set(flood.statuses) <= {200, 429}, flood.statuses  # refused, never failed
    assert flood.statuses[200] > 0  # served up to its share
    retry_after, detail = flood.refusals[0]
    assert retry_after == "1"
    assert "max_requests_per_token" in detail
    assert all(r == flood.refusals[0] for r in flood.refusals)
