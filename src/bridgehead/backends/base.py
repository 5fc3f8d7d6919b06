"""The scheduler backend protocol: small and batch-shaped.

An agent drives exactly one backend. Every call that touches several jobs takes them all at
once, so one agent cycle costs one scheduler query however many jobs are in flight.

Failure contract (never signal failure by returning None/False):
- ``BackendUnavailable``: the scheduler cannot be reached now; the agent backs off and retries,
  changing no job state.
- ``SubmitRejected``: the scheduler refused this job; the job fails with the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bridgehead.domain.jobs import JobSpec, JobState, Usage

STREAMS = ("stdout", "stderr")


@dataclass(frozen=True, slots=True, kw_only=True)
class NativeStatus:
    """A backend's answer for one native job, already translated to Bridgehead states.

    ``state`` is SUBMITTED (pending in the scheduler), RUNNING or a terminal state.
    """

    state: JobState
    exit_code: int | None = None
    reason: str | None = None
    usage: Usage | None = None


@runtime_checkable
class Backend(Protocol):
    kind: str

    async def submit(self, job_id: str, spec: JobSpec) -> str:
        """Hand the job to the scheduler, tagged with ``job_id``; return its native id."""
        ...

    async def poll(self, native_ids: Sequence[str]) -> dict[str, NativeStatus]:
        """Status of all these jobs in one query. A native id absent from the answer is
        unknown to the scheduler (the agent decides, after a grace period, that it is lost)."""
        ...

    async def cancel(self, native_ids: Sequence[str]) -> None:
        """Ask the scheduler to cancel these jobs; their end is seen by the next poll."""
        ...

    async def find(self, tag: str) -> list[str]:
        """Native ids of the jobs tagged ``tag`` (reconciliation after a crash)."""
        ...

    async def read_log(self, native_id: str, stream: str, offset: int, limit: int) -> bytes:
        """Up to ``limit`` bytes of ``stream`` (stdout/stderr) from byte ``offset``."""
        ...

    def free_slots(self) -> int | None:
        """How many more jobs to claim now (None: no limit; the scheduler queues them)."""
        ...

    async def close(self) -> None: ...
