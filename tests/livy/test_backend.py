"""The backend contract on ``livy``, over the Livy and YARN contract fakes, over the REAL Spark
lab: success with logs and usage, a non-zero exit, cancel, unknown and reused ids, hostile
arguments verbatim, refused conf, ONE listing per poll, adoption by name after a lost answer,
a lookup timeout, retain-time GC and Livy restarts with recovery off and on."""

from __future__ import annotations

import asyncio
import json
import math
import os
import uuid
from pathlib import Path

import pytest

from bridgehead.backends.livy import yarn_tag
from bridgehead.domain.clusters import refuse_spark
from bridgehead.domain.jobs import TERMINAL, JobSpec, JobState
from bridgehead.errors import BackendUnavailable, InvalidSpec, SubmitRejected
from tests.livy.conftest import LivyLab, spec_of, until

pytestmark = pytest.mark.spark

HOSTILE = ("a b", "$(touch /tmp/bh-livy-pwned)", "; rm -rf /", "'\"`", "--conf", "-e",
           "ünï*?", "")


def new_tag(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex[:10]}"


async def test_success_logs_usage_and_one_listing_per_poll(livy_lab: LivyLab,
                                                           tmp_path: Path) -> None:
    livy_lab.livy.csrf = True  # every non-GET must carry X-Requested-By (CsrfFilter.scala)
    backend = livy_lab.backend()
    try:
        tag = new_tag("ok")
        nid = await backend.submit(tag, spec_of(tmp_path, *HOSTILE, name='x" bh:evil',
                                                conf={"spark.yarn.tags": "Team-A"}))
        assert nid.startswith("0/") and nid.endswith(f" bh:{tag}")
        others = [await backend.submit(new_tag("more"), spec_of(tmp_path)) for _ in range(3)]
        natives = [nid, *others, "99/gone bh:never"]
        before = (livy_lab.livy.requests["GET /batches"], backend.requests,
                  livy_lab.yarn.requests["GET /ws/v1/cluster/apps"])
        await backend.poll(natives)
        after = (livy_lab.livy.requests["GET /batches"], backend.requests,
                 livy_lab.yarn.requests["GET /ws/v1/cluster/apps"])
        assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1]
        paged = livy_lab.backend(page_size=2)
        try:
            start = livy_lab.livy.requests["GET /batches"]
            await paged.poll(natives)  # pages of 2 through `total` (4 batches)
            assert livy_lab.livy.requests["GET /batches"] - start == math.ceil(4 / 2)
        finally:
            await paged.close()
        done = await until(backend, nid, set(TERMINAL))
        assert (done.state, done.exit_code) == (JobState.SUCCEEDED, 0), done
        app = livy_lab.yarn.by_tags([f"bh-{tag}"])[0]
        assert app.tags[0].startswith("livy-batch-0-") and app.tags[1:] == ["team-a",
                                                                             f"bh-{tag}"]
        vcore_s = app.to_json()["vcoreSeconds"]
        assert done.usage is not None and done.usage.cores >= 1
        assert done.usage.core_seconds == pytest.approx(vcore_s)
        out = await backend.read_log(nid, "stdout", 0, 1 << 20)
        assert json.loads(out.decode().splitlines()[0]) == {"argv": list(HOSTILE), "job": tag}
        assert "bh-livy-pwned" not in os.listdir("/tmp")
        assert await backend.read_log(nid, "stdout", 3, 9) == out[3:12]
        assert await backend.read_log(nid, "stdout", len(out), 100) == b""
        err = await backend.read_log(nid, "stderr", 0, 1 << 20)
        assert err.startswith(b"Launch Command")  # the fake's stderr section: the driver's
        assert len(livy_lab.drivers_of(tag)) == 1
    finally:
        await backend.close()


async def test_non_zero_exit_fails_after_yarn_settles(livy_lab: LivyLab,
                                                      tmp_path: Path) -> None:
    """Livy says ``dead`` as soon as YARN says RUNNING+FAILED (any pair outside its table is
    FAILED: SparkYarnApp.scala:254-256); YARN's state says FINISHED only later. The backend
    waits for YARN (settling), then fails the job with YARN's diagnostics, no exit code."""
    livy_lab.yarn.settle_s = 5.0
    backend = livy_lab.backend()
    try:
        nid = await backend.submit(new_tag("bad"), spec_of(tmp_path, EXIT="3"))
        seen: list[tuple[JobState, bool]] = []
        while True:
            status = (await backend.poll([nid]))[nid]
            seen.append((status.state, status.settling))
            if status.state.terminal:
                break
            await asyncio.sleep(0.4)
        assert status.state is JobState.FAILED and status.exit_code is None, status
        assert "FINISHED/FAILED" in (status.reason or "")
        assert (JobState.RUNNING, True) in seen  # Livy said dead, YARN not yet FINISHED
    finally:
        await backend.close()


async def test_cancel_unknown_and_reused_ids(livy_lab: LivyLab, tmp_path: Path) -> None:
    backend = livy_lab.backend(log_interval_s=60)
    try:
        tag = new_tag("long")
        nid = await backend.submit(tag, spec_of(tmp_path, SLEEP="300"))
        await until(backend, nid, {JobState.RUNNING})
        # a running batch's log is read at most every log_interval_s (a request per batch)
        first = await backend.read_log(nid, "stdout", 0, 1 << 20)
        sent = backend.requests
        assert await backend.read_log(nid, "stdout", len(first), 1 << 20) == b""
        assert await backend.read_log(nid, "stderr", 0, 1 << 20) == b""  # once it has ended
        assert backend.requests == sent
        await backend.cancel([nid])
        done = await until(backend, nid, set(TERMINAL))
        assert done.state is JobState.CANCELLED, done
        # batch 0 is gone; an id Livy never had, or one that is another name's, is unknown
        other = await backend.submit(new_tag("other"), spec_of(tmp_path))
        assert other.startswith("1/")
        assert await backend.poll(["1/someone bh:else", "42/x bh:never"]) == {}
        assert (await until(backend, other, set(TERMINAL))).state is JobState.SUCCEEDED
        # a cancel that comes after the end leaves the batch (and its true end) alone
        await backend.cancel([other])
        assert 1 in livy_lab.livy.batches
        assert (await backend.poll([other]))[other].state is JobState.SUCCEEDED
    finally:
        await backend.close()


async def test_what_it_refuses(livy_lab: LivyLab, tmp_path: Path) -> None:
    backend = livy_lab.backend()
    try:
        command = JobSpec(cluster="livy", command=("true",))
        # the server refuses it at submit from the agent's capacity; the backend too
        with pytest.raises(InvalidSpec, match="runs Spark applications only"):
            refuse_spark(command, backend.kind, backend.capacity())
        with pytest.raises(SubmitRejected, match="Spark applications only"):
            await backend.submit("c1", command)
        with pytest.raises(SubmitRejected, match="waitAppCompletion"):
            await backend.submit("c2", spec_of(tmp_path, conf={
                "spark.yarn.submit.waitAppCompletion": "true"}))
        # Livy's own refusal (spark-blacklist.conf), its message passed on
        with pytest.raises(SubmitRejected, match=r"Blacklisted configuration values in "
                                                 r"session config: spark\.yarn\.archive"):
            await backend.submit("c3", spec_of(tmp_path, conf={
                "spark.yarn.archive": "hdfs:/spark.zip"}))
    finally:
        await backend.close()


async def test_a_lost_create_answer_is_adopted_by_name(livy_lab: LivyLab,
                                                       tmp_path: Path) -> None:
    """Livy created the batch, then answered 500: find() has it by name; a second create
    with the same tag is refused as a duplicate name (SessionManager.scala:105-110) and
    adopted. One Spark driver for the attempt."""
    livy_lab.livy.faults.fail_after_create = 1
    backend = livy_lab.backend(request_timeout_s=2)
    try:
        tag = new_tag("lost-answer")
        spec = spec_of(tmp_path)
        with pytest.raises(BackendUnavailable, match="HTTP 500"):
            await backend.submit(tag, spec)
        found = await backend.find([tag, "never-was"])
        assert found["never-was"] == [] and len(found[tag]) == 1
        assert await backend.submit(tag, spec) == found[tag][0]
        # a lookup that times out changes nothing: the next poll answers
        livy_lab.livy.faults.lookup_delay_s, livy_lab.livy.faults.slow_lookups = 4.0, 1
        with pytest.raises(BackendUnavailable, match="cannot reach Livy"):
            await backend.poll(found[tag])
        done = await until(backend, found[tag][0], set(TERMINAL))
        assert done.state is JobState.SUCCEEDED, done
        assert len(livy_lab.drivers_of(tag)) == 1
    finally:
        await backend.close()


async def test_a_batch_dropped_after_the_retain_time(livy_lab: LivyLab,
                                                     tmp_path: Path) -> None:
    livy_lab.livy.retain_s = 0.5
    backend = livy_lab.backend(yarn=False)
    try:
        tag = new_tag("gc")
        nid = await backend.submit(tag, spec_of(tmp_path))
        assert (await until(backend, nid, set(TERMINAL))).state is JobState.SUCCEEDED
        while livy_lab.livy.batches:
            await asyncio.sleep(0.2)
        assert (await backend.poll([nid]))[nid].state is JobState.SUCCEEDED  # seen success
        fresh = livy_lab.backend(yarn=False)  # an agent's next life, without YARN
        try:
            assert await fresh.poll([nid]) == {}  # unknown: the agent's grace decides
            assert await fresh.find([tag]) == {tag: []}
        finally:
            await fresh.close()
        with_yarn = livy_lab.backend()  # with YARN, its answer decides
        try:
            [adopted] = (await with_yarn.find([tag]))[tag]
            assert adopted.startswith("-/")
            assert (await with_yarn.poll([adopted]))[adopted].state is JobState.SUCCEEDED
        finally:
            await with_yarn.close()
    finally:
        await backend.close()


async def test_livy_restart_with_recovery_off(livy_lab: LivyLab, tmp_path: Path) -> None:
    """Livy stops every batch (their YARN apps are KILLED) and its ids start at 0 again: no
    job is called succeeded; with YARN they are lost to the infrastructure; a new batch that
    takes id 0 is not taken for the old one."""
    backend = livy_lab.backend()
    blind = livy_lab.backend(yarn=False)
    try:
        tags = [new_tag("r-off"), new_tag("r-off")]
        natives = [await backend.submit(t, spec_of(tmp_path, SLEEP="300")) for t in tags]
        for nid in natives:
            await until(backend, nid, {JobState.RUNNING})
        seen = await blind.poll(natives)  # the agent polls all it follows at once
        assert {s.state for s in seen.values()} == {JobState.RUNNING}
        livy_lab.livy.restart(recovery=False)
        newcomer = await backend.submit(new_tag("after"), spec_of(tmp_path))
        assert newcomer.startswith("0/") and natives[0].startswith("0/")
        gone = await blind.poll(natives)  # vanished while running: lost, not succeeded
        assert [(g.state, g.infrastructure) for g in gone.values()] == [(JobState.LOST,
                                                                          False)] * 2
        for nid in natives:
            done = await until(backend, nid, set(TERMINAL))
            assert done.state is JobState.LOST and done.infrastructure, done
        assert (await until(backend, newcomer, set(TERMINAL))).state is JobState.SUCCEEDED
    finally:
        await backend.close()
        await blind.close()


async def test_livy_restart_with_recovery_on(livy_lab: LivyLab, tmp_path: Path) -> None:
    """The batches come back ``recovering`` with their ids and resync by tag: a running one
    goes on and succeeds; one that ended dead is not recovered, and stays failed."""
    backend = livy_lab.backend()
    try:
        bad = await backend.submit(new_tag("r-on-bad"), spec_of(tmp_path, EXIT="2"))
        nid = await backend.submit(new_tag("r-on"), spec_of(tmp_path, SLEEP="12"))
        assert (await until(backend, bad, set(TERMINAL))).state is JobState.FAILED
        await until(backend, nid, {JobState.RUNNING})
        livy_lab.livy.restart(recovery=True)
        assert [b.state for b in livy_lab.livy.batches.values()] == ["recovering"]
        assert (await backend.poll([nid]))[nid].state is JobState.RUNNING  # not back to queued
        done = await until(backend, nid, set(TERMINAL))
        assert done.state is JobState.SUCCEEDED, done
        assert (await backend.poll([bad]))[bad].state is JobState.FAILED
    finally:
        await backend.close()


async def test_an_app_lookup_timeout_is_dead_and_failed(livy_lab: LivyLab,
                                                       tmp_path: Path) -> None:
    """Livy restarted (recovery on) before its spark-submit reached YARN: the batch comes back
    ``recovering``, no YARN app carries its tag, and after ``livy.server.yarn.app-lookup-
    timeout`` Livy says ``dead`` (SparkYarnApp's lookup fails). The backend reports it as
    Livy's dead, FAILED (module docstring: dead -> FAILED, Livy gives no exit code), with YARN
    (whose lack of an app for the tag the reason says) and without: never succeeded, never
    lost to the infrastructure, and no Spark driver ran."""
    livy_lab.livy.submit_s, livy_lab.livy.lookup_timeout_s = 600.0, 1.0
    backend = livy_lab.backend()
    blind = livy_lab.backend(yarn=False)
    try:
        tag = new_tag("lookup")
        nid = await backend.submit(tag, spec_of(tmp_path))
        assert (await backend.poll([nid]))[nid].state is JobState.SUBMITTED  # spark-submit
        livy_lab.livy.restart(recovery=True)
        assert [b.state for b in livy_lab.livy.batches.values()] == ["recovering"]
        assert (await blind.poll([nid]))[nid].state is JobState.SUBMITTED
        done = await until(backend, nid, set(TERMINAL), timeout=30)
        assert [b.state for b in livy_lab.livy.batches.values()] == ["dead"]
        assert (done.state, done.exit_code, done.infrastructure) == (JobState.FAILED, None,
                                                                     False), done
        assert done.reason == (f"Livy batch dead (Livy gives no exit code); YARN has no "
                               f"application tagged {yarn_tag(tag)} (it never reached YARN, "
                               "or YARN no longer keeps it)")
        without_yarn = (await blind.poll([nid]))[nid]
        assert (without_yarn.state, without_yarn.exit_code, without_yarn.infrastructure,
                without_yarn.reason) == (JobState.FAILED, None, False,
                                         "Livy batch dead (Livy gives no exit code)")
        assert livy_lab.yarn.by_tags([yarn_tag(tag)]) == [] and livy_lab.drivers_of(tag) == []
    finally:
        await backend.close()
        await blind.close()


def test_the_create_request(tmp_path: Path) -> None:
    """Livy's CreateBatchRequest (docs/rest-api.md, POST /batches): what the job gave, verbatim,
    with the cluster's conf defaults under it; proxyUser and queue only when configured; our
    YARN tag after the user's own; env as the driver's environment (appMasterEnv)."""
    from bridgehead.backends.livy import LivyBackend
    from bridgehead.config import LivySettings

    spec = spec_of(tmp_path, "a b", name="nightly run!", conf={
        "spark.yarn.tags": "team-a", "spark.sql.shuffle.partitions": "8"}, MODE="x y")
    plain = LivyBackend(LivySettings(conf={"spark.sql.shuffle.partitions": "200",
                                           "spark.ui.enabled": "false"}))
    assert spec.spark is not None
    body = plain.request_body("t1", spec, spec.spark)
    assert body["name"] == "nightly_run_ bh:t1" and body["args"] == ["a b"]
    assert body["driverMemory"] == "512m" and "executorMemory" not in body
    assert "proxyUser" not in body and "queue" not in body and "className" not in body
    assert body["conf"] == {"spark.sql.shuffle.partitions": "8", "spark.ui.enabled": "false",
                            "spark.yarn.tags": "team-a,bh-t1",
                            "spark.yarn.appMasterEnv.MODE": "x y",
                            "spark.yarn.appMasterEnv.BRIDGEHEAD_JOB_ID": "t1"}
    odd = plain.request_body("Job/With,Comma", spec, spec.spark)["conf"]["spark.yarn.tags"]
    assert odd.startswith("team-a,bh-") and "," not in odd.removeprefix("team-a,")
    configured = LivyBackend(LivySettings(proxy_user="etl", queue="batch"))
    body = configured.request_body("t2", spec, spec.spark)
    assert (body["proxyUser"], body["queue"]) == ("etl", "batch")
    clash = spec_of(tmp_path, conf={"spark.yarn.appMasterEnv.MODE": "other"}, MODE="x")
    assert clash.spark is not None
    with pytest.raises(SubmitRejected, match=r"env MODE and spark\.conf"):
        plain.request_body("t3", clash, clash.spark)


async def test_too_many_creations_is_not_a_refusal(livy_lab: LivyLab, tmp_path: Path) -> None:
    """Livy's max-creation 400 (SessionServlet.scala:123-132) is Livy being busy, not the job
    being wrong: BackendUnavailable, and the agent tries again next cycle."""
    livy_lab.livy.max_creation, livy_lab.livy.submit_s = 1, 60.0
    backend = livy_lab.backend()
    try:
        await backend.submit(new_tag("first"), spec_of(tmp_path))
        with pytest.raises(BackendUnavailable, match="too many sessions are being created"):
            await backend.submit(new_tag("second"), spec_of(tmp_path))
    finally:
        await backend.close()
