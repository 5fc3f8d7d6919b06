"""Airflow tests need Airflow (the package and its ``airflow`` command): skipped locally with
the reason, a failure in CI."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tests.conftest import IN_CI


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
