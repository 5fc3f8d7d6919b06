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


def apportion(ended: list[tuple[dict[str, Any], int]], running_work: float,
              unclaimed_hours: float) -> list[Usage | None]:
    """The estimated usage of the steps that ended together (one poll cycle), each given with
    its cores: its runtime x cores, and its share of the cluster's normalized instance hours
    that no earlier step was charged (``unclaimed_hours``: the cluster's hours now less what
    earlier ends took), in proportion to its work (runtime x cores) among the work of every
    step not yet charged: these and the steps still running (``running_work``: their
    runtime x cores so far; they take their part when they end).

    The rule: a step is charged at its end from the hours the cluster had accrued by then,
    never for hours after it ended; hours reserved for a running step stay unclaimed until it
    ends, when it takes them with the hours accrued since (so it misses none it used). When
    the cluster's last running step ends, the shares sum to the cluster's hours at that
    moment. Hours accrued while none of them ran (boot, idle between steps) go to the steps
    that end next; hours after the last step ended go to no step. A step that never started
    gets None."""
    works = []
    for step, cores in ended:
        runtime = runtime_s(step)
        works.append(None if runtime is None else (runtime, runtime * cores))
    total = running_work + sum(w[1] for w in works if w is not None)
    out: list[Usage | None] = []
    for (_, cores), work in zip(ended, works, strict=True):
        if work is None:
            out.append(None)
            continue
        runtime, core_s = work
        share = core_s / total if total > 0 else 0.0
        out.append(Usage(elapsed_s=runtime, cores=cores, nodes=1, estimated=True,
                         instance_hours=round(max(0.0, unclaimed_hours) * share, 6)))
    return out


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
