"""The launcher's edge cases, against handler fakes of Airflow's REST API and of the Bridgehead
API (``httpx.MockTransport``): conf parsing, API version detection, refused credentials, JWT
renewal, task-instance paging, a follow of 60 jobs (partial lines, stderr, backoff), and the
order of the one stream the CLI prints (scripted runs: each poll of the run is one step).
No Airflow needed: the real one is in ``test_launcher_e2e.py``."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridgehead.airflow.launcher import (
    LogLine,
    RunFollower,
    RunOutput,
    follower_spec,
    new_run_id,
    parse_conf,
    report,
    trigger_run,
)
from bridgehead.airflow.rest import AirflowApi
from bridgehead.cli.airflow import RunConsole
from bridgehead.client import AsyncClient
from bridgehead.config import AirflowSettings
from bridgehead.domain.jobs import Job, JobSpec, JobState
from bridgehead.errors import AuthError, ClientError, InvalidSpec, NotFound
from bridgehead.server.schemas import JobOut

Handler = Callable[[httpx.Request], httpx.Response]


def api(handler: Handler, **settings: Any) -> AirflowApi:
    values = {"url": "http://af", "username": "admin", "password": "s3cret", **settings}
    return AirflowApi(AirflowSettings.load(**values), transport=httpx.MockTransport(handler))


class Recorder:
    """A RunOutput that keeps everything: each kind apart, and all of it in order (``stream``,
    where task states start with ``-- ``)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.states: list[str] = []
        self.notes: list[str] = []
        self.stream: list[str] = []

    def job_line(self, prefix: str, text: str, *, stderr: bool) -> None:
        self.lines.append(f"{prefix} {'(stderr) ' if stderr else ''}{text}")
        self.stream.append(self.lines[-1])

    def task_state(self, prefix: str, old: str | None, new: str, try_number: int) -> None:
        self.states.append(f"{prefix} {old} -> {new}")
        self.stream.append(f"-- {self.states[-1]}")

    def note(self, text: str) -> None:
        self.notes.append(text)

    def failed_task(self, prefix: str, jobs: str, last_lines: list[LogLine]) -> None:
        self.notes.append(f"{prefix} failed {jobs}")

    def run_state(self, dag_id: str, run_id: str, state: str) -> None:
        self.notes.append(state)


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGEHEAD_HOME", str(tmp_path))
    for name in ("BRIDGEHEAD_URL", "BRIDGEHEAD_TOKEN", "BRIDGEHEAD_CONFIG"):
        monkeypatch.delenv(name, raising=False)


# -- conf ------------------------------------------------------------------------------------
def test_conf_values_are_json_when_they_parse() -> None:
    conf = parse_conf(["bins=4", 'resources={"cores": 8}', "name=run 7", "flag=true",
                       "empty=", "eq=a=b"], '{"base": 1, "bins": 2}')
    assert conf == {"base": 1, "bins": 4, "resources": {"cores": 8}, "name": "run 7",
                    "flag": True, "empty": "", "eq": "a=b"}


@pytest.mark.parametrize("pairs, conf_json, words", [
    (["novalue"], None, "KEY=VALUE"), (["=4"], None, "KEY=VALUE"),
    ([], "{not json", "not valid JSON"), ([], "[1, 2]", "JSON object"),
])
def test_bad_conf_is_invalid(pairs: list[str], conf_json: str | None, words: str) -> None:
    with pytest.raises(InvalidSpec, match=words):
        parse_conf(pairs, conf_json)


def test_run_ids_are_unique_and_sortable() -> None:
    ids = {new_run_id() for _ in range(50)}
    assert len(ids) == 50 and all(i.startswith("bh-launch-2") for i in ids)


# -- API version and credentials ---------------------------------------------------------------
async def test_airflow_3_logs_in_for_a_jwt() -> None:
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers.get("authorization")))
        if request.url.path == "/api/v2/version":
            return httpx.Response(200, json={"version": "3.3.2"})
        if request.url.path == "/auth/token":
            assert json.loads(request.content) == {"username": "admin", "password": "s3cret"}
            return httpx.Response(201, json={"access_token": "jwt-1"})
        return httpx.Response(200, json={"dag_id": "d", "is_paused": False})

    async with api(handler) as client:
        assert await client.connect() == "v2"
        await client.get_dag("d")
    assert seen[-1] == ("/api/v2/dags/d", "Bearer jwt-1")


async def test_airflow_2_uses_basic_auth_and_v1_bodies() -> None:
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v2/version":
            return httpx.Response(404, json={"detail": "Not Found"})
        if request.url.path == "/api/v1/version":
            return httpx.Response(200, json={"version": "2.10.5"})
        expected = "Basic " + base64.b64encode(b"admin:s3cret").decode()
        assert request.headers["authorization"] == expected
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json={"dag_run_id": "r1", "state": "queued"})

    async with api(handler) as client:
        assert await client.connect() == "v1"
        await client.trigger("d", "r1", {"x": 1})
    assert bodies == [{"dag_run_id": "r1", "conf": {"x": 1}}]  # no logical_date on v1


async def test_not_airflow_is_a_clear_error() -> None:
    async with api(lambda r: httpx.Response(404, text="nginx")) as client:
        with pytest.raises(ClientError, match="not an Airflow API server"):
            await client.connect()


async def test_wrong_password_is_an_auth_error_without_the_password() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(401, json={"detail": "Invalid credentials"})
        return httpx.Response(200, json={"version": "3.3.2"})

    async with api(handler) as client:
        with pytest.raises(AuthError, match="refused user 'admin'") as err:
            await client.connect()
    assert "s3cret" not in str(err.value)


async def test_no_credentials_and_a_401_says_what_to_give() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v2/version":
            return httpx.Response(200, json={"version": "3.3.2"})
        return httpx.Response(401, json={"detail": "Not authenticated"})

    async with api(handler, username=None, password=None, api_version="auto") as client:
        await client.connect()
        with pytest.raises(AuthError, match="--username"):
            await client.get_dag("d")


async def test_an_expired_jwt_is_renewed_once() -> None:
    tokens = iter(["jwt-1", "jwt-2"])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/auth/token":
            return httpx.Response(201, json={"access_token": next(tokens)})
        if request.headers.get("authorization") == "Bearer jwt-1":
            return httpx.Response(401, json={"detail": "Token expired"})
        return httpx.Response(200, json={"dag_run_id": "r", "state": "running"})

    async with api(handler, api_version="v2") as client:
        await client.connect()
        assert (await client.get_run("d", "r"))["state"] == "running"


async def test_unknown_dag_is_not_found_in_one_line() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"detail": "Dag with dag_id: 'nope' not found"})

    async with api(handler, token="t", username=None, password=None,
                   api_version="v2") as client:
        await client.connect()
        with pytest.raises(NotFound, match="has no DAG 'nope'"):
            await trigger_run(client, Recorder(), "nope", {})


async def test_task_instances_are_read_page_by_page() -> None:
    total = 250
    tis = [{"task_id": "t", "map_index": i, "state": "success"} for i in range(total)]

    def handler(request: httpx.Request) -> httpx.Response:
        assert b"/dagRuns/manual__2025-01-01T00%3A00%3A00%2B00%3A00/taskInstances?" in (
            request.url.raw_path)  # a run id is one path segment
        offset, limit = int(request.url.params["offset"]), int(request.url.params["limit"])
        page = tis[max(0, offset - 1):offset + limit]  # one repeated row per page: ties
        return httpx.Response(200, json={"task_instances": page, "total_entries": total})

    async with api(handler, token="t", username=None, password=None,
                   api_version="v2") as client:
        await client.connect()
        got = await client.task_instances("d", "manual__2025-01-01T00:00:00+00:00")
    assert sorted(t["map_index"] for t in got) == list(range(total))


# -- the follow ------------------------------------------------------------------------------
class FakeWorld:
    """A run of ``n`` mapped task instances, each with one Bridgehead job that is silent while
    the run runs (``running_s``), then writes stdout in two pieces (a line split across reads)
    and one stderr line; then the run succeeds."""

    def __init__(self, n: int, running_s: float) -> None:
        self.n, self.ends = n, time.monotonic() + running_s
        self.log_reads = 0
        self.reads_after_end = 0
        self.job_reads_after_end: Counter[int] = Counter()
        self.jobs = [Job(id=f"{i:026d}", state=JobState.RUNNING, spec=JobSpec(
            cluster="local", command=("echo",), labels={
                "airflow.dag_id": "d", "airflow.run_id": "r", "airflow.task_id": "w",
                "airflow.map_index": str(i), "airflow.try_number": "1"})) for i in range(n)]

    @property
    def over(self) -> bool:
        return time.monotonic() >= self.ends

    def airflow(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/taskInstances"):
            state = "success" if self.over else "deferred"
            return httpx.Response(200, json={"total_entries": self.n, "task_instances": [
                {"task_id": "w", "map_index": i, "state": state, "try_number": 1}
                for i in range(self.n)]})
        return httpx.Response(200, json={"state": "success" if self.over else "running"})

    def bridgehead(self, request: httpx.Request) -> httpx.Response:
        path, params = request.url.path, request.url.params
        if path == "/v1/jobs":
            after, limit = params.get("after"), int(params["limit"])
            rest = [j for j in self.jobs if after is None or j.id > after][:limit]
            state = JobState.SUCCEEDED if self.over else JobState.RUNNING
            body = [JobOut.of(_with_state(j, state)).model_dump(mode="json") for j in rest]
            return httpx.Response(200, json={"jobs": body, "next": None})
        job_id = path.split("/")[3]
        self.log_reads += 1
        self.reads_after_end += self.over
        stream, offset = params["stream"], int(params["offset"])
        i = int(job_id)
        text = {"stdout": f"first-{i}\nsecond-", "stderr": ""}[stream]
        self.job_reads_after_end[i] += self.over
        if self.job_reads_after_end[i] > 2:  # the rest comes after the first read past the end
            text = {"stdout": f"first-{i}\nsecond-{i}\nno newline", "stderr": f"warn-{i}\n"}[
                stream]
        data = text.encode()[offset:] if self.over else b""
        state = JobState.SUCCEEDED if self.over else JobState.RUNNING
        return httpx.Response(200, content=data, headers={
            "x-next-offset": str(offset + len(data)), "x-job-state": state.value})


def _with_state(job: Job, state: JobState) -> Job:
    return Job(id=job.id, spec=job.spec, state=state, exit_code=0 if state.terminal else None)


async def test_follow_streams_sixty_jobs_without_busy_polling() -> None:
    world = FakeWorld(n=60, running_s=1.5)
    out = Recorder()
    async with api(world.airflow, token="t", username=None, password=None,
                   api_version="v2") as af, AsyncClient(
            "http://bh", "tok", transport=httpx.MockTransport(world.bridgehead)) as bh:
        await af.connect()
        result = await RunFollower(af, bh, out, "d", "r", poll_s=0.05).follow()
    assert result.state == "success" and len(result.jobs) == 60
    for i in range(60):
        mine = [line for line in out.lines if line.startswith(f"[w[{i}]] ")]
        assert mine == [f"[w[{i}]] first-{i}", f"[w[{i}]] second-{i}",
                        f"[w[{i}]] (stderr) warn-{i}", f"[w[{i}]] no newline"], mine
    # Polling every 0.05 s for 1.5 s would be 30 reads per stream; quiet jobs back off.
    assert world.log_reads - world.reads_after_end <= 60 * 2 * 8, world.log_reads
    assert all(t.state == "success" for t in result.tasks)


def test_follower_job_carries_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGEHEAD_AIRFLOW__PASSWORD", "s3cret")
    settings = AirflowSettings.load(url="http://af:8080", username="admin")
    spec = follower_spec("d", "r", cluster="local", log_file=Path("rel.log"),
                         airflow=settings, bridgehead_url="http://bh:8765")
    assert "s3cret" not in json.dumps(spec.to_dict())
    assert spec.command[1:6] == ("-m", "bridgehead.cli.main", "airflow", "follow", "d")
    assert Path(spec.command[-1]).is_absolute()
    assert "airflow.run_id" not in spec.labels  # else it would follow itself


async def test_follow_rides_out_an_unreachable_airflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bridgehead.airflow.launcher.RETRY_S", 0.01)
    world = FakeWorld(n=2, running_s=0.3)
    calls = 0

    def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if 2 <= calls <= 4:
            raise httpx.ConnectError("connection refused")
        return world.airflow(request)

    out = Recorder()
    async with api(flaky, token="t", username=None, password=None,
                   api_version="v2") as af, AsyncClient(
            "http://bh", "tok", transport=httpx.MockTransport(world.bridgehead)) as bh:
        await af.connect()
        result = await RunFollower(af, bh, out, "d", "r", poll_s=0.02).follow()
    assert result.state == "success"
    assert any("cannot reach Airflow" in n for n in out.notes) and "reachable again" in out.notes
    assert "[w[1]] (stderr) warn-1" in out.lines


async def test_timeout_stops_following_an_unfinished_run() -> None:
    world = FakeWorld(n=3, running_s=60)
    async with api(world.airflow, token="t", username=None, password=None,
                   api_version="v2") as af, AsyncClient(
            "http://bh", "tok", transport=httpx.MockTransport(world.bridgehead)) as bh:
        await af.connect()
        result = await RunFollower(af, bh, Recorder(), "d", "r", poll_s=0.02,
                                   timeout_s=0.2).follow()
    assert not result.finished and result.state == "running"
    assert result.to_dict()["finished"] is False


@pytest.mark.parametrize("args, code, words", [
    (("--conf", "novalue"), 2, "KEY=VALUE"),
    (("--conf-json", "[1]"), 2, "JSON object"),
    (("--log-file", "/proc/no/such.log"), 2, "cannot write --log-file"),
    ((), 1, "cannot reach Airflow at http://127.0.0.1:9"),
])
def test_cli_fails_in_one_line(args: tuple[str, ...], code: int, words: str,
                               tmp_path: Path) -> None:
    env = {"BRIDGEHEAD_HOME": str(tmp_path), "BRIDGEHEAD_AIRFLOW__URL": "http://127.0.0.1:9",
           "BRIDGEHEAD_AIRFLOW__PASSWORD": "s3cret", "BRIDGEHEAD_AIRFLOW__USERNAME": "admin",
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "bridgehead.cli.main", "airflow", "run", "d",
                          *args], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == code, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "s3cret" not in out.stderr, out.stderr


# -- the one stream: order, markers, the failure summary, --log-file ---------------------------
@dataclass(frozen=True)
class Step:
    """What one poll of a scripted run sees: the run's state, each task instance's state, and
    each job's state with its whole log so far (``JOB_ID`` per task)."""

    run: str
    tasks: dict[str, str]
    jobs: dict[str, tuple[JobState, str, str]] = field(default_factory=dict)


class ScriptedRun:
    """A run that moves one ``Step`` on each time the follower asks for the run, whatever the
    clock says; a log read returns at most ``CHUNK`` bytes (a job's end takes several reads)."""

    CHUNK = 7

    def __init__(self, steps: list[Step]) -> None:
        self.steps, self.at = steps, -1

    @property
    def step(self) -> Step:
        return self.steps[self.at]

    def airflow(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/taskInstances"):
            tis = [{"task_id": t, "map_index": -1, "state": s, "try_number": 1}
                   for t, s in self.step.tasks.items()]
            return httpx.Response(200, json={"total_entries": len(tis), "task_instances": tis})
        self.at = min(self.at + 1, len(self.steps) - 1)
        return httpx.Response(200, json={"state": self.step.run})

    def bridgehead(self, request: httpx.Request) -> httpx.Response:
        path, params = request.url.path, request.url.params
        if path == "/v1/jobs":
            jobs = [JobOut.of(self._job(task, state)).model_dump(mode="json")
                    for task, (state, _, _) in self.step.jobs.items()
                    if params.get("after") is None or job_id(task) > params["after"]]
            return httpx.Response(200, json={"jobs": sorted(jobs, key=lambda j: j["id"]),
                                             "next": None})
        task = next(t for t in self.step.jobs if job_id(t) == path.split("/")[3])
        state, stdout, stderr = self.step.jobs[task]
        offset = int(params["offset"])
        text = stdout if params["stream"] == "stdout" else stderr
        data = text.encode()[offset:offset + self.CHUNK]
        return httpx.Response(200, content=data, headers={
            "x-next-offset": str(offset + len(data)), "x-job-state": state.value})

    def _job(self, task: str, state: JobState) -> Job:
        exit_code = {JobState.SUCCEEDED: 0, JobState.FAILED: 3}.get(state)
        return Job(id=job_id(task), state=state, exit_code=exit_code, spec=JobSpec(
            cluster="local", command=("echo",), labels={
                "airflow.dag_id": "d", "airflow.run_id": "r", "airflow.task_id": task}))


def job_id(task: str) -> str:
    return f"{ord(task[0]):026d}"


RUNNING, DONE, FAILED = JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED
CHAIN = [  # a >> b; each job's last lines appear in the same poll as its task's success
    Step(run="running", tasks={"a": "deferred"},
         jobs={"a": (RUNNING, "a-1\n", "")}),
    Step(run="running", tasks={"a": "success", "b": "queued"},
         jobs={"a": (DONE, "a-1\na-2 the last line\n", "a-warn\n")}),
    Step(run="running", tasks={"a": "success", "b": "deferred"},
         jobs={"a": (DONE, "a-1\na-2 the last line\n", "a-warn\n"),
               "b": (RUNNING, "b-1\n", "")}),
    Step(run="success", tasks={"a": "success", "b": "success"},
         jobs={"a": (DONE, "a-1\na-2 the last line\n", "a-warn\n"),
               "b": (DONE, "b-1\nb-2 no newline", "b-warn\n")}),
]


def console(*, result: bool = False, log_file: Path | None = None,
            run_id: str = "r") -> RunConsole:
    """The CLI's rendering of a follow of DAG ``d``."""
    return RunConsole(result=result, log_file=log_file, dag_id="d", run_id=run_id,
                      command="airflow follow")


async def follow_script(steps: list[Step], console: RunOutput) -> None:
    """Follow a scripted run of DAG ``d`` to its end, then report, as the CLI does."""
    world = ScriptedRun(steps)
    async with api(world.airflow, token="t", username=None, password=None,
                   api_version="v2") as af, AsyncClient(
            "http://bh", "tok", transport=httpx.MockTransport(world.bridgehead)) as bh:
        await af.connect()
        result = await RunFollower(af, bh, console, "d", "r", poll_s=0.01).follow()
    report(console, result)
    if isinstance(console, RunConsole):
        console.close()


async def test_one_ordered_stream_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    await follow_script(CHAIN, console())
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert [line for line in lines if line.startswith("-- ")] == [
        "-- [a] deferred", "-- [a] deferred -> success", "-- [b] queued",
        "-- [b] queued -> deferred", "-- [b] deferred -> success", "-- d run r: success"], lines
    assert sorted(line for line in lines if line.startswith("[")) == [
        "[a] (stderr) a-warn", "[a] a-1", "[a] a-2 the last line", "[b] (stderr) b-warn",
        "[b] b-1", "[b] b-2 no newline"], lines


async def test_a_jobs_lines_come_before_its_tasks_end() -> None:
    out = Recorder()
    await follow_script(CHAIN, out)
    stream = out.stream  # a job's stdout and stderr may interleave: only the states' order
    for task, started in (("a", "-- [a] None -> deferred"), ("b", "-- [b] queued -> deferred")):
        mine = [i for i, line in enumerate(stream) if line.startswith(f"[{task}] ")]
        assert len(mine) == 3, stream
        assert stream.index(started) < min(mine), stream
        assert max(mine) < stream.index(f"-- [{task}] deferred -> success"), stream
    assert stream.index("-- [a] deferred -> success") < stream.index("-- [b] None -> queued")


async def test_a_job_that_came_and_went_between_polls_comes_before_its_end() -> None:
    steps = [  # a's job id sorts before b's (several server replicas): below the cursor
        Step(run="running", tasks={"b": "deferred"}, jobs={"b": (RUNNING, "b-1\n", "")}),
        Step(run="running", tasks={"b": "deferred", "a": "success"},
             jobs={"b": (RUNNING, "b-1\n", ""), "a": (DONE, "a-1\n", "")}),
        Step(run="success", tasks={"b": "success", "a": "success"},
             jobs={"b": (DONE, "b-1\n", ""), "a": (DONE, "a-1\n", "")})]
    out = Recorder()
    await follow_script(steps, out)
    assert out.stream.index("[a] a-1") < out.stream.index("-- [a] None -> success"), out.stream


async def test_json_keeps_stdout_for_the_summary(capsys: pytest.CaptureFixture[str]) -> None:
    await follow_script(CHAIN, console(result=True))
    out, err = capsys.readouterr()
    assert out == ""
    assert "[a] (stderr) a-warn" in err.splitlines() and err.endswith("-- d run r: success\n")


async def test_failure_summary_marks_stderr_lines(capsys: pytest.CaptureFixture[str]) -> None:
    steps = [Step(run="running", tasks={"boom": "deferred"},
                  jobs={"boom": (RUNNING, "boom\n", "")}),
             Step(run="failed", tasks={"boom": "failed"},
                  jobs={"boom": (FAILED, "boom\n", "Traceback\nValueError: x\n")})]
    await follow_script(steps, console())
    lines = capsys.readouterr().out.splitlines()
    summary = lines[lines.index(f"-- [boom] failed: job {job_id('boom')} failed (exit 3)"):]
    assert summary[1:] == ["-- [boom]   boom", "-- [boom]   (stderr) Traceback",
                           "-- [boom]   (stderr) ValueError: x", "-- d run r: failed"], lines


async def test_log_file_starts_each_run_with_a_header(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "run.log"
    for run_id in ("r1", "r2"):
        await follow_script(CHAIN, console(result=True, log_file=log, run_id=run_id))
    console(result=True, log_file=log, run_id="r3").close()  # said nothing: no header
    runs = log.read_text().split("\n\n")
    assert len(runs) == 2, runs
    for run_id, text in zip(("r1", "r2"), runs, strict=True):
        header, *lines = text.splitlines()
        assert re.fullmatch(rf"=== d run {run_id} \(bridgehead airflow follow, "
                            r"\d{4}-\d\d-\d\dT[\d:]+\+00:00\) ===", header), header
        assert lines[0] == "-- [a] deferred" and lines[-1] == "-- d run r: success", lines
