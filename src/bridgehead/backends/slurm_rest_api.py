"""slurmrestd's OpenAPI versions: what each takes and answers, as pure data and functions.

:data:`VERSIONS` maps an OpenAPI plugin version to an :class:`ApiVersion`: the sbatch options
it takes (and the job field each becomes), how a job is described, how its answers read, and
what it can do besides (script arguments in ``argv``, the cheap ``/jobs/state/`` poll, batch
cancel). In: v0.0.37/v0.0.38 (Slurm 21.08-22.05) and v0.0.40/v0.0.41/v0.0.42 (23.11-24.11,
verified against 24.11.5). A newer version is one more entry, not a new code path. The
transport is ``slurm_rest``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bridgehead.backends import slurm
from bridgehead.backends.base import NativeStatus
from bridgehead.backends.slurm_rest_options import (
    V38_OPTIONS,
    V40_OPTIONS,
    V42_OPTIONS,
    Option,
    number,
    script_fields,
    typed,
)
from bridgehead.domain.arrays import compress, expand_native_ids
from bridgehead.domain.jobs import JobState
from bridgehead.errors import BackendUnavailable, SubmitRejected

Json = dict[str, Any]
Errors = list[tuple[int | None, str]]
INVALID_JOB_ID, NOTHING_FOUND = 2017, 9003
_RETRY_CODES = frozenset({1007, 1800, 1801, 1802, 1803, 5004, 5005, 7000, 7001})
"""Slurm errnos meaning 'try again later': auth failure (a token slurmdbd refused), cannot
connect/send/receive, socket timeout, zero bytes, no database connection."""
AUTH_SUSPECT = frozenset({-1, 1007, 5005})
"""What v0.0.38 answers for a JWT slurmctld/slurmdbd refuses (-1 from GETs, 5005 from submit
and cancel, 1007 from slurmdb). Ambiguous: slurmctld being down gives -1 and 5005 too."""
_UNREACHABLE = re.compile(r"Unable to contact slurm controller|Socket timed out|Zero Bytes|"
                          r"Unable to connect to database|Connection refused", re.IGNORECASE)
_NO_VAL = 0xFFFFFFFE
"""Slurm's 'not set' for a 32-bit number (v0.0.38 prints it as is; NO_VAL and INFINITE)."""
_HEX_MASK = re.compile(r"0x([0-9A-Fa-f]+)")


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRecord:
    """One job as a slurmrestd answer describes it, whatever the version."""

    native_id: str
    """The job's id, an array element's ``JOBID_INDEX``, or ``JOBID_[indices]`` for the
    elements an array record still holds pending (:func:`record_id`)."""
    state: str
    comment: str = ""
    exit_code: int | None = None
    signal: int | None = None
    elapsed_s: float = 0.0
    cpus: int = 0
    nodes: int = 0
    max_rss_mb: float | None = None
    submitted: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiVersion:
    """What differs between slurmrestd OpenAPI versions: fields, options, how answers read."""

    name: str
    options: Mapping[str, Option]
    job_fields: Callable[[slurm.SlurmRequest], Json]
    live: Callable[[Json], JobRecord]
    """One ``/slurm/<v>/jobs`` record."""
    accounted: Callable[[Json], JobRecord]
    """One ``/slurmdb/<v>/jobs`` record."""
    repeat_keys: bool = False
    """Query lists repeat the key (``step=1&step=2``), instead of one comma list."""
    argv: bool = False
    """The job's ``argv`` field carries a script's arguments (from v0.0.40; element 0 is
    dropped, as a program's name)."""
    state_poll: bool = False
    """``GET /slurm/<v>/jobs/state/``: job ids and states only, a fraction of ``/jobs``."""
    batch_cancel: bool = False
    """``DELETE /slurm/<v>/jobs/`` with ``{"jobs": [...]}`` cancels many jobs at once."""

    def path(self, what: str, native_id: str = "") -> str:
        v = self.name
        return {"submit": f"/slurm/{v}/job/submit", "jobs": f"/slurm/{v}/jobs",
                "job": f"/slurm/{v}/job/{native_id}", "states": f"/slurm/{v}/jobs/state",
                "cancel": f"/slurm/{v}/jobs", "accounting": f"/slurmdb/{v}/jobs"}[what]

    def ids_query(self, ids: Sequence[str]) -> list[tuple[str, str]]:
        """The ``/slurmdb/<v>/jobs`` query selecting these job ids."""
        return [("step", i) for i in ids] if self.repeat_keys else [("step", ",".join(ids))]


# -- v0.0.37/v0.0.38 (Slurm 21.08-22.05), verified against 22.05.8 -----------------------------
# Job fields go through sbatch's own option parser (slurm_process_option_data): values are the
# text sbatch would get. The job field `argv` crashes slurmrestd 22.05.8 (a segfault in its
# cleanup, after the job is queued): a command's words travel in the environment instead
# (slurm.ARGV_FROM_ENV), never through a shell.
def _job_v38(request: slurm.SlurmRequest) -> Json:
    job: Json = {
        "name": request.name, "comment": request.tag,
        "current_working_directory": request.working_dir,
        "standard_output": request.stdout, "standard_error": request.stderr,
        "environment": dict(request.env),  # an object NAME: value; it must not be empty
        "tasks": request.ntasks, "cpus_per_task": request.cpus_per_task,
        "nodes": request.nodes,  # "N" or "N-M", as sbatch --nodes
    }
    optional = {"memory_per_node": request.memory_mb, "time_limit": request.time_minutes,
                "partition": request.partition, "account": request.account,
                "gpus": str(request.gpus) if request.gpus else None,
                "array": request.array}  # sbatch's --array text, throttle and all
    return job | {key: value for key, value in optional.items() if value}


def _live_v38(job: Json) -> JobRecord:
    started = bool(job.get("nodes"))  # a job cancelled while pending never had nodes
    start, end = _num(job.get("start_time")), _num(job.get("end_time"))
    raw = job.get("exit_code")  # the raw wait status: 768 = exit 3, 15 = SIGTERM
    code, signum = slurm.exit_from_wait_status(raw if isinstance(raw, int) and started else None)
    return JobRecord(
        native_id=record_id(job.get("job_id"), job.get("array_job_id"),
                            job.get("array_task_id"), job.get("array_task_string")),
        state=str(job.get("job_state") or ""),
        comment=str(job.get("comment") or ""), exit_code=code, signal=signum,
        elapsed_s=float(max(0, end - start)) if started and start else 0.0,
        cpus=_num(job.get("cpus")) if started else 0,
        nodes=_num(job.get("node_count")) if started else 0,
        submitted=_num(job.get("submit_time")))


def _accounted_v38(job: Json) -> JobRecord:
    state = str(_dig(job, "state", "current") or "")
    exit_code = job.get("exit_code") or {}
    signum = _num(_dig(exit_code, "signal", "signal_id")) or None
    code: int | None = None  # dbv0.0.37/38 test WIFEXITED first: any normal exit reads SUCCESS/0
    if exit_code.get("status") == "SIGNALED" and signum:
        code = 128 + signum
    elif slurm.base_state(state) == "COMPLETED":
        code = 0
    tres = {t.get("type"): _num(t.get("count")) for t in _dig(job, "tres", "allocated") or []}
    rss = [_num(t.get("count")) for step in job.get("steps") or []  # MaxRSS, in bytes
           for t in _dig(step, "tres", "requested", "max") or [] if t.get("type") == "mem"]
    return JobRecord(
        native_id=record_id(job.get("job_id"), _dig(job, "array", "job_id"),
                            _dig(job, "array", "task_id"), _dig(job, "array", "task")),
        state=state, comment=str(_dig(job, "comment", "job") or ""), exit_code=code,
        signal=signum,
        elapsed_s=float(_num(_dig(job, "time", "elapsed"))), cpus=tres.get("cpu", 0),
        nodes=tres.get("node", 0), max_rss_mb=max(rss) / (1 << 20) if rss else None,
        submitted=_num(_dig(job, "time", "submission")))


V0_0_38 = ApiVersion(name="v0.0.38", options=V38_OPTIONS, job_fields=_job_v38,
                     live=_live_v38, accounted=_accounted_v38)

# -- v0.0.40/v0.0.41/v0.0.42 (Slurm 23.11-24.11), verified against 24.11.5 --------------------
# Schemas come from data_parser: `environment` is a list of "NAME=value" (missing or empty is
# a 500); numbers that may be unset or infinite are {"set", "infinite", "number"}; options are
# typed (flag lists, node lists), not sbatch text; the script goes in `job.script`. `argv`
# works (its element 0 is dropped). Answers: `job_state` is a list (a base state and flags),
# `exit_code` an object {"status": [...], "return_code": {...}, "signal": {"id": {...}}}.
# In accounting a CANCELLED or TIMEOUT job's own exit reads SUCCESS 0: its batch step has the
# signal. v0.0.42 drops `exclusive` (ignored with a warning): `shared` says the same.
def _job_v40(request: slurm.SlurmRequest) -> Json:
    job: Json = {
        "script": request.script, "name": request.name, "comment": request.tag,
        "current_working_directory": request.working_dir,
        "standard_output": request.stdout, "standard_error": request.stderr,
        "environment": [f"{key}={value}" for key, value in request.env.items()],
        "tasks": request.ntasks, "cpus_per_task": request.cpus_per_task,
        "nodes": request.nodes,
    }
    optional = {"memory_per_node": request.memory_mb and number(request.memory_mb),
                "time_limit": request.time_minutes and number(request.time_minutes),
                "partition": request.partition, "account": request.account,
                "tres_per_job": f"gres/gpu:{request.gpus}" if request.gpus else None,
                "array": request.array}  # a string, as sbatch's --array
    return job | {key: value for key, value in optional.items() if value}


_STATE_FLAGS = ("COMPLETING", "STAGE_OUT", "CONFIGURING", "RESIZING", "REQUEUED",
                "REQUEUE_FED", "REQUEUE_HOLD", "SPECIAL_EXIT", "STOPPED", "REVOKED",
                "RESV_DEL_HOLD", "SIGNALING")
"""State flags that name the state squeue shows, first one first (``job_state_string``)."""


def state_name(value: Any) -> str:
    """One state name from a ``job_state`` list (``["CANCELLED", "COMPLETING"]`` reads
    COMPLETING, as squeue shows it) or a v0.0.38 string."""
    if isinstance(value, str):
        return value
    names = [str(v).upper() for v in value] if isinstance(value, list) else []
    flag = next((f for f in _STATE_FLAGS if f in names), None)
    return flag or next((n for n in names if n in slurm.STATES), names[0] if names else "")


def exit_of(value: Any) -> tuple[int | None, int | None]:
    """(exit code, signal) of an exit-code object: 128 + signal for a signal, as a shell."""
    if not isinstance(value, dict):
        return None, None
    status = value.get("status") or []
    signum = _num(_dig(value, "signal", "id")) or None
    if ("SIGNALED" in status or "CORE_DUMPED" in status) and signum:
        return 128 + signum, signum
    if "SUCCESS" in status or "ERROR" in status:
        return _num(value.get("return_code")), None
    return None, None


def _live_v40(job: Json) -> JobRecord:
    started = bool(job.get("nodes"))  # a job cancelled while pending never had nodes
    start, end = _num(job.get("start_time")), _num(job.get("end_time"))
    code, signum = exit_of(job.get("exit_code")) if started else (None, None)
    return JobRecord(
        native_id=record_id(job.get("job_id"), job.get("array_job_id"),
                            job.get("array_task_id"), job.get("array_task_string")),
        state=state_name(job.get("job_state")),
        comment=str(job.get("comment") or ""), exit_code=code, signal=signum,
        elapsed_s=float(max(0, end - start)) if started and start else 0.0,
        cpus=_num(job.get("cpus")) if started else 0,
        nodes=_num(job.get("node_count")) if started else 0,
        submitted=_num(job.get("submit_time")))


_BATCH_EXIT = frozenset({"CANCELLED", "TIMEOUT", "DEADLINE", "PREEMPTED", "NODE_FAIL"})
"""States whose job-level exit in accounting reads SUCCESS 0: the batch step's is believed."""


def _accounted_v40(job: Json) -> JobRecord:
    state = state_name(_dig(job, "state", "current"))
    code, signum = exit_of(job.get("exit_code"))
    if slurm.base_state(state) in _BATCH_EXIT:
        batch = [step for step in job.get("steps") or []
                 if str(_dig(step, "step", "id") or "").endswith("batch")]
        code, signum = exit_of(batch[0].get("exit_code")) if batch else (None, None)
    return dataclasses.replace(_accounted_v38(job), state=state, exit_code=code, signal=signum)


V0_0_40 = ApiVersion(name="v0.0.40", options=V40_OPTIONS, job_fields=_job_v40,
                     live=_live_v40, accounted=_accounted_v40, repeat_keys=True, argv=True,
                     state_poll=True, batch_cancel=True)
VERSIONS: dict[str, ApiVersion] = {v.name: v for v in (
    V0_0_38, dataclasses.replace(V0_0_38, name="v0.0.37"),
    V0_0_40, dataclasses.replace(V0_0_40, name="v0.0.41"),
    dataclasses.replace(V0_0_40, name="v0.0.42", options=V42_OPTIONS))}


# -- pure helpers ----------------------------------------------------------------------------
def choose_version(paths: Mapping[str, Any], forced: str | None = None) -> ApiVersion:
    """The version to speak given ``/openapi/v3``'s paths: ``forced``, or the newest in
    :data:`VERSIONS` that slurmrestd serves, doing only what it serves (a plugin built
    without ``/jobs/state/`` polls ``/jobs``). BackendUnavailable if there is none."""
    served = {path.rstrip("/"): methods for path, methods in paths.items()}
    found = (re.fullmatch(r"/slurm/(v[0-9.]+)/job/submit", path) for path in served)
    offered = {match.group(1) for match in found if match}
    known = sorted(offered & set(VERSIONS), key=lambda v: [int(n) for n in v[1:].split(".")])
    if (forced and forced not in offered) or not known:
        raise BackendUnavailable(
            f"slurmrestd offers {', '.join(sorted(offered)) or 'no job API'}; this backend "
            f"{'was told to speak ' + forced if forced else 'speaks ' + ', '.join(VERSIONS)}")
    api = VERSIONS[forced or known[-1]]
    delete = served.get(api.path("cancel"))
    return dataclasses.replace(
        api, state_poll=api.state_poll and api.path("states") in served,
        batch_cancel=api.batch_cancel and isinstance(delete, dict) and "delete" in delete)


def option_fields(options: Sequence[str], api: ApiVersion) -> Json:
    """The job fields of pass-through ``--name[=value]`` options; SubmitRejected for one the
    version's table lacks, or a value where none belongs (and the reverse)."""
    fields: Json = {}
    for option in options:
        name, eq, value = option[2:].partition("=")
        spec = api.options.get(name)
        if spec is None:
            raise SubmitRejected(
                f"scheduler option --{name} is not supported through slurmrestd {api.name}; use"
                f" the slurm_cli backend, or one of --{', --'.join(sorted(api.options))}")
        if eq and spec.takes == "flag":
            raise SubmitRejected(f"scheduler option --{name} takes no value")
        if not eq and spec.takes == "value":
            raise SubmitRejected(f"scheduler option --{name} needs a value (--{name}=...)")
        new = typed(option, value, spec.convert) if eq else spec.bare
        old = fields.get(spec.field)
        fields[spec.field] = old + new if isinstance(old, list) and isinstance(new, list) else new
    return fields


def submit_body(request: slurm.SlurmRequest, api: ApiVersion) -> Json:
    """The ``POST /slurm/<v>/job/submit`` body: the script's directives that the request does
    not carry (slurmrestd ignores them in the script), then the request, then pass-through
    options, each winning over the one before, as on sbatch. A command's words, or a script's
    arguments, go in ``argv`` where it works, never through a shell."""
    script, replaced = script_fields(request, api.options, api.name)
    own = {key: value for key, value in api.job_fields(request).items() if key not in replaced}
    extra = option_fields([*request.own_flags(), *request.extra], api)
    if isinstance(script.get("flags"), list) and isinstance(extra.get("flags"), list):
        extra["flags"] = script["flags"] + extra["flags"]  # distinct options' flags add up
    job = script | own | extra
    words = request.argv or request.args
    if api.argv:
        if words:
            job["argv"] = ["bridgehead", *words]  # slurmd drops element 0: the script's $0
        return {"job": job}
    if request.args:
        raise SubmitRejected(f"script arguments cannot pass through slurmrestd {api.name} (its"
                             " argv field crashes Slurm 22.05): use slurmrestd v0.0.40 or newer"
                             " (Slurm 23.11+), or the slurm_cli backend")
    if not words:
        return {"script": request.script, "job": job}
    # 22.05's `argv` field crashes slurmrestd: the words go in the environment instead
    job["environment"] = {**job["environment"], **slurm.argv_env(words)}
    return {"script": slurm.ARGV_FROM_ENV, "job": job}


def status_of(record: JobRecord) -> NativeStatus:
    state, name = slurm.to_state(record.state), slurm.base_state(record.state)
    if not state.terminal:
        return NativeStatus(state=state, settling=name in slurm.SETTLING)
    if state is JobState.SUCCEEDED and record.exit_code:
        state = JobState.FAILED  # a non-zero exit is never a success
    return NativeStatus(
        state=state, exit_code=record.exit_code,
        reason=slurm.reason_for(name, record.exit_code, record.signal),
        usage=slurm.usage_of(record.elapsed_s, record.cpus, record.nodes, record.max_rss_mb),
        infrastructure=name in slurm.INFRASTRUCTURE)


def errors_of(body: Json) -> Errors:
    """(Slurm errno, text) of each entry of an answer's ``errors``."""
    found: Errors = []
    for error in body.get("errors") or []:
        if isinstance(error, dict):
            code = error.get("error_number", error.get("error_code"))
            text = ": ".join(str(error[k]) for k in ("description", "error") if error.get(k))
            found.append((code if isinstance(code, int) else None, text))
    return found


def retry_later(status: int, errors: Errors) -> bool:
    """Does this answer say slurmctld or slurmdbd cannot be reached now?"""
    return status in (401, 403, 502, 503, 504, 511) or any(
        code in _RETRY_CODES or (code == -1 and status >= 500) or _UNREACHABLE.search(text)
        for code, text in errors)


def cancel_failures(body: Json) -> list[str]:
    """What a batch cancel's ``status`` says failed, but for jobs already gone."""
    return [f"{entry.get('step_id') or _num(entry.get('job_id'))}: "
            f"{_dig(entry, 'error', 'message')}"
            for entry in body.get("status") or [] if isinstance(entry, dict)
            and _dig(entry, "error", "code") != INVALID_JOB_ID]


def record_id(job_id: Any, array_job_id: Any, task_id: Any, tasks: Any) -> str:
    """The native id of a job record: its job id; an array element's ``JOBID_INDEX``
    (``array_job_id`` and ``array_task_id``, plain or wrapped numbers); the array record that
    still holds pending elements, ``JOBID_[indices]`` as squeue prints it (its task string,
    which accounting may give as a hex bit mask, ``0x1E`` = 1-4)."""
    array, task = _set_num(array_job_id), _set_num(task_id)
    if not array:
        return str(_set_num(job_id) if _set_num(job_id) is not None else job_id)
    if task is not None:
        return f"{array}_{task}"
    text = tasks.strip() if isinstance(tasks, str) else ""
    if match := _HEX_MASK.fullmatch(text):
        bits = int(match[1], 16)
        text = compress([i for i in range(bits.bit_length()) if bits >> i & 1]) if bits else ""
    return f"{array}_[{text}]" if text else str(array)


def element_records(record: JobRecord) -> list[JobRecord]:
    """``record``, or one record per element when it is an array's record of pending
    elements (``N_[4-9%2]``: each of them is pending)."""
    if "[" not in record.native_id:
        return [record]
    return [dataclasses.replace(record, native_id=native_id)
            for native_id in expand_native_ids(record.native_id)]


def _set_num(value: Any) -> int | None:
    """A plain int or a set and finite wrapped number, below Slurm's NO_VAL; else None."""
    if isinstance(value, dict):
        if not value.get("set") or value.get("infinite"):
            return None
        value = value.get("number")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _NO_VAL:
        return value
    return None


def describe(status: int, errors: Errors, text: str = "") -> str:
    said = "; ".join(f"{message} (error {code})" for code, message in errors)
    return f"HTTP {status}: {said or text.strip()[:300] or 'no details'}"


def _num(value: Any) -> int:
    """A plain int, or a set and finite ``{"set", "infinite", "number"}``; else 0."""
    if isinstance(value, dict) and value.get("set") and not value.get("infinite"):
        value = value.get("number")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data
