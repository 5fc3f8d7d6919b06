"""Airflow tests need Airflow: skipped locally with the reason, a failure in CI."""

from __future__ import annotations

import importlib.util
import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_airflow() -> None:
    if importlib.util.find_spec("airflow") is not None:
        return
    reason = "Apache Airflow is not installed (pip install -e '.[airflow]')"
    if IN_CI:
        pytest.fail(f"Airflow is required in CI: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)
