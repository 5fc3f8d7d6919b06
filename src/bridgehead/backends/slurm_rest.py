"""Slurm through slurmrestd's REST API: what ``slurm_cli`` does, with no shell on the cluster.

Transport: one ``httpx.AsyncClient``. Over TCP (``rest_url = http://host:port``) requests carry
``X-SLURM-USER-NAME`` and ``X-SLURM-USER-TOKEN``: ``rest_token``, or a JWT the backend makes
with ``scontrol token`` and renews at 80% of its lifespan and after an answer that may mean it
was refused (never logged). Over a unix socket (``unix:///path``, ``rest_auth/local``) the
socket's peer is the user: no token unless ``rest_token`` is set. No connection, a timeout, or
an answer saying slurmctld/slurmdbd cannot be reached -> BackendUnavailable; a refused job ->
SubmitRejected.

Versions: on first use the backend reads ``/openapi/v3`` and speaks the newest version both
sides know (``rest_version`` forces one), from the table in ``slurm_rest_api``.

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
import time
from collections import Counter
from collections.abc import Mapping, Sequence
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
    choose_version,
    describe,
    errors_of,
    retry_later,
    status_of,
    submit_body,
)
from bridgehead.config import SlurmSettings
from bridgehead.domain.clusters import Capacity
from bridgehead.domain.jobs import JobSpec
from bridgehead.errors import BackendError, BackendUnavailable, ConfigError, SubmitRejected

logger = logging.getLogger(__name__)

_JOB_PATH = "/usr/local/bin:/usr/bin:/bin"
"""The jobs' PATH (the agent's own may not exist on the cluster); a job's env may replace it."""
_IDS_PER_REQUEST = 200
_MIN_TOKEN_AGE_S = 30.0


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
        code, out, err = await slurm.run_tool(
            ["scontrol", "token", f"username={self.user}",
             f"lifespan={s.rest_token_lifespan_s}"],
            env=env, timeout_s=s.command_timeout_s, bin_dir=s.bin_dir)
        text = out.decode(errors="replace").strip()
        if code != 0 or not text.startswith("SLURM_JWT="):
            lines = err.decode(errors="replace").strip().splitlines() or ["no output"]
            raise BackendUnavailable(f"scontrol token failed: {lines[-1][:300]}")
        return text.removeprefix("SLURM_JWT=")


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
                              f"{', '.join(sorted(VERSIONS))}")
        self.settings, self.url = settings, url
        self.files = slurm.JobFiles(settings.job_root or state_dir / "slurm", allowed_roots)
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
            logger.info("job %s submitted to Slurm as %s", job_id, native_id)
            return str(native_id)
        if not errors:
            raise BackendUnavailable(f"slurmrestd answered a submit with no job id and no "
                                     f"error: {describe(status, errors, text)}")
        raise SubmitRejected(f"slurmrestd refused the job: {describe(status, errors)}")

    async def poll(self, native_ids: Sequence[str]) -> dict[str, NativeStatus]:
        ids = slurm.native_ids(native_ids)
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
        return {native_id: await self.files.explain(native_id, status)
                for native_id, status in result.items()}

    async def _live(self, api: ApiVersion) -> dict[str, JobRecord]:
        """Every job slurmctld holds, by native id: ONE request."""
        status, body, text = await self._call("jobs", "GET", api.path("jobs"))
        if status != 200:
            raise BackendError(f"slurmrestd jobs: {describe(status, errors_of(body), text)}")
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
        errors = [(code, said) for code, said in errors_of(body) if code != NOTHING_FOUND]
        if status != 200 or errors:
            raise BackendError(f"slurmrestd accounting: {describe(status, errors, text)}")
        return [api.accounted(job) for job in body.get("jobs") or [] if isinstance(job, dict)]

    async def cancel(self, native_ids: Sequence[str]) -> None:
        """One DELETE per job (v0.0.38 has no batch cancel); one already gone is no error."""
        for native_id in slurm.native_ids(native_ids):
            api = await self._version()
            status, body, text = await self._call("cancel", "DELETE", api.path("job", native_id))
            errors = errors_of(body)
            if status != 200 and not any(code == INVALID_JOB_ID for code, _ in errors):
                logger.info("cancel %s: %s", native_id, describe(status, errors, text))

    async def find(self, tags: Sequence[str]) -> dict[str, list[str]]:
        """Jobs whose comment is one of ``tags``: slurmctld's, and accounting's since
        ``find_window_days``: one request each."""
        api = await self._version()
        records = list((await self._live(api)).values())
        if self._accounting:
            window = {"start_time": f"now-{self.settings.find_window_days}days",
                      "skip_steps": "true"}
            records += await self._accounting_jobs(api, window)
        return slurm.tagged(tags, ((r.native_id, r.comment) for r in records))

    async def read_log(self, native_id: str, stream: str, offset: int, limit: int) -> bytes:
        return await self.files.read_log(native_id, stream, offset, limit)

    def capacity(self) -> Capacity | None:
        return None  # sbatch refuses what no partition can run, with Slurm's own words

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
            suspect = status in (401, 403) or any(code in AUTH_SUSPECT for code, _ in errors)
            if suspect and self._token and await self._token.renew(suspect=True) \
                    and repeat and attempt == 1:
                continue
            if retry_later(status, errors):
                raise BackendUnavailable(
                    f"slurmrestd {method} {path}: {describe(status, errors, response.text)}")
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
