"""One real Bridgehead stack (server + local agent) and one real ``airflow standalone`` for the
session, wired by the ``bridgehead_default`` connection. The DAG files of ``dags/`` are copied
to a temporary dags folder (tests may add more: ``lab.airflow.add_dag_file``).

When Airflow is not installed the tests that need it are skipped locally with the reason, and
fail under ``CI=true``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.airflow.requirements import require_airflow
from tests.airflow.standalone import AirflowInstance, airflow_standalone
from tests.procs import Stack, env_for, make_token, stack

DAGS = Path(__file__).parent / "dags"


@dataclass
class AirflowLab:
    """The session's Bridgehead stack and Airflow, and how to run the CLI against both."""

    bridgehead: Stack
    airflow: AirflowInstance
    client_token: str

    def env(self, home: Path, *, secrets: bool = True) -> dict[str, str]:
        """A CLI environment: ``BRIDGEHEAD_HOME`` = ``home``; with ``secrets``, the token and
        the Airflow password too (else they must come from ``home``'s config.toml)."""
        env = env_for(home, BRIDGEHEAD_URL=self.bridgehead.server.url,
                      BRIDGEHEAD_AIRFLOW__URL=self.airflow.url,
                      BRIDGEHEAD_AIRFLOW__USERNAME=self.airflow.username,
                      BRIDGEHEAD_AIRFLOW__POLL_INTERVAL_S="0.5")
        if secrets:
            env.update(BRIDGEHEAD_TOKEN=self.client_token,
                       BRIDGEHEAD_AIRFLOW__PASSWORD=self.airflow.password)
        return env

    def write_config(self, home: Path) -> Path:
        """``home/config.toml`` with the secrets (what a detached follower reads)."""
        path = home / "config.toml"
        path.write_text(f'[client]\ntoken = "{self.client_token}"\n\n'
                        f'[airflow]\npassword = "{self.airflow.password}"\n')
        path.chmod(0o600)
        return path

    def cli(self, *args: str, home: Path, secrets: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``bridgehead ARGS...`` as a real process."""
        return subprocess.run([sys.executable, "-m", "bridgehead.cli.main", *args],
                              env=self.env(home, secrets=secrets), capture_output=True,
                              text=True, timeout=timeout)


@pytest.fixture(scope="session")
def airflow_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowLab]:
    require_airflow()
    root = tmp_path_factory.mktemp("airflow-lab")
    dags = root / "dags"
    shutil.copytree(DAGS, dags, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "bridgehead").mkdir()
    with stack(root / "bridgehead", slots=64, poll=0.2) as bh:
        token = make_token(bh.dsn, "client")
        conn = json.dumps({"conn_type": "bridgehead", "host": bh.server.url, "password": token})
        with airflow_standalone(root / "airflow", dags,
                                {"AIRFLOW_CONN_BRIDGEHEAD_DEFAULT": conn}) as af:
            yield AirflowLab(bridgehead=bh, airflow=af, client_token=token)
