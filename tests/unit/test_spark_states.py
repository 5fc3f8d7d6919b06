"""The spark_standalone backend's state table, without Spark: every ``DriverState`` of Spark's
core/src/main/scala/org/apache/spark/deploy/master/DriverState.scala (SUBMITTED, RUNNING,
FINISHED, RELAUNCHING, UNKNOWN, KILLED, FAILED, ERROR) fed to
:func:`bridgehead.backends.spark_standalone.driver_status` as the master's ``GET /json/`` lists a
driver (JsonProtocol.writeDriverInfo: id, starttime, state, cores, memory, submitdate, worker,
mainclass). The real-Spark behaviour (a worker killed, a master restarted) is in tests/spark."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import pytest

from bridgehead.backends.spark_standalone import STATES, driver_status
from bridgehead.domain.jobs import JobState, Usage

DRIVER_STATES = ("SUBMITTED", "RUNNING", "FINISHED", "RELAUNCHING", "UNKNOWN", "KILLED",
                 "FAILED", "ERROR")
USAGE = Usage(elapsed_s=12.0, cores=3, nodes=1)


def listed(state: str) -> dict[str, Any]:
    return {"id": "driver-20261205141500-0007", "starttime": "1764944100000", "state": state,
            "cores": 1, "memory": 1024, "submitdate": "Sat Dec 05 14:15:00 UTC 2026",
            "worker": "worker-20261205140000-127.0.0.1-40001",
            "mainclass": "org.apache.spark.deploy.PythonRunner"}


def test_the_table_has_every_driver_state_and_no_other() -> None:
    assert set(STATES) == set(DRIVER_STATES)


def test_the_table_matches_the_spark_on_this_machine() -> None:
    """DriverState's values as compiled in the pyspark wheel's spark-core jar (its class file
    names each value's field), when the wheel is installed."""
    pyspark = pytest.importorskip("pyspark")
    jars = sorted((Path(pyspark.__file__).parent / "jars").glob("spark-core_*.jar"))
    if not jars:
        pytest.skip("no spark-core jar in the pyspark wheel")
    with zipfile.ZipFile(jars[0]) as jar:
        data = jar.read("org/apache/spark/deploy/master/DriverState$.class")
    # CONSTANT_Utf8 entries (tag 1, u2 length): the fields' names; values are upper-case words
    names = {m.group(2).decode() for m in re.finditer(rb"\x01\x00([\x03-\x20])([A-Z]+)", data)
             if len(m.group(2)) == m.group(1)[0]}
    assert names == set(DRIVER_STATES)


@pytest.mark.parametrize(("state", "expected"), [
    ("SUBMITTED", JobState.SUBMITTED),  # waiting for a worker with room
    ("RUNNING", JobState.RUNNING),
])
def test_a_driver_not_ended(state: str, expected: JobState) -> None:
    status = driver_status(listed(state))
    assert status is not None
    assert (status.state, status.exit_code, status.usage, status.infrastructure) == (
        expected, None, None, False)


def test_finished_is_success_with_exit_0() -> None:
    status = driver_status(listed("FINISHED"), usage=USAGE)
    assert status is not None
    assert (status.state, status.exit_code, status.usage) == (JobState.SUCCEEDED, 0, USAGE)


def test_failed_is_a_non_zero_exit_known_or_not() -> None:
    known = driver_status(listed("FAILED"), usage=USAGE, exit_code=3)
    assert known is not None and (known.state, known.exit_code) == (JobState.FAILED, 3)
    unknown = driver_status(listed("FAILED"), usage=USAGE)
    assert unknown is not None and (unknown.state, unknown.exit_code) == (JobState.FAILED, None)
    assert unknown.reason is not None and "no exit code" in unknown.reason
    assert not known.infrastructure and not unknown.infrastructure


def test_killed_is_cancelled() -> None:
    status = driver_status(listed("KILLED"), usage=USAGE)
    assert status is not None and status.state is JobState.CANCELLED
    assert not status.infrastructure and status.usage == USAGE


def test_error_with_an_exception_is_failed_without_it_lost_to_the_worker() -> None:
    """ERROR with the exception the REST status gives: the driver could not run (a missing
    class, an unreadable jar): the job's failure. ERROR without one: Master.removeDriver after
    its worker was lost (an unsupervised driver is not relaunched)."""
    failed = driver_status(listed("ERROR"), usage=USAGE, exception=(
        "Exception from the cluster:\njava.lang.ClassNotFoundException: com.example.Main\n"
        "\tat java.net.URLClassLoader.findClass"))
    assert failed is not None and failed.state is JobState.FAILED and not failed.infrastructure
    assert failed.reason == ("Spark could not run the driver: Exception from the cluster: "
                             "java.lang.ClassNotFoundException: com.example.Main")
    lost = driver_status(listed("ERROR"), usage=USAGE)
    assert lost is not None and (lost.state, lost.infrastructure) == (JobState.LOST, True)


def test_relaunching_is_lost_to_the_infrastructure_never_failed_or_succeeded() -> None:
    """RELAUNCHING: the driver's worker died and the master is starting it again under a new
    id (only a supervised driver; Bridgehead submits with supervise=false and retries itself):
    this attempt was lost with its worker."""
    status = driver_status(listed("RELAUNCHING"), usage=USAGE)
    assert status is not None
    assert (status.state, status.infrastructure, status.exit_code) == (JobState.LOST, True, None)
    assert status.reason == "Spark driver RELAUNCHING: its worker was lost"


@pytest.mark.parametrize("state", ["UNKNOWN", "SOMETHING_NEWER", "None"])
def test_unknown_is_not_decided(state: str) -> None:
    """UNKNOWN (a master recovering its state) and a state the table lacks are left out of the
    poll's answer: the agent looks again, and after its grace calls the job lost; never
    succeeded."""
    assert driver_status(listed(state), usage=USAGE) is None
    assert driver_status({k: v for k, v in listed(state).items() if k != "state"}) is None
