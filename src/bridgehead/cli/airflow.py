"""``bridgehead airflow run|follow``: trigger a DAG run and follow it as one stream.

The stream is on stdout (on stderr when stdout holds a result for scripts: the ``--json``
summary, or the ids printed by ``--no-follow`` and ``--detach``), in the run's order: a job's
lines read ``[task] text`` (``[task] (stderr) text``), and every line of the launcher's own
(task states, notes, the summary) starts with ``-- ``, so ``grep '^\\['`` keeps only the jobs'
lines. ``--log-file`` gets the same lines, appended under one header line per command
(``=== DAG run RUN_ID (bridgehead airflow run|follow, TIME) ===``).

Exit codes: 0 the run succeeded; 1 it failed (or ``--timeout`` ran out, or Airflow or
Bridgehead cannot be reached); 2 bad input (a bad ``--conf``, an unknown DAG, refused
credentials), with one line on stderr.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.text import Text

from bridgehead.config import AirflowSettings
from bridgehead.errors import ConfigError

if TYPE_CHECKING:  # the SDK and the launcher are imported when a command runs
    from bridgehead.airflow.launcher import LogLine, RunResult

_STATE_STYLE = {"success": "green", "failed": "red", "upstream_failed": "red",
                "running": "cyan", "deferred": "magenta", "up_for_retry": "yellow",
                "skipped": "dim"}
OWN = "-- "
"""Starts every line of the stream that is not a job's."""
_SETTINGS_HELP = """Airflow settings: flags, else BRIDGEHEAD_AIRFLOW__URL, __USERNAME, __PASSWORD,
__TOKEN, __API_VERSION (auto|v1|v2), __POLL_INTERVAL_S in the environment, else the [airflow]
table of $BRIDGEHEAD_HOME/config.toml. Bridgehead itself: BRIDGEHEAD_URL and BRIDGEHEAD_TOKEN,
or the client file of 'bridgehead up', as for the other commands."""


class RunConsole:
    """The follow's rendering: one stream, in order, on stdout (on stderr when ``result`` is,
    i.e. stdout holds the command's result, so that it stays parseable); rich colours the
    launcher's lines on a terminal. All of it goes to ``--log-file`` too, flushed line by line,
    after a header naming the run (written before the first line: a launch that fails before
    saying anything leaves none)."""

    def __init__(self, *, result: bool, log_file: Path | None, dag_id: str, run_id: str,
                 command: str) -> None:
        self.out: IO[str] = sys.stderr if result else sys.stdout
        self.rich = Console(file=self.out, highlight=False, soft_wrap=True)
        self.file: IO[str] | None = None
        now = datetime.now(UTC).isoformat(timespec="seconds")
        self._header: str | None = f"=== {dag_id} run {run_id} (bridgehead {command}, {now}) ==="
        if log_file is not None:
            try:
                log_file.parent.mkdir(parents=True, exist_ok=True)
                self.file = open(log_file, "a", encoding="utf-8")  # closed by close()
            except OSError as exc:
                raise ConfigError(f"cannot write --log-file {log_file}: {exc.strerror}") from exc

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    def _log(self, text: str) -> None:
        if self.file is None:
            return
        if self._header is not None:
            self.file.write(("\n" if self.file.tell() else "") + self._header + "\n")
            self._header = None
        self.file.write(text + "\n")
        self.file.flush()

    def _own(self, *parts: str | tuple[str, str]) -> None:
        """One of the launcher's lines (parts as for ``Text.assemble``)."""
        line = Text.assemble(OWN, *parts)
        self.rich.print(line)
        self.out.flush()
        self._log(line.plain)

    def job_line(self, prefix: str, text: str, *, stderr: bool) -> None:
        from bridgehead.airflow.launcher import LogLine

        line = f"{prefix} {LogLine(text, stderr).marked}"
        self.out.write(line + "\n")
        self.out.flush()
        self._log(line)

    def task_state(self, prefix: str, old: str | None, new: str, try_number: int) -> None:
        change = f"{old} -> {new}" if old else new
        retry = f" (try {try_number})" if try_number > 1 else ""
        self._own(prefix, " ", (change, _STATE_STYLE.get(new, "")), retry)

    def note(self, text: str) -> None:
        self._own((text, "dim"))

    def failed_task(self, prefix: str, jobs: str, last_lines: list[LogLine]) -> None:
        self._own((f"{prefix} failed", "bold red"), f": {jobs}")
        for line in last_lines:
            self._own(f"{prefix}   {line.marked}")

    def run_state(self, dag_id: str, run_id: str, state: str) -> None:
        style = "bold green" if state == "success" else "bold red"
        self._own(f"{dag_id} run {run_id}: ", (state, style))


def _airflow_options(fn: Any) -> Any:
    for option in reversed((
        click.option("--airflow-url", help="Airflow API server (default http://127.0.0.1:8080)."),
        click.option("--username", help="Airflow user."),
        click.option("--password", help="Airflow password; prefer BRIDGEHEAD_AIRFLOW__PASSWORD "
                                        "(a flag shows in the process list)."),
        click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path),
                     help="Also append the whole stream to this file, under a header "
                          "line naming the run."),
        click.option("--timeout", type=click.FloatRange(min=0), default=None,
                     help="Stop following after S seconds (exit 1; the run goes on)."),
        click.option("--json", "as_json", is_flag=True,
                     help="A JSON summary on stdout at the end (the stream goes to stderr)."),
    )):
        fn = option(fn)
    return fn


def _settings(airflow_url: str | None, username: str | None,
              password: str | None) -> AirflowSettings:
    settings: AirflowSettings = AirflowSettings.load(url=airflow_url, username=username,
                                                     password=password)
    return settings


@click.group("airflow")
def airflow() -> None:
    """Trigger Airflow DAG runs and follow them: task states and every Bridgehead job's log
    of the run in one stream."""


@airflow.command("run", epilog=_SETTINGS_HELP)
@click.argument("dag_id")
@click.option("--conf", "conf_pairs", multiple=True, metavar="KEY=VALUE",
              help="Run conf, repeatable; VALUE is JSON when it parses (4, true, {...}), "
                   "else a string.")
@click.option("--conf-json", help="The whole run conf as a JSON object (--conf on top).")
@click.option("--follow/--no-follow", default=True, show_default=True,
              help="Follow the run to its end, or only trigger it.")
@click.option("--detach", is_flag=True,
              help="Trigger, submit the follower as a Bridgehead job (it writes --log-file), "
                   "print both ids and exit at once. The follower reads the Bridgehead "
                   "token and Airflow password from the config files (BRIDGEHEAD_HOME) where "
                   "it runs: no secret is put in the job.")
@click.option("--cluster", default="local", show_default=True,
              help="Where the --detach follower runs.")
@_airflow_options
def run(dag_id: str, conf_pairs: tuple[str, ...], conf_json: str | None, follow: bool,
        detach: bool, cluster: str, airflow_url: str | None, username: str | None,
        password: str | None, log_file: Path | None, timeout: float | None,
        as_json: bool) -> None:
    """Trigger a run of DAG_ID (unpausing the DAG if needed) and follow it: exit 0 if it
    succeeded, 1 if it failed."""
    from bridgehead.airflow.launcher import new_run_id, parse_conf

    conf = parse_conf(conf_pairs, conf_json)
    settings = _settings(airflow_url, username, password)
    run_id = new_run_id()  # before anything is said: --log-file's header names it
    console = RunConsole(result=as_json or detach or not follow, dag_id=dag_id, run_id=run_id,
                         command="airflow run", log_file=None if detach else log_file)
    try:
        outcome = asyncio.run(_launch(settings, console, dag_id, run_id, conf, follow=follow,
                                      detach=detach, cluster=cluster, log_file=log_file,
                                      timeout=timeout))
        _finish(outcome, console, as_json)
    finally:
        console.close()


@airflow.command("follow", epilog=_SETTINGS_HELP)
@click.argument("dag_id")
@click.argument("run_id")
@_airflow_options
def follow_cmd(dag_id: str, run_id: str, airflow_url: str | None, username: str | None,
               password: str | None, log_file: Path | None, timeout: float | None,
               as_json: bool) -> None:
    """Follow an existing run of DAG_ID (what a --detach launch runs as a job)."""
    settings = _settings(airflow_url, username, password)
    console = RunConsole(result=as_json, log_file=log_file, dag_id=dag_id, run_id=run_id,
                         command="airflow follow")
    try:
        outcome = asyncio.run(_follow_only(settings, console, dag_id, run_id, timeout))
        _finish(outcome, console, as_json)
    finally:
        console.close()


async def _launch(settings: AirflowSettings, console: RunConsole, dag_id: str, run_id: str,
                  conf: dict[str, Any], *, follow: bool, detach: bool, cluster: str,
                  log_file: Path | None, timeout: float | None) -> RunResult | dict[str, Any]:
    from bridgehead.airflow.launcher import RunFollower, follower_spec, trigger_run
    from bridgehead.airflow.rest import AirflowApi
    from bridgehead.client import AsyncClient

    async with AirflowApi(settings) as api, AsyncClient() as bh:
        await api.connect()
        if follow or detach:
            await bh.list_jobs(limit=1)  # a bad Bridgehead token fails before the run exists
        await trigger_run(api, console, dag_id, conf, run_id)
        if detach:
            spec = follower_spec(dag_id, run_id, cluster=cluster, log_file=log_file,
                                 airflow=settings,
                                 bridgehead_url=",".join(bh.replicas.urls))  # all replicas
            job = await bh.submit(spec)
            console.note(f"follower job {job.id} on cluster {job.cluster}")
            return {"dag_id": dag_id, "run_id": run_id, "follower_job_id": job.id}
        if not follow:
            return {"dag_id": dag_id, "run_id": run_id}
        return await RunFollower(api, bh, console, dag_id, run_id,
                                 poll_s=settings.poll_interval_s, timeout_s=timeout).follow()


async def _follow_only(settings: AirflowSettings, console: RunConsole, dag_id: str,
                       run_id: str, timeout: float | None) -> RunResult:
    from bridgehead.airflow.launcher import RunFollower
    from bridgehead.airflow.rest import AirflowApi
    from bridgehead.client import AsyncClient

    async with AirflowApi(settings) as api, AsyncClient() as bh:
        await api.connect()
        return await RunFollower(api, bh, console, dag_id, run_id,
                                 poll_s=settings.poll_interval_s, timeout_s=timeout).follow()


def _finish(outcome: RunResult | dict[str, Any], console: RunConsole, as_json: bool) -> None:
    """Print the outcome; exit 1 unless the run succeeded (or was only triggered)."""
    if isinstance(outcome, dict):  # triggered (and maybe detached): ids only
        if as_json:
            click.echo(json.dumps(outcome))
        else:
            click.echo(" ".join(str(v) for k, v in outcome.items() if k != "dag_id"))
        return
    from bridgehead.airflow.launcher import report

    report(console, outcome)
    if as_json:
        click.echo(json.dumps(outcome.to_dict()))
    if not (outcome.finished and outcome.state == "success"):
        sys.exit(1)
