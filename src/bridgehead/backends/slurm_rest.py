"""Slurm through slurmrestd's REST API: what ``slurm_cli`` does, with no shell on the cluster.

Transport: one ``httpx.AsyncClient``. Over TCP (``rest_url = http://host:port``) requests carry
``X-SLURM-USER-NAME`` and ``X-SLURM-USER-TOKEN``: ``rest_token``, a JWT read from
``rest_token_file`` (again whenever the file changes), or one the backend makes with ``scontrol
token`` (``slurm_rest_token``). Over a unix socket (``unix:///path``, ``rest_auth/local``) the
socket's peer is the user: no token unless one is given. No connection, a timeout, or an answer
saying slurmctld/slurmdbd cannot be reached -> BackendUnavailable; a refused job ->
SubmitRejected.

Versions: on first use the backend reads ``/openapi/v3`` and speaks the newest version both
sides know (``rest_version`` forces one), from the table in ``slurm_rest_api``, doing what
that version does best.

Requests per poll cycle, v0.0.40 on: ONE ``GET /slurm/<v>/jobs/state/?job_id=..`` (ids and
states only: milliseconds), then the full record of only the jobs that ended: one ``GET
/slurm/<v>/job/{id}`` each, or ONE ``GET /slurm/<v>/jobs`` past a few. v0.0.38: ONE ``GET
/slurm/<v>/jobs`` (every job slurmctld holds). A job that ended there is final at once: state,
exit code or signal, elapsed time, CPUs, nodes. Only ids slurmctld no longer holds cost one
more request, ONE ``GET /slurmdb/<v>/jobs?step=..``. A job unknown to both is left out of the
answer (the agent decides, after its grace, that it is lost): never taken as succeeded.
Cancel: ONE ``DELETE /slurm/<v>/jobs/`` for all (v0.0.38: one DELETE per job).

Job arrays: ONE submit with the job's ``array``; each element is then polled, cancelled and
read by its own ``JOBID_INDEX``, as with ``slurm_cli``. Records name an element by
``array_job_id`` and ``array_task_id``; the array's record of its still pending elements
carries their indices (``array_task_string``): it stands for each of them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

from bridgehead.backends import slurm
from bridgehead.backends.base import NativeStatus
from bridgehead.backends.slurm_rest_api import (
    AUTH_SUSPECT,
    INVALID_JOB_ID,
    NOTHING_FOUND,
    VERSIONS,
    ApiVersion,
    JobRecord,
    Json,
    cancel_failures,
    choose_version,
    describe,
    element_records,
    errors_of,
    retry_later,
    state_name,
    status_of,
    submit_body,
)
from bridgehead.backends.slurm_rest_options import honoured_directives
from bridgehead.backends.slurm_rest_token import RestToken
from bridgehead.config import SlurmSettings
from bridgehead.domain import sbatch
from bridgehead.domain.arrays import array_job_id
from bridgehead.domain.clusters import OPTIONAL_REQUESTS, Capacity
from bridgehead.domain.jobs import JobSpec, JobState
from bridgehead.errors import BackendError, BackendUnavailable, ConfigError, SubmitRejected

logger = logging.getLogger(__name__)

_JOB_PATH = "/usr/local/bin:/usr/bin:/bin"
"""The jobs' PATH (the agent's own may not exist on the cluster); a job's env may replace it."""
_IDS_PER_REQUEST = 200
_ONE_BY_ONE = 8
"""Up to this many jobs that ended in one poll get one ``/job/{id}`` each; more, ONE ``/jobs``."""


# -- the backend -------------------------------------------------------------------------------
class SlurmRestBackend:
    kind = "slurm_rest"
    files_shared = False

    def __init__(self, settings: SlurmSettings, *, state_dir: Path,
                 allowed_roots: tuple[Path, ...] = ()) -> None:
        url, forced = settings.rest_url or "", settings.rest_version
        if not url.startswith(("http://", "https://", "unix:///")):
            raise ConfigError("the slurm_rest backend needs agent.slurm.rest_url: "
                              "http(s)://host:port or unix:///path/to/socket")
        if forced and forced not in VERSIONS:
            raise ConfigError(f"agent.slurm.rest_version {forced!r}: this backend speaks "
                              f"{', '.join(VERSIONS)}")
        if settings.rest_token and settings.rest_token_file:
            raise ConfigError("agent.slurm.rest_token and rest_token_file are both set: give "
                              "one")
        self.settings, self.url = settings, url
        self.files = slurm.JobFiles(settings.job_root or state_dir / "slurm", allowed_roots)
        self.calls: Counter[str] = Counter()
        """Requests to slurmrestd by name (and ``scontrol_token`` runs): benchmarks count them."""
        socket = url.removeprefix("unix://") if url.startswith("unix://") else None
        given = settings.rest_token or settings.rest_token_file
        self._token = None if socket and not given else RestToken(settings, self.calls)
        user = (self._token.user if self._token else settings.rest_user) or _agent_user()
        if self._token:
            self._token.user = user
        self._client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=socket) if socket else None,
            base_url="http://slurmrestd" if socket else url, timeout=settings.command_timeout_s)
        self._api: ApiVersion | None = None
        self._accounting = True
        self._api_lock = asyncio.Lock()
        self._exits: dict[str, tuple[int | None, int | None]] = {}
        self._nodes: dict[str, str | None] = {}
        """The node each job read this poll runs its batch script on (a ``%N`` log path's)."""
        self._caps = slurm.Caps(max_cores=settings.max_cores, max_nodes=settings.max_nodes)
        self._env = {"PATH": _JOB_PATH, "USER": user, "LOGNAME": user}
        if settings.conf is not None:
            self._env["SLURM_CONF"] = str(settings.conf)

    async def submit(self, job_id: str, spec: JobSpec) -> str:
        request = await asyncio.to_thread(self.files.request, job_id, spec, caps=self._caps,
                                          base_env=self._env)
        api = await self._version()
        # never repeated: a lost answer may hide a queued job (the agent then finds it by tag)
        status, answer, text = await self._call("submit", "POST", api.path("submit"),
                                                json=submit_body(request, api), repeat=False)
        native_id, errors = answer.get("job_id"), errors_of(answer)
        if isinstance(native_id, int) and native_id > 0:
            if errors:  # e.g. 2042 'Job is in held state': queued all the same
                logger.info("job %s: slurmrestd says %s", native_id, describe(status, errors))
            await asyncio.to_thread(self.files.link_logs, request, str(native_id))
            logger.info("job %s submitted to Slurm as %s", job_id, native_id)
            return str(native_id)
        if not errors:
            raise BackendUnavailable(f"slurmrestd answered a submit with no job id and no "
                                     f"error: {describe(status, errors, text)}")
        raise SubmitRejected(f"slurmrestd refused the job: {describe(status, errors)}")

    async def adopt(self, job_id: str, spec: JobSpec, native_id: str) -> None:
        """A job found by its tag after a crash: its ``-o``/``-e`` logs linked, as by submit."""
        await asyncio.to_thread(self.files.relink_logs, job_id, spec, native_id,
                                caps=self._caps, base_env=self._env)

    async def poll(self, native_ids: Sequence[str]) -> dict[str, NativeStatus]:
        ids = slurm.native_ids(native_ids)
        if not ids:
            if self._api is None:  # an idle agent learns the version too (capacity says it)
                await self._version()
            return {}
        api = await self._version()
        self._nodes = {}
        if api.state_poll:
            result = await self._by_state(api, ids)
        else:
            live = await self._live(api)
            result = {i: self._status(live[i]) for i in ids if i in live}
        while len(self._exits) > 10_000:
            del self._exits[next(iter(self._exits))]
        gone = [i for i in ids if i not in result]
        for native_id, record in (await self._accounted(api, gone)).items():
            if record.exit_code is None and native_id in self._exits:
                code, signum = self._exits[native_id]
                record = dataclasses.replace(record, exit_code=code, signal=signum)
            result[native_id] = status_of(record)
        await self.files.place_logs({i: self._nodes.get(i) for i in ids},
                                    ended=[i for i, s in result.items() if s.state.terminal])
        return {native_id: await self.files.explain(native_id, status)
                for native_id, status in result.items()}

    def _status(self, record: JobRecord) -> NativeStatus:
        """A slurmctld record's status; its exit is kept for a later accounting record
        (v0.0.38's accounting reads every normal exit as 0)."""
        status = status_of(record)
        if status.state.terminal:
            self._exits[record.native_id] = (record.exit_code, record.signal)
        return status

    async def _by_state(self, api: ApiVersion, ids: list[str]) -> dict[str, NativeStatus]:
        """The cheap poll: ``/jobs/state/`` for all of ``ids`` (ONE request per 200), then a
        full record only of those that ended: one ``/job/{id}`` each, or ONE ``/jobs`` past
        a few. A job slurmctld no longer holds is left out (accounting has it)."""
        states: dict[str, str] = {}
        for start in range(0, len(ids), _IDS_PER_REQUEST):
            chunk = ids[start:start + _IDS_PER_REQUEST]
            status, body, text = await self._call("states", "GET", api.path("states"),
                                                  params=[("job_id", i) for i in chunk])
            if status != 200:
                raise BackendError(f"slurmrestd job states: "
                                   f"{describe(status, errors_of(body), text)}")
            for job in body.get("jobs") or []:
                if isinstance(job, dict) and str(job.get("job_id")) in chunk:
                    states[str(job.get("job_id"))] = state_name(job.get("state"))
        ended = [i for i, state in states.items() if slurm.to_state(state).terminal]
        ended += await self.files.node_unknown(  # once, to find a %N log path's node
            i for i, state in states.items() if slurm.to_state(state) is JobState.RUNNING)
        # slurmctld answers /job/{id} of an element with its whole array: ask once per array
        asked = list(dict.fromkeys(array_job_id(i) for i in ended))
        if len(asked) > _ONE_BY_ONE:
            records = await self._live(api)
        else:
            records = {r.native_id: r for i in asked for r in await self._job(api, i)}
        result = {i: self._status(records[i]) for i in ended
                  if i in records and slurm.to_state(states[i]).terminal}
        for native_id, state in states.items():
            if native_id not in result:
                result[native_id] = status_of(JobRecord(native_id=native_id, state=state))
        return result

    async def _job(self, api: ApiVersion, native_id: str) -> list[JobRecord]:
        """slurmctld's record of one job: ``[]`` if it holds none."""
        status, body, text = await self._call("job", "GET", api.path("job", native_id))
        if status == 404 or any(code == INVALID_JOB_ID for code, _ in errors_of(body)):
            return []
        if status != 200:
            raise BackendError(f"slurmrestd job {native_id}: "
                               f"{describe(status, errors_of(body), text)}")
        return [record for job in body.get("jobs") or [] if isinstance(job, dict)
                for record in self._read(api.live, job)]

    async def _live(self, api: ApiVersion) -> dict[str, JobRecord]:
        """Every job slurmctld holds, by native id: ONE request."""
        status, body, text = await self._call("jobs", "GET", api.path("jobs"))
        if status != 200:
            raise BackendError(f"slurmrestd jobs: {describe(status, errors_of(body), text)}")
        return {record.native_id: record for job in body.get("jobs") or []
                if isinstance(job, dict) for record in self._read(api.live, job)}

    async def _accounted(self, api: ApiVersion, ids: list[str]) -> dict[str, JobRecord]:
        """slurmdbd's record of each of ``ids`` it has (the newest of requeued duplicates):
        ONE request per 200 ids, none without ids."""
        found: dict[str, JobRecord] = {}
        for start in range(0, len(ids) if self._accounting else 0, _IDS_PER_REQUEST):
            chunk = ids[start:start + _IDS_PER_REQUEST]
            records = await self._accounting_jobs(api, api.ids_query(chunk))
            for record in sorted(records, key=lambda r: r.submitted):
                if record.native_id in chunk:
                    found[record.native_id] = record
        return found

    async def _accounting_jobs(self, api: ApiVersion, params: list[tuple[str, str]]
                               ) -> list[JobRecord]:
        status, body, text = await self._call("accounting", "GET", api.path("accounting"),
                                              params=params)  # httpx sends ',' as %2C: needed
        errors = [(code, said) for code, said in errors_of(body) if code != NOTHING_FOUND]
        if status != 200 or errors:
            raise BackendError(f"slurmrestd accounting: {describe(status, errors, text)}")
        return [record for job in body.get("jobs") or [] if isinstance(job, dict)
                for record in self._read(api.accounted, job)]

    def _read(self, read: Callable[[Json], JobRecord], job: Json) -> list[JobRecord]:
        """``read(job)``: one record, or one per pending array element its record holds
        (``N_[4-9%2]``), noting the node the job's batch script runs on (slurmctld's
        ``batch_host``, else the first of its ``nodes``)."""
        one = read(job)
        hosts = [h for h in (job.get("batch_host"), job.get("nodes")) if isinstance(h, str)]
        node = next((n for n in map(sbatch.first_host, hosts) if n), None)
        records = element_records(one)
        for record in records:
            if node or record.native_id not in self._nodes:
                self._nodes[record.native_id] = node
        return records

    async def cancel(self, native_ids: Sequence[str]) -> None:
        """ONE ``DELETE /slurm/<v>/jobs/`` per 200 jobs where the version has it, else one
        DELETE per job; a job already gone is no error."""
        ids = slurm.native_ids(native_ids)
        api = await self._version() if ids else None
        if api and api.batch_cancel:
            for start in range(0, len(ids), _IDS_PER_REQUEST):
                chunk = ids[start:start + _IDS_PER_REQUEST]
                status, body, text = await self._call("cancel", "DELETE", api.path("cancel"),
                                                      json={"jobs": chunk})
                failed = cancel_failures(body)
                if status != 200 or failed:
                    logger.info("cancel: %s", "; ".join(failed) or describe(
                        status, errors_of(body), text))
            return
        for native_id in ids:
            assert api is not None
            status, body, text = await self._call("cancel", "DELETE", api.path("job", native_id))
            errors = errors_of(body)
            if status != 200 and not any(code == INVALID_JOB_ID for code, _ in errors):
                logger.info("cancel %s: %s", native_id, describe(status, errors, text))

    async def find(self, tags: Sequence[str]) -> dict[str, list[str]]:
        """Jobs whose comment is one of ``tags``: slurmctld's (accounting shows a comment
        only once the job ended), and accounting's since ``find_window_days``: one request
        each."""
        api = await self._version()
        records = list((await self._live(api)).values())
        if self._accounting:
            window = [("start_time", f"now-{self.settings.find_window_days}days"),
                      ("skip_steps", "true")]
            records += await self._accounting_jobs(api, window)
        # an array's elements all carry its tag: they name the array (N_3, N_[4-9] -> N)
        return slurm.tagged(tags, ((array_job_id(r.native_id), r.comment) for r in records))

    async def read_log(self, native_id: str, stream: str, offset: int, limit: int) -> bytes:
        return await self.files.read_log(native_id, stream, offset, limit)

    def capacity(self) -> Capacity | None:
        """No size (slurmctld refuses what no partition can run, in its own words), but what
        the version spoken honours: every request field and the ``#SBATCH`` directives its
        table carries, so the server refuses another at submit, naming its line. None until
        the version is known."""
        if self._api is None:
            return None
        honoured = sorted(honoured_directives(self._api.options))
        return Capacity(honours=(*OPTIONAL_REQUESTS, *(f"#SBATCH --{d}" for d in honoured)),
                        backend=self.kind, source=f"slurmrestd {self._api.name}")

    def free_slots(self) -> int | None:
        return None  # Slurm queues what it cannot run yet

    async def close(self) -> None:
        await self._client.aclose()

    async def _version(self) -> ApiVersion:
        """The version ``/openapi/v3`` shows as the newest both sides know (or
        ``rest_version``), doing what slurmrestd serves: asked once. A forced version is
        taken as the table has it where ``/openapi/v3`` cannot be read."""
        async with self._api_lock:
            if self._api is None:
                status, body, text = await self._call("openapi", "GET", "/openapi/v3")
                paths, forced = body.get("paths") if status == 200 else None, \
                    self.settings.rest_version
                if isinstance(paths, dict):
                    self._api = choose_version(paths, forced)
                    served = {path.rstrip("/") for path in paths}
                    self._accounting = self._api.path("accounting") in served
                elif forced:
                    self._api = VERSIONS[forced]
                else:
                    raise BackendUnavailable(
                        f"slurmrestd at {self.url} gives no /openapi/v3 (set agent.slurm."
                        f"rest_version): {describe(status, errors_of(body), text)}")
                logger.info("slurmrestd at %s: speaking OpenAPI %s%s", self.url, self._api.name,
                            "" if self._accounting else " (no slurmdb plugin: slurmctld only)")
            return self._api

    async def _call(self, name: str, method: str, path: str, *, json: Json | None = None,
                    params: Sequence[tuple[str, str]] | None = None, repeat: bool = True
                    ) -> tuple[int, Json, str]:
        """One request: (HTTP status, JSON answer, text). BackendUnavailable if slurmrestd
        cannot be reached or says slurmctld/slurmdbd cannot; after an answer that may mean a
        refused JWT, the token is renewed and (``repeat``) the request made once more."""
        for attempt in (1, 2):
            self.calls[name] += 1
            headers = await self._token.headers() if self._token else {}
            try:
                response = await self._client.request(
                    method, path, json=json, headers=headers,
                    params=tuple(params) if params else None)
            except httpx.TimeoutException as exc:
                raise BackendUnavailable(f"slurmrestd did not answer {method} {path} in "
                                         f"{self.settings.command_timeout_s:.0f}s") from exc
            except httpx.HTTPError as exc:
                raise BackendUnavailable(f"cannot reach slurmrestd at {self.url}: "
                                         f"{exc!r}") from exc
            body = await asyncio.to_thread(_json, response)  # megabytes with many jobs
            status = response.status_code
            errors = errors_of(body)
            suspect = status in (401, 403, 511) or any(code in AUTH_SUSPECT
                                                       for code, _ in errors)
            if suspect and self._token and await self._token.renew(suspect=True) \
                    and repeat and attempt == 1:
                continue
            if retry_later(status, errors):
                raise BackendUnavailable(
                    f"slurmrestd {method} {path}: {describe(status, errors, response.text)}")
            unknown_job = any(code == INVALID_JOB_ID for code, _ in errors)
            if status == 404 and name != "openapi" and not unknown_job:  # other plugins now?
                self._api = None  # ask again
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
