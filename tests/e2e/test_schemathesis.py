"""Schemathesis over the live OpenAPI document: no 5xx, no answer the document does not describe.

A real server process on loopback (on PostgreSQL, the production store) is probed with the
``st`` CLI, all phases (examples, coverage, fuzzing, stateful) and all checks but
``positive_data_acceptance`` (a body the schema admits may still be refused with a 4xx naming
why: a job with neither command nor script, a workflow whose YAML is not one), once with each
role's token:

- admin, client (tenant ``default``, the examples' tenant), agent (cluster ``local``): every
  operation but ``DELETE /v1/tokens/{token_id}`` (it could revoke the token the run uses) and
  the SSE stream (an answer that never ends; ``test_authz_matrix`` reads it);
- the token revocation alone, with an admin token of its own.

The examples are bounded and the seed fixed, so a run takes about a minute; long-polls are
held at most ``BRIDGEHEAD_MAX_WAIT_S`` (0.3 s). Widen the search by hand with ``st run``
against ``bridgehead up`` (``--max-examples``, another ``--seed``).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridgehead.cli.tokens import create_in_store
from tests.procs import Server

pytestmark = pytest.mark.slow

ST = Path(sys.executable).with_name("st")
SEED = "20240612"
MAX_EXAMPLES = "10"
NOT_ALONE = ("--exclude-path", "/v1/tokens/{token_id}", "--exclude-path", "/v1/events/stream")
REVOKE_ONLY = ("--include-path", "/v1/tokens/{token_id}")


def _token(dsn: str, role: str, *, cluster: str | None = None, tenant: str | None = None,
           name: str | None = None) -> str:
    out = asyncio.run(create_in_store(dsn, name or f"st-{role}", role, cluster, tenant))
    return out["token"]


def _st(url: str, token: str, cwd: Path, *selection: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ST), "run", f"{url}/openapi.json", "-H", f"Authorization: Bearer {token}",
         "--checks", "all", "--exclude-checks", "positive_data_acceptance",
         "--max-examples", MAX_EXAMPLES, "--seed", SEED, "--workers", "1",
         "--request-timeout", "30", "--max-response-time", "25",  # a busy machine is slow
         "--generation-database", "none", "--no-color",
         *selection],
        cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


def test_every_role_finds_no_5xx_and_no_schema_violation(pg_database: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    store_dsn = pg_database
    runs = {
        "admin": (_token(store_dsn, "admin"), NOT_ALONE),
        "client default": (_token(store_dsn, "client", tenant="default"), NOT_ALONE),
        "agent local": (_token(store_dsn, "agent", cluster="local"), NOT_ALONE),
        "admin, revoke only": (_token(store_dsn, "admin", name="st-revoker"), REVOKE_ONLY),
    }
    server = Server(store_dsn, tmp_path)
    server.env["BRIDGEHEAD_MAX_WAIT_S"] = "0.3"
    server.start()
    failed, took = [], {}
    try:
        for who, (token, selection) in runs.items():
            start = time.monotonic()
            result = _st(server.url, token, tmp_path, *selection)
            took[who] = round(time.monotonic() - start, 1)
            if result.returncode != 0:
                failed.append(f"== st run as {who}: exit {result.returncode}\n"
                              f"{result.stdout[-20000:]}\n{result.stderr[-2000:]}")
    finally:
        server.kill()
    with capsys.disabled():
        print(f"\nschemathesis seconds by token: {took}")
    assert not failed, "\n".join(failed) + f"\nserver log:\n{server.output()[-5000:]}"
    assert "Traceback" not in server.output(), server.output()[-5000:]
