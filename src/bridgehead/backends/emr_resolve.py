"""EMR's end states of a step and of a cluster, translated to Bridgehead's (the explicit
table), as the plain dicts the pool's record keeps (:mod:`bridgehead.backends.emr_pool`).

Step states (EMR API ``StepStatus.State``): PENDING, CANCEL_PENDING, RUNNING are active;
COMPLETED -> succeeded (exit 0); FAILED -> failed (EMR reports no exit code: the reason
carries its FailureDetails and log file); CANCELLED -> cancelled; INTERRUPTED -> cancelled if
Bridgehead asked, else lost (something on EMR stopped it). A CANCELLED step that Bridgehead did
not cancel was cancelled on EMR by someone else: cancelled, said so.

A cluster that ended with our steps unfinished (as last seen while it was alive) makes them
lost: with ``infrastructure`` when it ended TERMINATED_WITH_ERRORS for its machines
(INSTANCE_FAILURE, INSTANCE_FLEET_TIMEOUT, INTERNAL_ERROR); a step that failed in the same
poll cycle as the cluster died is counted with the cluster (its executors went with it).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from bridgehead.backends.base import NativeStatus
from bridgehead.backends.emr_pool import INFRASTRUCTURE_CODES
from bridgehead.domain.jobs import JobState, Usage

STEP_STATES: dict[str, JobState] = {
    "PENDING": JobState.SUBMITTED,
    "CANCEL_PENDING": JobState.RUNNING,
    "RUNNING": JobState.RUNNING,
    "COMPLETED": JobState.SUCCEEDED,
    "FAILED": JobState.FAILED,
    "CANCELLED": JobState.CANCELLED,
    "INTERRUPTED": JobState.LOST,
}


def final_status(step: dict[str, Any], entry: dict[str, Any],
                 usage: Usage | None) -> dict[str, Any]:
    native = step.get("Status", {}).get("State", "")
    state = STEP_STATES.get(native, JobState.LOST)
    cancelled = bool(entry.get("cancel"))
    out: dict[str, Any] = {"usage": asdict(usage) if usage else None}
    if state is JobState.SUCCEEDED:
        return {**out, "state": state.value, "exit_code": 0}
    if cancelled and state is not JobState.FAILED:
        return {**out, "state": JobState.CANCELLED.value,
                "reason": f"EMR step {step.get('Id')} cancelled"}
    if state is JobState.FAILED:
        details = step.get("Status", {}).get("FailureDetails") or {}
        parts = [details.get("Reason"), details.get("Message")]
        why = ": ".join(p for p in parts if p) or "no FailureDetails"
        log = f" (log: {details['LogFile']})" if details.get("LogFile") else ""
        return {**out, "state": state.value,
                "reason": f"EMR step {step.get('Id')} FAILED: {why}{log}; EMR reports no "
                          "exit code"}
    if state is JobState.CANCELLED:
        return {**out, "state": state.value,
                "reason": f"EMR step {step.get('Id')} was cancelled on EMR, not by Bridgehead"}
    return {**out, "state": JobState.LOST.value,
            "reason": f"EMR step {step.get('Id')} {native or 'in an unknown state'}"}


def lost_status(cluster_id: str, name: str, status: dict[str, Any],
                reason: dict[str, Any]) -> dict[str, Any]:
    state, code = status.get("State", "?"), reason.get("Code") or "no reason code"
    infrastructure = state == "TERMINATED_WITH_ERRORS" and code in INFRASTRUCTURE_CODES
    message = f": {reason['Message']}" if reason.get("Message") else ""
    return {"state": JobState.LOST.value, "infrastructure": infrastructure,
            "reason": f"EMR cluster {cluster_id} ({name}) {state}: {code}{message}",
            "usage": None}


def runtime_s(step: dict[str, Any], now: datetime | None = None) -> float | None:
    """How long a step ran (so far, with ``now``); None before it started."""
    timeline = step.get("Status", {}).get("Timeline", {})
    start, end = timeline.get("StartDateTime"), timeline.get("EndDateTime") or now
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())


def estimated_usage(step: dict[str, Any], cores: int, others_work: float,
                    instance_hours: float) -> Usage | None:
    """The step's runtime x cores, and its share of its cluster's normalized instance hours
    so far: its work over all the work the cluster did (``others_work``: the runtime x cores
    of the other steps, ended or running)."""
    runtime = runtime_s(step)
    if runtime is None:
        return None
    work = runtime * cores
    share = work / (work + others_work) if work + others_work > 0 else 0.0
    return Usage(elapsed_s=runtime, cores=cores, nodes=1, estimated=True,
                 instance_hours=round(instance_hours * share, 6))


def native_status(entry: dict[str, Any], step: dict[str, Any] | None, *,
                  awaiting_logs: bool) -> NativeStatus:
    """What the agent is told of one attempt: its final status (once its logs are read, for a
    step that ran), else RUNNING while its step runs, else SUBMITTED (queued or pending)."""
    final = entry.get("final")
    if final is not None and not awaiting_logs:
        usage = Usage(**final["usage"]) if final.get("usage") else None
        return NativeStatus(state=JobState(final["state"]), exit_code=final.get("exit_code"),
                            reason=final.get("reason"), usage=usage,
                            infrastructure=bool(final.get("infrastructure")))
    if final is not None or (step is not None
                             and step["Status"]["State"] in ("RUNNING", "CANCEL_PENDING")):
        return NativeStatus(state=JobState.RUNNING)
    return NativeStatus(state=JobState.SUBMITTED)
