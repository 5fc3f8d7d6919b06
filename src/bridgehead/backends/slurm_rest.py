"""Slurm through slurmrestd's REST API: what ``slurm_cli`` does, with no shell on the cluster.

Transport: one ``httpx.AsyncClient``. Over TCP (``rest_url = http://host:port``) requests carry
``X-SLURM-USER-NAME`` and ``X-SLURM-USER-TOKEN``: ``rest_token``, or a JWT the backend makes
with ``scontrol token`` and renews at 80% of its lifespan and after an answer that may mean it
was refused (never logged). Over a unix socket (``unix:///path``, ``rest_auth/local``) the
socket's peer is the user: no token unless ``rest_token`` is set. No connection, a timeout, or
an answer saying slurmctld/slurmdbd cannot be reached -> BackendUnavailable; a refused job ->
SubmitRejected.

Version table: :data:`VERSIONS` maps an OpenAPI plugin version to an :class:`ApiVersion`: the
sbatch options it takes (and the job field each becomes), how a job is described and how its
answers read. On first use the backend reads ``/openapi/v3`` and speaks the newest version both
sides know (``rest_version`` forces one). v0.0.38 and v0.0.37 (Slurm 22.05) are in; the note
above VERSIONS says what v0.0.39+ change.

Requests per poll cycle: ONE ``GET /slurm/<v>/jobs`` (every job slurmctld holds). A job that
ended there is final at once: state, raw wait status, elapsed time, CPUs, nodes. Only ids
slurmctld no longer holds cost a second request, ONE ``GET /slurmdb/<v>/jobs?step=<id,...>``.
A job unknown to both is left out of the answer (the agent decides, after its grace, that it is
lost): never taken as succeeded. (No ``update_time``: slurmctld answers "unchanged" only when
``update_time - 1 >= last change``, and a v0.0.38 answer gives no server clock to set it safely;
v0.0.40's ``last_update`` would.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import logging
import math
import os
import re
import shlex
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from bridgehead.backends import slurm
from bridgehead.backends.base import NativeStatus, confine_working_dir, read_file_range
from bridgehead.config import SlurmSettings
from bridgehead.domain.jobs import JobSpec, JobState
from bridgehead.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    InvalidSpec,
    SubmitRejected,
)

logger = logging.getLogger(__name__)

Json = dict[str, Any]
Errors = list[tuple[int | None, str]]
_NATIVE_ID = re.compile(r"[0-9]{1,12}")
_JOB_PATH = "/usr/local/bin:/usr/bin:/bin"
"""The jobs' PATH (the agent's own may not exist on the cluster); a job's env may replace it."""
_INVALID_JOB_ID, _NOTHING_FOUND = 2017, 9003
_RETRY_CODES = frozenset({1007, 1800, 1801, 1802, 1803, 5004, 5005, 7000, 7001})
"""Slurm errnos meaning 'try again later': auth failure (a token slurmdbd refused), cannot
connect/send/receive, socket timeout, zero bytes, no database connection."""
_AUTH_SUSPECT = frozenset({-1, 1007, 5005})
"""What v0.0.38 answers for a JWT slurmctld/slurmdbd refuses (-1 from GETs, 5005 from submit
and cancel, 1007 from slurmdb). Ambiguous: slurmctld being down gives -1 and 5005 too."""
_UNREACHABLE = re.compile(r"Unable to contact slurm controller|Socket timed out|Zero Bytes|"
                          r"Unable to connect to database|Connection refused", re.IGNORECASE)
_IDS_PER_REQUEST = 200
_MIN_TOKEN_AGE_S = 30.0


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
# cleanup, after the job is queued): a command goes into the script, each word shell-quoted.
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
    code, signum = slurm.exit_from_wait_status(raw if isinstance(raw, int) else None)
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


def argv_script(argv: Sequence[str]) -> str:
    """A script running ``argv`` as given: every word single-quoted, nothing expanded."""
    words = " ".join(shlex.quote(word) for word in argv)
    return f"#!/bin/sh\n# Bridgehead: run this argv, as given\nexec {words}\n"


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
    return {"script": argv_script(request.argv) if request.argv else request.script, "job": job}


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


def _describe(status: int, errors: Errors, text: str = "") -> str:
    said = "; ".join(f"{message} (error {code})" for code, message in errors)
    return f"HTTP {status}: {said or text.strip()[:300] or 'no details'}"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


# -- the backend -------------------------------------------------------------------------------
class _Token:
    """The JWT: ``rest_token``, or one made with ``scontrol token`` (asyncio subprocess, argv
    list) and renewed at 80% of its lifespan, or when slurmrestd may have refused it."""

    def __init__(self, settings: SlurmSettings, user: str, calls: Counter[str]) -> None:
        self.user, self._settings, self._calls = user, settings, calls
        self._fixed = settings.rest_token.get_secret_value() if settings.rest_token else None
        self._value, self._made, self._renew_at = self._fixed, -math.inf, 0.0
        self._lock = asyncio.Lock()

    async def headers(self) -> dict[str, str]:
        if self._fixed is None and time.monotonic() >= self._renew_at:
            await self.renew()
        return {"X-SLURM-USER-NAME": self.user, "X-SLURM-USER-TOKEN": self._value or ""}

    async def renew(self, *, suspect: bool = False) -> bool:
        """A new token; False if there is none to make (the configured one, or ``suspect``
        but made in the last 30 s: then the answer did not mean a refused token)."""
        if self._fixed is not None:
            return False
        async with self._lock:
            now = time.monotonic()
            if suspect and now - self._made < _MIN_TOKEN_AGE_S:
                return False
            if suspect or now >= self._renew_at:  # else another task just renewed it
                self._value, self._made = await self._mint(), now
                self._renew_at = now + 0.8 * self._settings.rest_token_lifespan_s
                logger.info("made a slurmrestd token for %s", self.user)
            return True

    async def _mint(self) -> str:
        s = self._settings
        env = {"PATH": os.environ.get("PATH") or os.defpath}  # the agent's: scontrol is here
        if s.conf is not None:
            env["SLURM_CONF"] = str(s.conf)
        self._calls["scontrol_token"] += 1
        try:
            proc = await asyncio.create_subprocess_exec(
                str(s.bin_dir / "scontrol") if s.bin_dir else "scontrol", "token",
                f"username={self.user}", f"lifespan={s.rest_token_lifespan_s}", env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            raise BackendUnavailable(f"cannot run scontrol to make a JWT: {exc}") from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(), s.command_timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise BackendUnavailable("scontrol token did not answer in time") from None
        text = out.decode(errors="replace").strip()
        if proc.returncode != 0 or not text.startswith("SLURM_JWT="):
            lines = err.decode(errors="replace").strip().splitlines() or ["no output"]
            raise BackendUnavailable(f"scontrol token failed: {lines[-1][:300]}")
        return text.removeprefix("SLURM_JWT=")


class SlurmRestBackend:
    kind = "slurm_rest"

    def __init__(self, settings: SlurmSettings, *, state_dir: Path,
                 allowed_roots: tuple[Path, ...] = ()) -> None:
        url, forced = settings.rest_url or "", settings.rest_version
        if not url.startswith(("http://", "https://", "unix:///")):
            raise ConfigError("the slurm_rest backend needs agent.slurm.rest_url: "
                              "http(s)://host:port or unix:///path/to/socket")
        if forced and forced not in VERSIONS:
            raise ConfigError(f"agent.slurm.rest_version {forced!r}: this backend speaks "
                              f"{', '.join(sorted(VERSIONS))}")
        self.settings, self.url, self.allowed_roots = settings, url, allowed_roots
        root = settings.job_root or state_dir / "slurm"
        self.log_dir, self.work_dir = root / "logs", root / "work"
        self.calls: Counter[str] = Counter()
        """Requests to slurmrestd by name (and ``scontrol_token`` runs): benchmarks count them."""
        socket = url.removeprefix("unix://") if url.startswith("unix://") else None
        self._client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=socket) if socket else None,
            base_url="http://slurmrestd" if socket else url, timeout=settings.command_timeout_s)
        user = settings.rest_user or _agent_user()
        self._token = None if socket and not settings.rest_token else \
            _Token(settings, user, self.calls)
        self._api, self._accounting = VERSIONS.get(forced or ""), True
        self._api_lock = asyncio.Lock()
        self._exits: dict[str, tuple[int | None, int | None]] = {}
        self._caps = slurm.Caps(max_cores=settings.max_cores, max_nodes=settings.max_nodes)
        self._env = {"PATH": _JOB_PATH, "USER": user, "LOGNAME": user}
        if settings.conf is not None:
            self._env["SLURM_CONF"] = str(settings.conf)

    async def submit(self, job_id: str, spec: JobSpec) -> str:
        working_dir = await asyncio.to_thread(self._prepare, job_id, spec)
        try:
            request = slurm.build_request(
                job_id, spec, caps=self._caps, working_dir=working_dir,
                stdout=str(self.log_dir / "%j.out"), stderr=str(self.log_dir / "%j.err"),
                base_env=self._env)
        except InvalidSpec as exc:
            raise SubmitRejected(exc.message) from exc
        api = await self._version()
        # never repeated: a lost answer may hide a queued job (the agent then finds it by tag)
        status, answer, text = await self._call("submit", "POST", api.path("submit"),
                                                json=submit_body(request, api), repeat=False)
        native_id, errors = answer.get("job_id"), errors_of(answer)
        if isinstance(native_id, int) and native_id > 0:
            if errors:  # e.g. 2042 'Job is in held state': queued all the same
                logger.info("job %s: slurmrestd says %s", native_id, _describe(status, errors))
            logger.info("job %s submitted to Slurm as %s", job_id, native_id)
            return str(native_id)
        if not errors:
            raise BackendUnavailable(f"slurmrestd answered a submit with no job id and no "
                                     f"error: {_describe(status, errors, text)}")
        raise SubmitRejected(f"slurmrestd refused the job: {_describe(status, errors)}")

    def _prepare(self, job_id: str, spec: JobSpec) -> str:
        for directory in (self.log_dir, self.work_dir / job_id):
            directory.mkdir(parents=True, exist_ok=True)
        if spec.working_dir is not None:
            return confine_working_dir(spec.working_dir, self.allowed_roots)
        return str(self.work_dir / job_id)

    async def poll(self, native_ids: Sequence[str]) -> dict[str, NativeStatus]:
        ids = [i for i in dict.fromkeys(native_ids) if _NATIVE_ID.fullmatch(i)]
        if not ids:
            return {}
        api = await self._version()
        live = await self._live(api)
        result: dict[str, NativeStatus] = {}
        for native_id in (i for i in ids if i in live):
            record = live[native_id]
            result[native_id] = status = status_of(record)
            if status.state.terminal:  # slurmdb's exit codes are wrong (see _accounted_v38)
                self._exits[native_id] = (record.exit_code, record.signal)
        while len(self._exits) > 10_000:
            del self._exits[next(iter(self._exits))]
        gone = [i for i in ids if i not in live]
        for native_id, record in (await self._accounted(api, gone)).items():
            if record.exit_code is None and native_id in self._exits:
                code, signum = self._exits[native_id]
                record = dataclasses.replace(record, exit_code=code, signal=signum)
            result[native_id] = status_of(record)
        return result

    async def _live(self, api: ApiVersion) -> dict[str, JobRecord]:
        """Every job slurmctld holds, by native id: ONE request."""
        status, body, text = await self._call("jobs", "GET", api.path("jobs"))
        if status != 200:
            raise BackendError(f"slurmrestd jobs: {_describe(status, errors_of(body), text)}")
        records = (api.live(job) for job in body.get("jobs") or [] if isinstance(job, dict))
        return {record.native_id: record for record in records}

    async def _accounted(self, api: ApiVersion, ids: list[str]) -> dict[str, JobRecord]:
        """slurmdbd's record of each of ``ids`` it has (the newest of requeued duplicates):
        ONE request per 200 ids, none without ids."""
        found: dict[str, JobRecord] = {}
        for start in range(0, len(ids) if self._accounting else 0, _IDS_PER_REQUEST):
            chunk = ids[start:start + _IDS_PER_REQUEST]
            records = await self._accounting_jobs(api, {api.ids_param: ",".join(chunk)})
            for record in sorted(records, key=lambda r: r.submitted):
                if record.native_id in chunk:
                    found[record.native_id] = record
        return found

    async def _accounting_jobs(self, api: ApiVersion, params: dict[str, str]) -> list[JobRecord]:
        status, body, text = await self._call("accounting", "GET", api.path("accounting"),
                                              params=params)  # httpx sends ',' as %2C: needed
        errors = [(code, said) for code, said in errors_of(body) if code != _NOTHING_FOUND]
        if status != 200 or errors:
            raise BackendError(f"slurmrestd accounting: {_describe(status, errors, text)}")
        return [api.accounted(job) for job in body.get("jobs") or [] if isinstance(job, dict)]

    async def cancel(self, native_ids: Sequence[str]) -> None:
        """One DELETE per job (v0.0.38 has no batch cancel); one already gone is no error."""
        for native_id in [i for i in dict.fromkeys(native_ids) if _NATIVE_ID.fullmatch(i)]:
            api = await self._version()
            status, body, text = await self._call("cancel", "DELETE", api.path("job", native_id))
            errors = errors_of(body)
            if status != 200 and not any(code == _INVALID_JOB_ID for code, _ in errors):
                logger.info("cancel %s: %s", native_id, _describe(status, errors, text))

    async def find(self, tag: str) -> list[str]:
        """Jobs with comment ``tag``: slurmctld's, and accounting's since ``find_window_days``."""
        api = await self._version()
        found = {r.native_id for r in (await self._live(api)).values() if r.comment == tag}
        if self._accounting:
            window = {"start_time": f"now-{self.settings.find_window_days}days",
                      "skip_steps": "true"}
            records = await self._accounting_jobs(api, window)
            found |= {record.native_id for record in records if record.comment == tag}
        return sorted(found, key=int)

    async def read_log(self, native_id: str, stream: str, offset: int, limit: int) -> bytes:
        if not _NATIVE_ID.fullmatch(native_id):
            return b""
        path = self.log_dir / f"{native_id}.{'out' if stream == 'stdout' else 'err'}"
        return await asyncio.to_thread(read_file_range, path, offset, limit)

    def free_slots(self) -> int | None:
        return None  # Slurm queues what it cannot run yet

    async def close(self) -> None:
        await self._client.aclose()

    async def _version(self) -> ApiVersion:
        """``rest_version``, or the newest version both sides know (asked once)."""
        async with self._api_lock:
            if self._api is None:
                status, body, _ = await self._call("openapi", "GET", "/openapi/v3")
                paths = body.get("paths") if status == 200 else None
                if not isinstance(paths, dict):
                    raise BackendUnavailable(f"slurmrestd at {self.url} has no /openapi/v3 "
                                             "(set agent.slurm.rest_version)")
                self._api = choose_version(paths)
                self._accounting = self._api.path("accounting") in paths
                logger.info("slurmrestd at %s: speaking OpenAPI %s%s", self.url, self._api.name,
                            "" if self._accounting else " (no slurmdb plugin: slurmctld only)")
            return self._api

    async def _call(self, name: str, method: str, path: str, *, json: Json | None = None,
                    params: Mapping[str, str] | None = None, repeat: bool = True
                    ) -> tuple[int, Json, str]:
        """One request: (HTTP status, JSON answer, text). BackendUnavailable if slurmrestd
        cannot be reached or says slurmctld/slurmdbd cannot; after an answer that may mean a
        refused JWT, the token is renewed and (``repeat``) the request made once more."""
        for attempt in (1, 2):
            self.calls[name] += 1
            headers = await self._token.headers() if self._token else {}
            try:
                response = await self._client.request(method, path, json=json, params=params,
                                                      headers=headers)
            except httpx.TimeoutException as exc:
                raise BackendUnavailable(f"slurmrestd did not answer {method} {path} in "
                                         f"{self.settings.command_timeout_s:.0f}s") from exc
            except httpx.HTTPError as exc:
                raise BackendUnavailable(f"cannot reach slurmrestd at {self.url}: "
                                         f"{exc!r}") from exc
            body = await asyncio.to_thread(_json, response)  # megabytes with many jobs
            status = response.status_code
            errors = errors_of(body)
            suspect = status in (401, 403) or any(code in _AUTH_SUSPECT for code, _ in errors)
            if suspect and self._token and await self._token.renew(suspect=True) \
                    and repeat and attempt == 1:
                continue
            if retry_later(status, errors):
                raise BackendUnavailable(
                    f"slurmrestd {method} {path}: {_describe(status, errors, response.text)}")
            if status == 404 and name != "openapi":  # restarted with other plugins?
                self._api = VERSIONS.get(self.settings.rest_version or "")  # ask again
                raise BackendUnavailable(f"slurmrestd at {self.url} does not serve {path}")
            return status, body, response.text
        raise AssertionError("not reached")


def _agent_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError) as exc:
        raise ConfigError("cannot tell the agent's user name: set agent.slurm.rest_user") from exc


def _json(response: httpx.Response) -> Json:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
