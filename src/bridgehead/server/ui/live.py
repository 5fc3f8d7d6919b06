"""What a page that follows live data tells ``live.js``: where in the event log to start
(the newest event when the page was made, so nothing between the page and the stream is
missed) and which events mean the page changed (a subject prefix, and the event types).

``GET /v1/events/stream`` names each event by its type (``event: <type>``), and an
``EventSource`` hears a named event only by that name: so the page lists the types, from the
same enums the store's events are made from.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request

from bridgehead.domain.events import job_event_type
from bridgehead.domain.jobs import JobState
from bridgehead.domain.runs import RETRIED_EVENT, RunState, TaskState
from bridgehead.server.sessions import ui_store

TYPES = " ".join(sorted(
    {job_event_type(s) for s in JobState}
    | {f"bridgehead.workflow.{s.value}" for s in RunState}
    | {"bridgehead.workflow.started", "bridgehead.workflow.cancelling", RETRIED_EVENT}
    | {f"bridgehead.workflow.task.{s.value}" for s in TaskState}))
"""The job and workflow events: what the overview and a run's page show."""


async def follow(request: Request, subject: str = "") -> dict[str, Any]:
    """``base.html``'s ``live``: the page reloads its body (``live.js``) on an event of
    :data:`TYPES` whose subject starts with ``subject`` (any, when empty)."""
    return {"after": await ui_store(request).last_event_seq(), "subject": subject,
            "types": TYPES}
