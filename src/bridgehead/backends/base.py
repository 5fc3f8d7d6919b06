"""The scheduler backend protocol: small and batch-shaped.

An agent drives exactly one backend. Every call that touches several jobs takes them all at
once, so one agent cycle costs one scheduler query however many jobs are in flight.

Failure contract (never signal failure by returning None/False):
- ``BackendUnavailable``: the scheduler cannot be reached now; the agent backs off and retries,
  changing no job state.
- ``SubmitRejected``: the scheduler refused this job; the job fails with the message.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from bridgehead.domain.clusters import Capacity
from bridgehead.domain.jobs import JobSpec, JobState, Usage
from bridgehead.errors import SubmitRejected

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
    settling: bool = False
    """The scheduler is about to move this job on (e.g. Slurm's COMPLETING): poll again soon
    rather than at the agent's interval."""
    infrastructure: bool = False
    """With state LOST: the attempt was lost to the infrastructure (its node, worker or cluster
    died; the backend KNOWS this), not ended by the job itself. The server gives such an attempt
    exactly one new attempt, under a cap of its own (``max_lost_attempts``), not the user's
    retries. A job merely missing from the scheduler is never this: it may have run."""


@runtime_checkable
class Backend(Protocol):
    kind: str
    files_shared: bool
    """Its jobs see the agent host's files (local, a head node's sbatch): a client on that
    host may default a job's working dir to its own, as sbatch does."""

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

    async def find(self, tags: Sequence[str]) -> dict[str, list[str]]:
        """Native ids of the jobs tagged with each of ``tags``, in one query (reconciliation
        after a crash); a tag found nowhere maps to ``[]``."""
        ...

    async def read_log(self, native_id: str, stream: str, offset: int, limit: int) -> bytes:
        """Up to ``limit`` bytes of ``stream`` (stdout/stderr) from byte ``offset``."""
        ...

    def free_slots(self) -> int | None:
        """How many more jobs to claim now (None: no limit; the scheduler queues them)."""
        ...

    def capacity(self) -> Capacity | None:
        """The largest job the cluster can ever run (None: not known here; the scheduler
        refuses what cannot fit). The server refuses bigger jobs at submit."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class Adopts(Protocol):
    """A backend with work to redo for a job it did not submit in this process but found by
    its tag (``find``, after a crash between the scheduler taking the job and the agent
    recording it): Slurm links the script's own ``-o``/``-e`` logs, as its submit does."""

    async def adopt(self, job_id: str, spec: JobSpec, native_id: str) -> None: ...


def host_id() -> str:
    """This host as its agents and clients name it: the host name and the machine id (two
    containers of one name do not pass for each other)."""
    try:
        machine = Path("/etc/machine-id").read_text().strip()
    except OSError:
        machine = ""
    return f"{socket.gethostname()}/{machine}" if machine else socket.gethostname()


def confine_working_dir(working_dir: str, roots: Sequence[Path]) -> str:
    """``working_dir`` resolved (symlinks followed), if it is an existing directory under one
    of ``roots`` (any directory when ``roots`` is empty); else SubmitRejected."""
    path = Path(working_dir).resolve()
    if not path.is_dir():
        raise SubmitRejected(f"working_dir {working_dir} does not exist or is not a directory")
    if roots and not any(path.is_relative_to(Path(root).resolve()) for root in roots):
        allowed = ", ".join(str(root) for root in roots)
        raise SubmitRejected(f"working_dir {working_dir} is outside the allowed roots ({allowed})")
    return str(path)


def read_file_range(path: Path, offset: int, limit: int) -> bytes:
    """Up to ``limit`` bytes of ``path`` from ``offset``; nothing if it does not exist yet."""
    try:
        with open(path, "rb") as file:
            file.seek(offset)
            return file.read(limit)
    except FileNotFoundError:
        return b""
