"""Airflow tests need Airflow (the package and its ``airflow`` command): skipped locally with
the reason, a failure in CI. They run on Airflow 3 (``.venv``) and 2.10 (``scripts/airflow-210``);
``AIRFLOW_2`` marks the few that only the first can run, read from the package's metadata so
that nothing imports Airflow at collection."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from pathlib import Path

import pytest

from tests.conftest import IN_CI


def _airflow_major() -> int | None:
    try:
        return int(importlib.metadata.version("apache-airflow").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        return None


AIRFLOW_2 = _airflow_major() == 2
STANDALONE_IS_AIRFLOW_3 = (
    "Airflow 2.10: tests/airflow/standalone.py drives Airflow 3's api-server, simple auth "
    "manager and /api/v2 (its DAG files import airflow.sdk); on 2.10 dag.test() runs the "
    "deferral round trip and the launcher's /api/v1 is tested against a fake "
    "(test_launcher_unit.py)")


def require_airflow() -> None:
    """Call at module level (skips the module) or in a fixture (skips its tests)."""
    reason = None
    if importlib.util.find_spec("airflow") is None:
        reason = "Apache Airflow is not installed (pip install -e '.[airflow]')"
    elif not (Path(sys.executable).parent / "airflow").exists():
        reason = f"no airflow executable beside {sys.executable}"
    if reason is None:
        return
    if IN_CI:
        pytest.fail(f"Airflow is required in CI: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)
