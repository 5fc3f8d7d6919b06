"""A real Airflow (``airflow standalone``: api-server, scheduler, dag-processor, triggerer)
on loopback, for end-to-end tests.

    with airflow_standalone(tmp / "airflow", dags, env={"AIRFLOW_CONN_X": "..."}) as af:
        af.wait_dag("my_dag")
        af.api("GET", "/api/v2/dags/my_dag")

Everything runs in its own process group (``start_new_session``): ``stop()`` sends SIGTERM to
the whole group, then SIGKILL, and waits. Parsing intervals are lowered so that a DAG file
copied into the dags folder is visible in the API within a few seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.procs import free_port

VENV_BIN = Path(sys.executable).parent
START_TIMEOUT_S = 120.0
"""Healthy after ~25 s on an idle 2-core machine; allow for a loaded one."""
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"


def standalone_env(home: Path, dags_folder: Path, port: int,
                   extra: dict[str, str]) -> dict[str, str]:
    """The environment of ``airflow standalone``: loopback only, few workers, fast parsing."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW_", "AIRFLOW__", "BRIDGEHEAD_"))}
    url = f"http://127.0.0.1:{port}"
    env.update({
        "AIRFLOW_HOME": str(home),
        "PATH": f"{VENV_BIN}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__WORKERS": "1",
        # New files in the dags folder are listed every 2 s (the bundle refresh, checked every
        # second); a known file is parsed again after 5 s.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2",
        "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "1",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "0",
        # The log servers bind every interface (hard-coded in 3.3); at least use free ports.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


@dataclass
class AirflowInstance:
    """A running ``airflow standalone``; ``api()`` calls its REST API as the admin user."""

    url: str
    home: Path
    dags_folder: Path
    popen: subprocess.Popen[bytes]
    log: Path
    username: str = "admin"
    password: str = ""
    startup_s: float = 0.0
    """Seconds from start until every component was healthy."""
    _token: str | None = field(default=None, repr=False)

    # -- API ---------------------------------------------------------------------------------
    def token(self, *, fresh: bool = False) -> str:
        """A JWT from ``POST /auth/token`` (cached)."""
        if self._token is None or fresh:
            r = httpx.post(f"{self.url}/auth/token", timeout=30,
                           json={"username": self.username, "password": self.password})
            r.raise_for_status()
            self._token = r.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token()}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kw)

    def wait_dag(self, dag_id: str, timeout: float = 60.0, *,
                 file: str | None = None) -> dict[str, Any]:
        """Wait until ``dag_id`` is parsed and visible in the API. Fails with the import errors
        (and the tail of the log) on timeout, or at once when ``file`` (a DAG file's name) has
        an import error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            r = self.api("GET", f"/api/v2/dags/{dag_id}")
            if r.status_code == 200:
                return dict(r.json())
            if file is not None and (errors := self.import_errors(file)):
                raise AssertionError(f"DAG file {file} does not import:\n{errors}")
            time.sleep(0.5)
        raise AssertionError(f"DAG {dag_id} not visible after {timeout}s; import errors:\n"
                             f"{self.import_errors() or '(none)'}\nlog tail:\n"
                             f"{self.log_tail()}")

    def import_errors(self, file: str | None = None) -> str:
        """The dag-processor's import errors (of DAG files named ``file``), as text."""
        errors = self.api("GET", "/api/v2/importErrors").json().get("import_errors", [])
        return "\n".join(f"{e.get('filename')}: {e.get('stack_trace')}" for e in errors
                         if file is None or str(e.get("filename", "")).endswith(file))

    def add_dag_file(self, source: Path) -> Path:
        """Copy a DAG file into the dags folder (the dag-processor lists it within ~2 s)."""
        target = self.dags_folder / source.name
        target.write_bytes(source.read_bytes())
        return target

    # -- process -----------------------------------------------------------------------------
    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise AssertionError(f"airflow standalone exited ({self.popen.returncode}):\n"
                                 f"{self.log_tail()}")

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after ``grace_s``, wait."""
        pgid = self.popen.pid  # start_new_session: the group id is the leader's pid
        _signal_group(pgid, signal.SIGTERM)
        try:
            self.popen.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(pgid, signal.SIGKILL)  # the leader's children may outlive it
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _wait_healthy(instance: AirflowInstance, timeout: float) -> float:
    """Seconds until ``/api/v2/monitor/health`` reports every component healthy."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        instance.check_alive()
        with contextlib.suppress(httpx.TransportError, ValueError):
            r = httpx.get(f"{instance.url}/api/v2/monitor/health", timeout=2)
            if r.status_code == 200 and _all_healthy(r.json()):
                return time.monotonic() - started
        time.sleep(0.5)
    raise AssertionError(f"airflow standalone not healthy after {timeout}s:\n"
                         f"{instance.log_tail()}")


def _all_healthy(health: dict[str, Any]) -> bool:
    parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return all((health.get(p) or {}).get("status") == "healthy" for p in parts)


def _read_password(home: Path, username: str, timeout: float = 30.0) -> str:
    path = home / PASSWORD_FILE
    deadline = time.monotonic() + timeout
    while not path.is_file():
        if time.monotonic() > deadline:
            raise AssertionError(f"no password file {path}")
        time.sleep(0.2)
    return str(json.loads(path.read_text())[username])


@contextlib.contextmanager
def airflow_standalone(home: Path, dags_folder: Path,
                       env: dict[str, str] | None = None) -> Iterator[AirflowInstance]:
    """Start ``airflow standalone`` under ``home`` on a free loopback port, wait until it is
    healthy, yield it, and stop its whole process group at the end, whatever happened."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = home / "standalone.log"
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            [str(VENV_BIN / "airflow"), "standalone"], cwd=home, stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env=standalone_env(home, dags_folder, port, env or {}))
    instance = AirflowInstance(url=f"http://127.0.0.1:{port}", home=home,
                               dags_folder=dags_folder, popen=popen, log=log)
    try:
        instance.startup_s = _wait_healthy(instance, START_TIMEOUT_S)
        instance.password = _read_password(home, instance.username)
        yield instance
    finally:
        instance.stop()

