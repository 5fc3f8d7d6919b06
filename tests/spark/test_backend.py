"""The backend contract on a real Spark standalone cluster (scripts/spark-lab): success with
its logs and usage, a non-zero exit, cancel, an unknown id, hostile arguments verbatim, the
fence that finds a driver whose record a crash lost, and a master restart.

Each Spark app is a small Python file run as Spark's PythonRunner in cluster mode (~5-15 s
each on a busy machine): the tests share as few apps as they can."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path

import pytest

from bridgehead.backends.base import Backend, NativeStatus
from bridgehead.backends.spark_standalone import SparkStandaloneBackend
from bridgehead.domain.jobs import TERMINAL, JobSpec, JobState
from bridgehead.domain.spark import SparkApp
from tests.spark.conftest import SparkLab

pytestmark = pytest.mark.spark

APP = """\
import json, os, sys, time
print(json.dumps({"argv": sys.argv[1:], "job": os.environ.get("BRIDGEHEAD_JOB_ID")}))
print("to stderr", file=sys.stderr)
sys.stdout.flush()
time.sleep(float(os.environ.get("SLEEP", "0")))
sys.exit(int(os.environ.get("EXIT", "0")))
"""
HOSTILE = ("a b", "$(touch /tmp/bh-spark-pwned)", "; rm -rf /", "'\"`", "--conf", "-e",
           "ünï*?", "line\nbreak", "")


def new_id(what: str) -> str:
    """A fresh job id (the lab's master remembers the drivers of earlier runs)."""
    return f"{what}-{uuid.uuid4().hex[:12]}"


def spec_of(tmp_path: Path, *args: str, cores: int = 1, name: str | None = None,
            **env: str) -> JobSpec:
    app = tmp_path / "app.py"
    app.write_text(APP)
    return JobSpec(cluster="spark", env=env, name=name, spark=SparkApp(
        application=str(app), arguments=args, driver_cores=cores, driver_memory_mb=512))


async def until(backend: Backend, nid: str, states: set[JobState],
                timeout: float = 120) -> NativeStatus:
    """Poll ``backend`` as an agent does until ``nid`` is in one of ``states``."""
    deadline = time.monotonic() + timeout
    while True:
        status = (await backend.poll([nid])).get(nid)
        if status is not None and status.state in states:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"{nid} did not reach {states}: last {status}")
        await asyncio.sleep(0.5)


async def test_success_logs_usage_and_arguments_verbatim(spark_lab: SparkLab,
                                                         tmp_path: Path) -> None:
    backend = spark_lab.backend(tmp_path / "state")
    try:
        job_id = new_id("ok")
        # a name that tries to end the quoted app name early and fake another job's tag
        victim = new_id("victim")
        faked = f'x bh:{victim}" "y\n'
        nid = await backend.submit(job_id, spec_of(tmp_path, *HOSTILE, name=faked))
        before = backend.requests
        await backend.poll([nid, "driver-20000101000000-9999"])
        assert backend.requests - before == 1  # ONE GET /json/ for every driver
        done = await until(backend, nid, set(TERMINAL))
        assert done.state is JobState.SUCCEEDED and done.exit_code == 0, done
        assert done.usage is not None and done.usage.cores >= 1 and done.usage.elapsed_s > 0
        out = await backend.read_log(nid, "stdout", 0, 1 << 20)
        first = json.loads(out.decode().splitlines()[0])
        assert first == {"argv": list(HOSTILE), "job": job_id}
        assert "bh-spark-pwned" not in os.listdir("/tmp")
        # PythonRunner sends Python's stderr to the driver's stdout (PythonRunner.scala,
        # redirectErrorStream); the driver's stderr holds the JVM's launch command and log
        assert b"to stderr" in out
        assert (await backend.read_log(nid, "stdout", 5, 10)) == out[5:15]
        err = await backend.read_log(nid, "stderr", 0, 1 << 20)
        assert err.startswith(b"Launch Command")
        # reconciliation: a fresh backend (no fence, no memory) finds it by its launch tag
        again = spark_lab.backend(tmp_path / "other-state")
        try:
            never = new_id("never")
            assert await again.find([job_id, never, victim]) == {job_id: [nid], never: [],
                                                                  victim: []}
        finally:
            await again.close()
    finally:
        await backend.close()


async def test_non_zero_exit_fails_with_its_code(spark_lab: SparkLab, tmp_path: Path) -> None:
    backend = spark_lab.backend(tmp_path / "state")
    try:
        nid = await backend.submit(new_id("bad"), spec_of(tmp_path, EXIT="3"))
        done = await until(backend, nid, set(TERMINAL))
        # Spark says FAILED with no code (DriverState.scala); the code is in its stderr
        assert done.state is JobState.FAILED and done.exit_code == 3, done
        # an agent that does not see the work dir reads the same through the worker's /log/
        remote = SparkStandaloneBackend(spark_lab.settings(work_dir=None),
                                        state_dir=tmp_path / "remote")
        try:
            assert (await remote.poll([nid]))[nid].exit_code == 3
            local = await backend.read_log(nid, "stdout", 0, 1 << 20)
            assert local and await remote.read_log(nid, "stdout", 0, 1 << 20) == local
            assert await remote.read_log(nid, "stdout", 3, 7) == local[3:10]
            assert await remote.read_log(nid, "stdout", len(local), 100) == b""
        finally:
            await remote.close()
    finally:
        await backend.close()


async def test_cancel_and_unknown_ids(spark_lab: SparkLab, tmp_path: Path) -> None:
    backend = spark_lab.backend(tmp_path / "state")
    try:
        nid = await backend.submit(new_id("long"), spec_of(tmp_path, SLEEP="300"))
        await until(backend, nid, {JobState.RUNNING})
        await backend.cancel([nid, "driver-20000101000000-9999"])
        done = await until(backend, nid, set(TERMINAL))
        assert done.state is JobState.CANCELLED, done
        # an id the master never knew is absent (the agent calls it lost), never succeeded
        assert await backend.poll(["driver-20000101000000-9999"]) == {}
    finally:
        await backend.close()


async def test_an_application_spark_cannot_fetch_fails_with_its_exception(
        spark_lab: SparkLab, tmp_path: Path) -> None:
    """The worker cannot fetch the app: the driver ends ERROR with an exception
    (Spark 4.3.0 DriverRunner.scala:163 ``downloadUserJar``, as the stack in the REST status's
    ``message`` shows): failed, not lost."""
    backend = spark_lab.backend(tmp_path / "state")
    try:
        spec = JobSpec(cluster="spark", spark=SparkApp(
            application=str(tmp_path / "missing.py"), driver_memory_mb=512))
        nid = await backend.submit(new_id("missing"), spec)
        done = await until(backend, nid, set(TERMINAL))
        assert done.state is JobState.FAILED, done
        assert done.reason is not None and "NoSuchFileException" in done.reason
        assert f"{tmp_path}/missing.py" in done.reason and "\n" not in done.reason
    finally:
        await backend.close()


async def test_refuses_what_it_cannot_run(spark_lab: SparkLab, tmp_path: Path) -> None:
    from bridgehead.domain.jobs import Resources
    from bridgehead.errors import SubmitRejected

    backend = spark_lab.backend(tmp_path / "state")
    try:
        with pytest.raises(SubmitRejected, match="Spark applications only"):
            await backend.submit("j1", JobSpec(cluster="spark", command=("true",)))
        spec = spec_of(tmp_path)
        with pytest.raises(SubmitRejected, match=r"resources\.walltime_s"):
            await backend.submit("j2", JobSpec(cluster="spark", spark=spec.spark,
                                               resources=Resources(walltime_s=60)))
    finally:
        await backend.close()


def open_fence(state_dir: Path, job_id: str) -> None:
    """The fence as a crash right after the master took the driver leaves it: no driver."""
    fence = state_dir / "spark-fence" / f"{job_id}.json"
    fence.write_text(json.dumps({**json.loads(fence.read_text()), "driver": None}))


async def test_fence_adopts_a_driver_whose_record_a_crash_lost(spark_lab: SparkLab,
                                                              tmp_path: Path) -> None:
    """Drivers that asked for more cores than any worker has stay SUBMITTED, never launched
    (Master.scala schedules a driver only on a worker with its cores free): no launch command
    shows their tag, so only the fence can tell whose they are."""
    state = tmp_path / "state"
    backend = spark_lab.backend(state)
    cores = int(spark_lab.info["worker_cores"]) + 4
    a, b = new_id("fence-a"), new_id("fence-b")
    nids: list[str] = []
    stale = state / "spark-fence" / "long-gone.json"
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"at": 0, "known": [], "driver": None}))
    os.utime(stale, (0, 0))
    try:
        nids.append(await backend.submit(a, spec_of(tmp_path, cores=cores)))
        assert not stale.exists()  # fences older than a day are dropped on submit
        open_fence(state, a)
        after = spark_lab.backend(state)  # the agent's next life: a fresh backend
        try:
            assert (await after.poll(nids))[nids[0]].state is JobState.SUBMITTED
            never = new_id("never")
            assert await after.find([a, never]) == {a: [nids[0]], never: []}
            nids.append(await after.submit(b, spec_of(tmp_path, cores=cores)))
            assert await after.find([b]) == {b: [nids[1]]}  # its fence names its driver
            open_fence(state, b)
            # two open fences, two unlaunched new drivers: which is whose cannot be told yet
            from bridgehead.errors import BackendUnavailable

            with pytest.raises(BackendUnavailable, match="could be this job's"):
                await after.find([a])
        finally:
            await after.close()
    finally:
        await backend.cancel(nids)
        await backend.close()


SESSION_APP = """\
import sys
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
print("name", spark.conf.get("spark.app.name"))
print("count", spark.range(1000).count())
print("cores.max", spark.conf.get("spark.cores.max"))
spark.stop()
"""


async def test_a_spark_session_gets_its_executors_and_usage(spark_lab: SparkLab,
                                                            tmp_path: Path) -> None:
    """A real SparkContext: the app's name carries the tag, its executors' cores
    (``spark.cores.max`` = executors x executor cores) count in the usage with the driver's."""
    app = tmp_path / "session.py"
    app.write_text(SESSION_APP)
    backend = spark_lab.backend(tmp_path / "state")
    job_id = new_id("session")
    spec = JobSpec(cluster="spark", name="sess", spark=SparkApp(
        application=str(app), driver_memory_mb=512, executor_memory_mb=512, executors=1,
        conf={"spark.ui.enabled": "false"}))
    try:
        nid = await backend.submit(job_id, spec)
        done = await until(backend, nid, set(TERMINAL), timeout=180)
        out = (await backend.read_log(nid, "stdout", 0, 1 << 20)).decode()
        assert done.state is JobState.SUCCEEDED, (done, out)
        assert f"name sess bh:{job_id}\n" in out and "count 1000\n" in out
        assert "cores.max 1\n" in out
        assert done.usage is not None and done.usage.cores == 2  # driver 1 + executor 1
    finally:
        await backend.close()


MAIN_JAVA = """\
public class Main {
    public static void main(String[] args) {
        for (String arg : args) System.out.println("[" + arg + "]");
        System.exit(Integer.parseInt(System.getenv().getOrDefault("EXIT", "0")));
    }
}
"""


@pytest.fixture
def main_jar(tmp_path: Path) -> Path:
    """A jar whose Main prints its arguments and exits with $EXIT, built with the JDK."""
    import shutil
    import subprocess

    if shutil.which("javac") is None or shutil.which("jar") is None:
        pytest.skip("no JDK (javac, jar) to build the test's jar: scripts/spark-lab installs "
                    "openjdk-17-jdk-headless when Java is missing")
    (tmp_path / "Main.java").write_text(MAIN_JAVA)
    subprocess.run(["javac", "--release", "17", "Main.java"], cwd=tmp_path, check=True)
    subprocess.run(["jar", "cf", "main.jar", "Main.class"], cwd=tmp_path, check=True)
    return tmp_path / "main.jar"


async def test_a_jar_application_runs_its_main_class(spark_lab: SparkLab, tmp_path: Path,
                                                     main_jar: Path) -> None:
    """A .jar with its main_class runs in Spark's DriverWrapper; a non-zero System.exit is
    FAILED with no code to read (only PySpark's runner writes one to the driver's stderr)."""
    backend = spark_lab.backend(tmp_path / "state")
    try:
        nids = []
        for code in ("0", "5"):
            spec = JobSpec(cluster="spark", env={"EXIT": code}, spark=SparkApp(
                application=str(main_jar), main_class="Main",
                arguments=("a b", "", "$(x)"), driver_memory_mb=512))
            nids.append(await backend.submit(new_id("jar"), spec))
        ok = await until(backend, nids[0], set(TERMINAL))
        bad = await until(backend, nids[1], set(TERMINAL))
        assert (ok.state, ok.exit_code) == (JobState.SUCCEEDED, 0), ok
        out = await backend.read_log(nids[0], "stdout", 0, 1 << 20)
        assert out == b"[a b]\n[]\n[$(x)]\n"
        assert bad.state is JobState.FAILED and bad.exit_code is None, bad
        assert "gives no exit code" in (bad.reason or "")
    finally:
        await backend.close()
