"""Shared fixtures: real stores on SQLite and PostgreSQL.

PostgreSQL comes from ``BRIDGEHEAD_TEST_PG_DSN`` (default: the local server). Each test gets a
fresh database cloned from a migrated template. When PostgreSQL is unreachable the tests that
need it are skipped locally with the reason, and fail under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from bridgehead.store import JobStore, create_store

PG_DSN = os.environ.get("BRIDGEHEAD_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pg_dsn_for(database: str) -> str:
    parts = urlsplit(PG_DSN)
    return urlunsplit(parts._replace(path=f"/{database}"))


def _pg_unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(f"PostgreSQL not reachable at {PG_DSN}: {reason}")


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_DSN, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated template database for the session."""
    name = f"bh_tmpl_{os.getpid()}_{secrets.token_hex(3)}"

    async def setup() -> None:
        await _admin(f"CREATE DATABASE {name}")
        store = create_store(pg_dsn_for(name))
        await store.open()
        await store.close()

    try:
        asyncio.run(setup())
    except Exception as exc:  # any connection failure: skip locally, fail in CI
        _pg_unavailable(repr(exc))
    yield name
    asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def pg_database(pg_template: str) -> Iterator[str]:
    """A fresh database (cloned from the template) for one test; yields its DSN."""
    name = f"bh_t_{secrets.token_hex(6)}"
    asyncio.run(_admin(f"CREATE DATABASE {name} TEMPLATE {pg_template}"))
    yield pg_dsn_for(name)
    asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(params=["sqlite", "postgres"])
def store_dsn(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bh.db'}"
    return request.getfixturevalue("pg_database")


@pytest.fixture
async def store(store_dsn: str) -> AsyncIterator[JobStore]:
    s = create_store(store_dsn)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


_last_test = ["(none)"]
"""The test that ran last (for the message below)."""


@pytest.fixture(autouse=True)
def _no_event_loop_left_running(request: pytest.FixtureRequest) -> Iterator[None]:
    """An event loop left marked running in the main thread makes every later asyncio.run()
    fail ("cannot be called from a running event loop"), far from the cause: a test that
    finds one names the test that ran before it. tests/ui is exempt while it runs: Playwright's
    sync API keeps its loop running for the package's browser, torn down after its last test."""
    if request.node.path.parent.name != "ui" and asyncio._get_running_loop() is not None:
        leaked = asyncio._get_running_loop()
        asyncio.events._set_running_loop(None)  # so the tests after this one can run
        pytest.fail(f"an event loop was left running in the main thread by {_last_test[0]} "
                    f"or a fixture that ended after it: {leaked!r}")
    yield
    _last_test[0] = request.node.nodeid


SERIAL_GROUPS = {
    "tests/slurm/test_pool": "slurm-delta",
    "tests/slurm/test_slurm_programs.py": "slurm-delta",
    "tests/slurm/": "slurm",
    "tests/e2e/test_chaos.py": "slurm",
    "tests/spark/": "spark",
    "tests/livy/": "spark",
    "tests/airflow/": "airflow",
    "tests/ui/": "ui",
}
"""Tests that share one lab (or one package-wide browser) and must run one after another, in
one pytest-xdist worker (``scripts/test`` runs the suite with ``-n 3 --dist loadgroup``), by
the first prefix of their node id that matches. delta (the elastic cluster) is a lab of its
own beside alpha, beta and gamma: its tests run beside theirs. Everything else runs on any
worker: each test has its own databases, ports and homes."""


def serial_group(nodeid: str) -> str | None:
    return next((g for prefix, g in SERIAL_GROUPS.items() if nodeid.startswith(prefix)), None)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's, when it is installed
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` with :data:`SERIAL_GROUPS` as the groups. (xdist's own loadgroup
    reads ``xdist_group`` marks into node ids by setting ``Item._nodeid``, which pytest 9.2
    no longer reads, so its groups are silently ignored.) The largest group goes out first:
    xdist orders its work units by size."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SerialGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return serial_group(nodeid) or nodeid

    return SerialGroups(config, log)
