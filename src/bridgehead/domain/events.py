"""Events: CloudEvents-shaped records of every change, in an append-only log with cursors."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from bridgehead.domain.jobs import JobState

SOURCE = "bridgehead"


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One CloudEvent. ``seq`` is the log's cursor: strictly increasing, assigned by the store."""

    type: str
    subject: str
    data: dict[str, Any] = field(default_factory=dict)
    source: str = SOURCE
    id: str = field(default_factory=lambda: secrets.token_hex(12))
    time: float = 0.0
    seq: int = 0
    tenant: str = ""
    """The tenant it concerns (a job's, a run's, its poster's); ``""``: none, seen only by
    admins and by clients of every tenant."""

    def to_cloudevent(self) -> dict[str, Any]:
        from datetime import UTC, datetime

        return {
            "specversion": "1.0",
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "subject": self.subject,
            "time": datetime.fromtimestamp(self.time, UTC).isoformat(),
            "datacontenttype": "application/json",
            "data": self.data,
            "seq": self.seq,
            **({"tenant": self.tenant} if self.tenant else {}),
        }


_TYPE_BY_STATE = {
    JobState.QUEUED: "bridgehead.job.queued",
    JobState.CLAIMED: "bridgehead.job.claimed",
    JobState.SUBMITTING: "bridgehead.job.submitting",
    JobState.SUBMITTED: "bridgehead.job.submitted",
    JobState.RUNNING: "bridgehead.job.started",
}


def job_event_type(state: JobState) -> str:
    """``bridgehead.job.<queued|claimed|submitting|submitted|started|finished>``."""
    return _TYPE_BY_STATE.get(state, "bridgehead.job.finished")


def job_event(job_id: str, cluster: str, state: JobState, *, tenant: str = "",
              **data: Any) -> Event:
    payload = {"job_id": job_id, "cluster": cluster, "state": state.value}
    payload.update({k: v for k, v in data.items() if v is not None})
    return Event(type=job_event_type(state), subject=f"jobs/{job_id}", data=payload,
                 tenant=tenant)
