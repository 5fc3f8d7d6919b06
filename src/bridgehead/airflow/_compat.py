"""Airflow 2.10+ and 3.x spell a few imports differently; this module is the one place that
knows. Everything else in the provider imports Airflow names from here."""

from __future__ import annotations

import asyncio
from typing import Any

try:  # Airflow 3: the task SDK
    from airflow.sdk import DAG, BaseHook, BaseOperator, task
    from airflow.sdk.exceptions import AirflowException, TaskDeferralTimeout, TaskDeferred
except ImportError:  # Airflow 2.10
    from airflow.decorators import task  # type: ignore[no-redef,attr-defined]
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowException,
        TaskDeferralTimeout,
        TaskDeferred,
    )
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef,attr-defined]
    from airflow.models.baseoperator import BaseOperator  # type: ignore[no-redef]

    from airflow import DAG  # type: ignore[no-redef,attr-defined]

from airflow.triggers.base import BaseTrigger, TriggerEvent

try:  # Airflow >= 2.10: a trigger may end its task without resuming it on a worker
    from airflow.triggers.base import TaskSuccessEvent
except ImportError:  # pragma: no cover - older Airflow
    TaskSuccessEvent = None  # type: ignore[assignment,misc]

__all__ = [
    "DAG",
    "AirflowException",
    "BaseHook",
    "BaseOperator",
    "BaseTrigger",
    "TaskDeferralTimeout",
    "TaskDeferred",
    "TaskSuccessEvent",
    "TriggerEvent",
    "aget_connection",
    "task",
]


async def aget_connection(conn_id: str) -> Any:
    """A connection, fetched without blocking the triggerer's event loop."""
    getter = getattr(BaseHook, "aget_connection", None)
    if getter is not None:  # Airflow >= 3.1
        return await getter(conn_id)
    return await asyncio.to_thread(BaseHook.get_connection, conn_id)
