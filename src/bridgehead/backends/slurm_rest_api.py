"""slurmrestd's OpenAPI versions: what each takes and answers, as pure data and functions.

:data:`VERSIONS` maps an OpenAPI plugin version to an :class:`ApiVersion`: the sbatch options
it takes (and the job field each becomes), how a job is described and how its answers read.
v0.0.38 and v0.0.37 (Slurm 22.05) are in; the note above VERSIONS says what v0.0.39+ change,
so a newer version is one more entry, not a new code path. The transport is ``slurm_rest``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bridgehead.backends import slurm
from bridgehead.backends.base import NativeStatus
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


@dataclass(frozen=True, slots=True)
class Option:
    """How one sbatch pass-through option becomes a field of the job description."""

    field: str
    takes: Literal["value", "flag", "either"] = "value"
    bare: Any = True
    """What the option sends given no value (``--hold``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRecord:
    """One job as a slurmrestd answer describes it, whatever the version."""

    native_id: str
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
    ids_param: str = "step"
    """The ``/slurmdb/<v>/jobs`` filter taking a comma list of job ids."""

    def path(self, what: str, native_id: str = "") -> str:
        return {"submit": f"/slurm/{self.name}/job/submit", "jobs": f"/slurm/{self.name}/jobs",
                "job": f"/slurm/{self.name}/job/{native_id}",
                "accounting": f"/slurmdb/{self.name}/jobs"}[what]


# -- v0.0.37/v0.0.38 (Slurm 21.08-22.05), verified against 22.05.8 -----------------------------
# Job fields go through sbatch's own option parser (slurm_process_option_data): values are the
# text sbatch would get. The job field `argv` crashes slurmrestd 22.05.8 (a segfault in its
# cleanup, after the job is queued): a command's words travel in the environment instead
# (slurm.ARGV_FROM_ENV), never through a shell.
_V38_OPTIONS: dict[str, Option] = {
    "account": Option("account"), "begin": Option("begin_time"),
    "constraint": Option("constraints"), "deadline": Option("deadline"),
    "dependency": Option("dependency"),
    "exclude": Option("exclude_nodes"),  # 'excluded_nodes' is a disabled key
    "exclusive": Option("exclusive", "either", "exclusive"), "gpus": Option("gpus"),
    "gpus-per-node": Option("gpus_per_node"), "gres": Option("gres"),
    "hold": Option("hold", "flag"), "job-name": Option("name"),
    "kill-on-invalid-dep": Option("kill_on_invalid_dependency"),
    "licenses": Option("licenses"), "mail-type": Option("mail_type"),
    "mail-user": Option("mail_user"), "mem-per-cpu": Option("memory_per_cpu"),
    "mincpus": Option("minimum_cpus_per_node"), "nice": Option("nice", "either", "100"),
    "nodelist": Option("nodelist"),
    "no-requeue": Option("no_requeue", "flag"),  # 'requeue': false leaves Requeue=1
    "ntasks-per-node": Option("tasks_per_node"), "partition": Option("partition"),
    "priority": Option("priority"), "qos": Option("qos"), "requeue": Option("requeue", "flag"),
    "reservation": Option("reservation"), "signal": Option("signal"),
    "spread-job": Option("spread_job", "flag"), "time-min": Option("time_minimum"),
    "tmp": Option("temporary_disk_per_node"),
}


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
                "gpus": str(request.gpus) if request.gpus else None}
    return job | {key: value for key, value in optional.items() if value}


def _live_v38(job: Json) -> JobRecord:
    started = bool(job.get("nodes"))  # a job cancelled while pending never had nodes
    start, end = _int(job.get("start_time")), _int(job.get("end_time"))
    raw = job.get("exit_code")  # the raw wait status: 768 = exit 3, 15 = SIGTERM
    code, signum = slurm.exit_from_wait_status(raw if isinstance(raw, int) and started else None)
    return JobRecord(
        native_id=str(job.get("job_id")), state=str(job.get("job_state") or ""),
        comment=str(job.get("comment") or ""), exit_code=code, signal=signum,
        elapsed_s=float(max(0, end - start)) if started and start else 0.0,
        cpus=_int(job.get("cpus")) if started else 0,
        nodes=_int(job.get("node_count")) if started else 0,
        submitted=_int(job.get("submit_time")))


def _accounted_v38(job: Json) -> JobRecord:
    state = str(_dig(job, "state", "current") or "")
    exit_code = job.get("exit_code") or {}
    signum = _int(_dig(exit_code, "signal", "signal_id")) or None
    code: int | None = None  # dbv0.0.37/38 test WIFEXITED first: any normal exit reads SUCCESS/0
    if exit_code.get("status") == "SIGNALED" and signum:
        code = 128 + signum
    elif slurm.base_state(state) == "COMPLETED":
        code = 0
    tres = {t.get("type"): _int(t.get("count")) for t in _dig(job, "tres", "allocated") or []}
    rss = [_int(t.get("count")) for step in job.get("steps") or []  # MaxRSS, in bytes
           for t in _dig(step, "tres", "requested", "max") or [] if t.get("type") == "mem"]
    return JobRecord(
        native_id=str(job.get("job_id")), state=state,
        comment=str(_dig(job, "comment", "job") or ""), exit_code=code, signal=signum,
        elapsed_s=float(_int(_dig(job, "time", "elapsed"))), cpus=tres.get("cpu", 0),
        nodes=tres.get("node", 0), max_rss_mb=max(rss) / (1 << 20) if rss else None,
        submitted=_int(_dig(job, "time", "submission")))


V0_0_38 = ApiVersion(name="v0.0.38", options=_V38_OPTIONS, job_fields=_job_v38,
                     live=_live_v38, accounted=_accounted_v38)

# After v0.0.38, from SchedMD's published specs, release notes and generated clients (not run
# here: 22.05 has v0.0.36-38 only). Each is a new ApiVersion (its own job_fields/live/accounted;
# Option would need a converter), not a new code path:
# - v0.0.39 (23.02) on, schemas come from data_parser: a job takes `environment` as a list of
#   "NAME=value"; numbers that may be unset or infinite become {"set", "infinite", "number"}
#   (time_limit, memory_per_node, priority, begin_time...); option values are typed, not sbatch
#   text (exclusive, mail_type, open_mode: lists of flags); nodes may be minimum/maximum_nodes.
# - /slurm/<v>/jobs (v0.0.40 on): `job_state` is a list of flags (["COMPLETED"]); start/end
#   times, cpus and node_count are {"set", "infinite", "number"}; `exit_code` is an object
#   {"status": [...], "return_code": {...}, "signal": {"id": {...}, "name": ...}} instead of
#   the raw wait status; the answer carries `last_update`, the server's clock (update_time).
# - /slurmdb/<v>/jobs: data_parser decodes exit codes properly (return_code of a normal exit);
#   `state.current` is a list of flags.
# - answers gain `warnings`; from v0.0.40 the script may go in `job.script` (the top-level
#   `script` deprecated). Plugin versions are dropped a few releases on: negotiate, don't pin.
VERSIONS: dict[str, ApiVersion] = {
    v.name: v for v in (V0_0_38, dataclasses.replace(V0_0_38, name="v0.0.37"))}


# -- pure helpers ----------------------------------------------------------------------------
def choose_version(paths: Iterable[str]) -> ApiVersion:
    """The newest version in :data:`VERSIONS` with a job submit path among ``paths`` (the keys
    of ``/openapi/v3``'s paths)."""
    found = (re.fullmatch(r"/slurm/(v[0-9.]+)/job/submit/?", path) for path in paths)
    offered = {match.group(1) for match in found if match}
    for name in sorted(VERSIONS, key=lambda v: [int(n) for n in v[1:].split(".")], reverse=True):
        if name in offered:
            return VERSIONS[name]
    raise BackendUnavailable(f"slurmrestd offers {', '.join(sorted(offered)) or 'no job API'};"
                             f" this backend speaks {', '.join(sorted(VERSIONS))}")


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
        fields[spec.field] = value if eq else spec.bare
    return fields


def submit_body(request: slurm.SlurmRequest, api: ApiVersion) -> Json:
    """The ``POST /slurm/<v>/job/submit`` body (pass-through options after the resources, so
    one wins, as on sbatch's command line)."""
    job = api.job_fields(request) | option_fields(request.extra, api)
    if not request.argv:
        return {"script": request.script, "job": job}
    # 22.05's `argv` field crashes slurmrestd: the words go in the environment instead
    job["environment"] = {**job["environment"], **slurm.argv_env(request.argv)}
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
        usage=slurm.usage_of(record.elapsed_s, record.cpus, record.nodes, record.max_rss_mb))


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
    return status in (401, 403, 502, 503, 504) or any(
        code in _RETRY_CODES or (code == -1 and status >= 500) or _UNREACHABLE.search(text)
        for code, text in errors)


def describe(status: int, errors: Errors, text: str = "") -> str:
    said = "; ".join(f"{message} (error {code})" for code, message in errors)
    return f"HTTP {status}: {said or text.strip()[:300] or 'no details'}"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data
