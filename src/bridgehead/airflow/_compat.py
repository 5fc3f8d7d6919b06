"""Airflow 2.10 and 3.x spell a few imports differently; this module is the one place that
knows. Everything else in the provider imports Airflow names from here.

Besides the import paths, one behaviour differs: a deferral that times out resumes the task
with ``TaskDeferralTimeout`` on Airflow 3, but with a plain ``TaskDeferralError`` carrying the
scheduler's message on 2.10 (:func:`deferral_timed_out` tells both).
"""

from __future__ import annotations

import asyncio
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow import __version__ as AIRFLOW_VERSION

try:  # Airflow 3: the task SDK
    from airflow.sdk import DAG, BaseHook, BaseOperator, task
    from airflow.sdk.exceptions import (
        AirflowException,
        TaskDeferralError,
        TaskDeferralTimeout,
        TaskDeferred,
    )
except ImportError:  # Airflow 2.10
    from airflow.decorators import task  # type: ignore[no-redef,attr-defined]
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowException,
        TaskDeferralError,
        TaskDeferred,
    )
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined]
    from airflow.models.baseoperator import BaseOperator  # type: ignore[no-redef]

    from airflow import DAG  # type: ignore[no-redef,attr-defined]

    TaskDeferralTimeout = None  # type: ignore[assignment,misc]

try:  # Airflow >= 2.10: a trigger may end its task without resuming it on a worker
    from airflow.triggers.base import TaskSuccessEvent
except ImportError:  # pragma: no cover - older Airflow
    TaskSuccessEvent = None  # type: ignore[assignment,misc]

AIRFLOW_2 = int(AIRFLOW_VERSION.split(".")[0]) < 3
AIRFLOW_2_DEFERRAL_TIMEOUT = "Trigger/execution timeout"
"""The error a timed-out deferral resumes with on Airflow 2.10 (``next_kwargs`` set in
``airflow/jobs/scheduler_job_runner.py``, ``check_trigger_timeouts``, 2.10.5 line 2043)."""

__all__ = [
    "AIRFLOW_2",
    "AIRFLOW_2_DEFERRAL_TIMEOUT",
    "AIRFLOW_VERSION",
    "DAG",
    "AirflowException",
    "BaseHook",
    "BaseOperator",
    "BaseTrigger",
    "TaskDeferralError",
    "TaskDeferralTimeout",
    "TaskDeferred",
    "TaskSuccessEvent",
    "TriggerEvent",
    "aget_connection",
    "deferral_timed_out",
    "task",
]


def deferral_timed_out(exc: BaseException) -> bool:
    """Whether a resumed task failed because its deferral timed out."""
    if TaskDeferralTimeout is not None:
        return isinstance(exc, TaskDeferralTimeout)
    return isinstance(exc, TaskDeferralError) and str(exc) == AIRFLOW_2_DEFERRAL_TIMEOUT


async def aget_connection(conn_id: str) -> Any:
    """A connection, fetched without blocking the triggerer's event loop."""
    getter = getattr(BaseHook, "aget_connection", None)
    if getter is not None:  # Airflow >= 3.1
        return await getter(conn_id)
    return await asyncio.to_thread(BaseHook.get_connection, conn_id)
