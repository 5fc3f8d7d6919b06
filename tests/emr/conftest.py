"""EMR through moto in this process plus :mod:`bridgehead.testing.emr_sim` (clusters boot,
steps run for real on this host, a cluster can die with a reason code, requests can be
throttled). moto and boto3 come with the ``emr`` extra; without them the tests are skipped
locally with the reason and fail under ``CI=true``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from bridgehead.backends.base import NativeStatus
from bridgehead.config import EmrSettings
from tests.conftest import IN_CI

try:
    from bridgehead.backends.emr import EmrBackend
    from bridgehead.testing.emr_sim import EmrSimulator
except ImportError as exc:  # the emr extra is not installed
    if IN_CI:
        raise
    pytest.skip(f"the emr extra (boto3, moto) is not installed: {exc}", allow_module_level=True)

BOOT_S = 0.4
LOG_URI = "s3://bh-logs/emr/"


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials: nothing here may reach real AWS."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null",
                        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[EmrSimulator]:
    with EmrSimulator(boot_s=BOOT_S, work_dir=tmp_path / "sim") as simulator:
        yield simulator


def settings(sim: EmrSimulator, pool: str = "p", **kw: Any) -> EmrSettings:
    given: dict[str, Any] = {"pool": pool, "endpoint_url": sim.endpoint_url,
                             "step_concurrency": 4, "min_clusters": 0, "max_clusters": 1,
                             "idle_timeout_s": 60.0, "log_uri": LOG_URI}
    return EmrSettings(**{**given, **kw})


def backend(sim: EmrSimulator, state_dir: Path, pool: str = "p", **kw: Any) -> EmrBackend:
    return EmrBackend(settings(sim, pool, **kw), state_dir=state_dir)


async def until(backend: EmrBackend, tags: Sequence[str],
                done: Callable[[dict[str, NativeStatus]], bool], timeout: float = 60,
                every: float = 0.1) -> dict[str, NativeStatus]:
    """Poll as the agent does until ``done`` holds for the answer."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = await backend.poll(list(tags))
        if done(statuses):
            return statuses
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last answer {statuses}")
        await asyncio.sleep(every)


def ended(tags: Sequence[str]) -> Callable[[dict[str, NativeStatus]], bool]:
    return lambda s: all(t in s and s[t].state.terminal for t in tags)
