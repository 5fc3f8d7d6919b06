"""The Livy and YARN contract fakes (:mod:`bridgehead.testing`), in this process, in front of
the REAL Spark standalone cluster of ``scripts/spark-lab`` (the ``spark_lab`` fixture starts
it if it is down: skipped locally, failed under ``CI=true`` when it cannot start)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridgehead.backends.base import NativeStatus
from bridgehead.backends.livy import LivyBackend, yarn_tag
from bridgehead.config import LivySettings
from bridgehead.domain.jobs import JobSpec, JobState
from bridgehead.domain.spark import SparkApp
from bridgehead.testing._http import JsonServer
from bridgehead.testing.livy_fake import LivyFake
from bridgehead.testing.yarn_fake import SparkBehind, YarnCluster
from tests.spark.conftest import SparkLab, spark_lab  # noqa: F401 - the session fixture
from tests.spark.test_backend import APP
from tests.spark.test_backend import until as spark_until

pytestmark = pytest.mark.spark



@dataclass
class LivyLab:
    spark: SparkLab
    livy: LivyFake
    yarn: YarnCluster
    livy_url: str
    yarn_url: str

    def backend(self, *, yarn: bool = True, **kw: Any) -> LivyBackend:
        return LivyBackend(LivySettings(url=self.livy_url,
                                        yarn_url=self.yarn_url if yarn else None, **kw))

    def agent_env(self) -> dict[str, str]:
        return {"BRIDGEHEAD_LIVY__URL": self.livy_url,
                "BRIDGEHEAD_LIVY__YARN_URL": self.yarn_url}

    def drivers_of(self, tag: str) -> list[str]:
        """The Spark master's drivers (``/json/``) whose launch command carries ``tag``'s YARN
        tag (the worker writes it atop each driver's stderr)."""
        data = httpx.get(self.spark.info["json_url"], timeout=30).json()
        ids = [str(d["id"]) for d in [*data["activedrivers"], *data["completeddrivers"]]]
        ours = re.escape(yarn_tag(tag).encode())
        pattern = re.compile(rb'-Dspark\.yarn\.tags=(?:[^"]*,)?' + ours + rb'[,"]')
        out = []
        for nid in ids:
            path = Path(self.spark.info["work_dir"]) / nid / "stderr"
            try:
                head = path.read_bytes()[:64 << 10]
            except OSError:
                continue
            if pattern.search(head):
                out.append(nid)
        return out


@pytest.fixture
def livy_lab(spark_lab: SparkLab) -> Iterator[LivyLab]:  # noqa: F811
    info = spark_lab.info
    spark = SparkBehind(info["rest_url"], info["json_url"], work_dir=Path(info["work_dir"]))
    cluster = YarnCluster(spark, settle_s=1.5, tick_s=0.3).start()
    livy = LivyFake(cluster, master_url=info["master_url"], python=info["python"])
    livy_server = JsonServer(livy.handle).start()
    yarn_server = JsonServer(cluster.handle).start()
    try:
        yield LivyLab(spark_lab, livy, cluster, livy_server.url, yarn_server.url)
    finally:
        for app in list(cluster.apps.values()):  # nothing of this test left running
            cluster.kill(app.id)
        livy_server.stop()
        yarn_server.stop()
        cluster.stop()


def spec_of(tmp_path: Path, *args: str, name: str | None = None, conf: dict[str, str] | None = None,
            **env: str) -> JobSpec:
    app = tmp_path / "app.py"
    app.write_text(APP)
    return JobSpec(cluster="livy", env=env, name=name, spark=SparkApp(
        application=str(app), arguments=args, driver_memory_mb=512, conf=conf or {}))


async def until(backend: LivyBackend, nid: str, states: set[JobState],
                timeout: float = 150) -> NativeStatus:
    """:func:`tests.spark.test_backend.until`, with Livy's longer start (a YARN app first)."""
    return await spark_until(backend, nid, states, timeout)
