"""The real Spark standalone cluster of ``scripts/spark-lab`` (Spark 4 from the pyspark wheel).
If the lab is down, the session starts it and stops it at the end; if it cannot start, the
tests are skipped locally with the reason and fail under ``CI=true``."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridgehead.backends.spark_standalone import SparkStandaloneBackend
from bridgehead.config import SparkSettings
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]
LAB = ["bash", str(ROOT / "scripts" / "spark-lab")]
LAB_DIR = Path(os.environ.get("SPARK_LAB_DIR", "/tmp/bh-spark-lab"))

pytestmark = pytest.mark.spark


@dataclass(frozen=True)
class SparkLab:
    info: dict[str, Any]

    def settings(self, **kw: Any) -> SparkSettings:
        i = self.info
        given: dict[str, Any] = {"master_url": i["master_url"], "rest_url": i["rest_url"],
                                 "json_url": i["json_url"], "work_dir": Path(i["work_dir"]),
                                 "python": i["python"]}
        return SparkSettings(**{**given, **kw})

    def backend(self, state_dir: Path, **kw: Any) -> SparkStandaloneBackend:
        return SparkStandaloneBackend(self.settings(**kw), state_dir=state_dir)

    def agent_env(self) -> dict[str, str]:
        """The ``BRIDGEHEAD_SPARK__*`` variables of an agent of this cluster."""
        i = self.info
        return {"BRIDGEHEAD_SPARK__MASTER_URL": i["master_url"],
                "BRIDGEHEAD_SPARK__REST_URL": i["rest_url"],
                "BRIDGEHEAD_SPARK__JSON_URL": i["json_url"],
                "BRIDGEHEAD_SPARK__WORK_DIR": i["work_dir"],
                "BRIDGEHEAD_SPARK__PYTHON": i["python"]}

    def cmd(self, *args: str) -> None:
        done = subprocess.run([*LAB, *args], timeout=300, capture_output=True, text=True)
        if done.returncode != 0:
            raise AssertionError(f"spark-lab {' '.join(args)} exited {done.returncode}:\n"
                                 f"{done.stdout[-3000:]}{done.stderr[-3000:]}")


def lab_status() -> tuple[bool, bool]:
    """(the lab's daemons are running, and all of it answers). A busy machine can make a
    running lab slow to answer: that is not a lab this session started, nor one to stop."""
    done = subprocess.run([*LAB, "status"], capture_output=True, text=True, timeout=120)
    return "master: running" in done.stdout, done.returncode == 0


@pytest.fixture(scope="session")
def spark_lab() -> Iterator[SparkLab]:
    was_up, answering = lab_status()
    if not answering:
        started = subprocess.run([*LAB, "up"], capture_output=True, text=True, timeout=900)
        if started.returncode != 0:
            reason = ("scripts/spark-lab up failed:\n"
                      f"{started.stdout[-2000:]}{started.stderr[-2000:]}")
            if IN_CI:
                pytest.fail(f"the Spark lab is required in CI: {reason}")
            pytest.skip(reason)
    yield SparkLab(json.loads((LAB_DIR / "lab.json").read_text()))
    if not was_up:
        subprocess.run([*LAB, "down"], capture_output=True, timeout=300)
