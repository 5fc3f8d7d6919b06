"""The Livy and YARN contract fakes' own behaviours, over plain HTTP, each against the line of
incubator-livy or Hadoop it copies (see the modules' docstrings). Batches of an application
file that does not exist cost Spark little: the master takes the driver, the worker cannot
fetch the file, the driver ends ERROR (the YARN app FAILED, the batch ``dead``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.livy.conftest import APP, LivyLab

pytestmark = pytest.mark.spark

CSRF = {"X-Requested-By": "tests"}


def eventually(check: Callable[[], Any], timeout: float = 120, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def test_listing_pages_and_total(livy_lab: LivyLab, tmp_path: Path) -> None:
    """SessionServlet.scala:71-82: ``total`` counts all, ``sessions`` is the slice."""
    url = livy_lab.livy_url
    for i in range(3):
        made = httpx.post(f"{url}/batches", json={"file": str(tmp_path / "no.py"),
                                                  "name": f"n{i}"})
        assert made.status_code == 201 and made.json()["id"] == i
        assert made.headers["Location"] == f"/batches/{i}"
    page = httpx.get(f"{url}/batches", params={"from": 1, "size": 1}).json()
    assert page["from"] == 1 and page["total"] == 3
    assert [s["id"] for s in page["sessions"]] == [1]
    assert len(httpx.get(f"{url}/batches").json()["sessions"]) == 3  # size 100 by default
    by_name = httpx.get(f"{url}/batches/n2").json()  # a non-digit key is a name
    assert by_name["id"] == 2
    assert httpx.get(f"{url}/batches/9").status_code == 404


def test_duplicate_name_is_refused_and_uses_an_id(livy_lab: LivyLab, tmp_path: Path) -> None:
    """BatchSessionServlet.scala:48 takes the id before SessionManager.scala:105-110 refuses
    the name: the next batch skips it."""
    url = livy_lab.livy_url
    body = {"file": str(tmp_path / "no.py"), "name": "same"}
    assert httpx.post(f"{url}/batches", json=body).json()["id"] == 0
    again = httpx.post(f"{url}/batches", json=body)
    assert again.status_code == 400
    assert again.json() == {"msg": "Rejected, Reason: Duplicate session name: Some(same) "
                                   "for session 1"}
    assert httpx.post(f"{url}/batches", json={**body, "name": "other"}).json()["id"] == 2
    assert httpx.get(f"{url}/batches").json()["total"] == 2


def test_csrf_and_max_creation(livy_lab: LivyLab, tmp_path: Path) -> None:
    """CsrfFilter.scala:37-40 (400 without X-Requested-By on a non-GET); SessionServlet.scala:
    123-132 (400 while max-creation spark-submits run)."""
    url = livy_lab.livy_url
    livy_lab.livy.csrf = True
    body = {"file": str(tmp_path / "no.py")}
    refused = httpx.post(f"{url}/batches", json=body)
    assert refused.status_code == 400
    assert refused.json()["msg"] == "Missing Required Header for CSRF protection."
    assert httpx.get(f"{url}/batches").status_code == 200  # GET needs no header
    livy_lab.livy.max_creation, livy_lab.livy.submit_s = 1, 30.0
    first = httpx.post(f"{url}/batches", json=body, headers=CSRF)
    assert first.status_code == 201 and first.json()["state"] == "starting"
    busy = httpx.post(f"{url}/batches", json=body, headers=CSRF)
    assert busy.status_code == 400
    assert busy.json()["msg"] == "Rejected, too many sessions are being created!"
    assert httpx.delete(f"{url}/batches/0").status_code == 400  # no header
    assert httpx.delete(f"{url}/batches/0", headers=CSRF).json() == {"msg": "deleted"}
    assert httpx.get(f"{url}/batches/0").status_code == 404  # deleted at once


def test_tags_states_retain_and_yarn(livy_lab: LivyLab, tmp_path: Path) -> None:
    """The app's tags: ``livy-batch-<id>-<8>`` then the user's, lower-cased (BatchSession.scala
    :65, SparkApp.scala:76-81); YARN's state and finalStatus disagree for a while
    (RUNNING+FAILED, then FINISHED+FAILED) and Livy says ``dead``; a finished batch is dropped
    after the retain time (SessionManager.scala:162-168); YARN keeps the app."""
    app = tmp_path / "app.py"
    app.write_text(APP)
    livy_lab.yarn.settle_s = 3.0
    livy_lab.livy.retain_s = 6.0
    url, yarn = livy_lab.livy_url, livy_lab.yarn_url
    made = httpx.post(f"{url}/batches", json={
        "file": str(app), "name": "tagged", "driverMemory": "512m",
        "conf": {"spark.yarn.tags": "Mine,theirs", "spark.yarn.appMasterEnv.EXIT": "4"}}).json()
    apps = httpx.get(f"{yarn}/ws/v1/cluster/apps", params={"applicationTags": "MINE"}).json()
    [found] = apps["apps"]["app"]
    tags = found["applicationTags"].split(",")
    assert tags[1:] == ["mine", "theirs"]
    assert tags[0].startswith("livy-batch-0-") and len(tags[0]) == len("livy-batch-0-") + 8
    assert found["id"] == made["appId"]
    none = httpx.get(f"{yarn}/ws/v1/cluster/apps", params={"applicationTags": "nobody"})
    assert none.json() == {"apps": None}

    def pair() -> tuple[str, str]:
        got = httpx.get(f"{yarn}/ws/v1/cluster/apps/{found['id']}").json()["app"]
        return got["state"], got["finalStatus"]

    eventually(lambda: pair() == ("RUNNING", "FAILED"), what="RUNNING+FAILED")
    assert httpx.get(f"{url}/batches/0/state").json() == {"id": 0, "state": "dead"}
    log = httpx.get(f"{url}/batches/0/log", params={"from": 0, "size": -1}).json()["log"]
    assert log[0] == "stdout: " and "\nstderr: " in log and "\nYARN Diagnostics: " in log
    eventually(lambda: pair() == ("FINISHED", "FAILED"), what="FINISHED+FAILED")
    eventually(lambda: httpx.get(f"{url}/batches/0").status_code == 404, what="GC")
    assert pair() == ("FINISHED", "FAILED")


def test_yarn_kill_and_restarts(livy_lab: LivyLab, tmp_path: Path) -> None:
    """A kill through YARN (``PUT .../state``: 202 while under way) makes the batch
    ``killed``; a restart with recovery off forgets every batch and starts ids at 0; with
    recovery on a batch comes back ``recovering`` with its id."""
    app = tmp_path / "app.py"
    app.write_text(APP)
    url, yarn = livy_lab.livy_url, livy_lab.yarn_url
    env = {"spark.yarn.appMasterEnv.SLEEP": "300"}
    first = httpx.post(f"{url}/batches", json={"file": str(app), "conf": env}).json()
    eventually(lambda: httpx.get(f"{url}/batches/0/state").json()["state"] == "running",
               what="running")
    put = httpx.put(f"{yarn}/ws/v1/cluster/apps/{first['appId']}/state",
                    json={"state": "KILLED"})
    assert put.status_code in (200, 202)
    eventually(lambda: httpx.get(f"{url}/batches/0/state").json()["state"] == "killed",
               what="killed")
    livy_lab.livy.restart(recovery=False)
    assert httpx.get(f"{url}/batches").json() == {"from": 0, "total": 0, "sessions": []}
    second = httpx.post(f"{url}/batches", json={"file": str(app), "name": "keep"}).json()
    assert second["id"] == 0
    eventually(lambda: httpx.get(f"{url}/batches/0/state").json()["state"] == "success",
               what="success")
    livy_lab.livy.restart(recovery=True)
    back = httpx.get(f"{url}/batches/keep").json()
    assert (back["id"], back["state"]) == (0, "recovering")
    eventually(lambda: httpx.get(f"{url}/batches/0/state").json()["state"] == "success",
               what="resynced by tag")
    assert httpx.post(f"{url}/batches", json={"file": str(app)}).json()["id"] == 1
