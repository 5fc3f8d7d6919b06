"""The ``bridgehead`` command: thin commands over the SDK and the services.

Bad input exits 2 with one line on stderr; an unreachable server exits 1; ``wait`` and
``submit --wait`` exit 1 when a job did not succeed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from bridgehead.backends.base import STREAMS
from bridgehead.cli import interrupts, output
from bridgehead.cli.spark_options import spark_app, spark_options
from bridgehead.cli.workdir import default_workdir, relative_paths_note
from bridgehead.config import (
    AgentSettings,
    ServerSettings,
    client_file,
    set_client_flags,
    warn_unknown_variables,
)
from bridgehead.domain.jobs import Job, JobSpec, JobState, Resources
from bridgehead.domain.units import parse_memory, parse_walltime
from bridgehead.errors import (
    AuthError,
    BridgeheadError,
    ConfigError,
    InvalidSpec,
    NotFound,
)


def parse_pairs(items: Sequence[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidSpec(f"{what} {item!r} is not KEY=VALUE")
        out[key] = value
    return out


def _client() -> Any:
    from bridgehead.client import Client

    return Client()


def log_options(command: Any) -> Any:
    """``--log-format`` and ``--log-level`` (else BRIDGEHEAD_LOG_FORMAT/_LEVEL, config.toml)."""
    command = click.option("--log-level", default=None,
                           type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"],
                                             case_sensitive=False),
                           help="INFO: state changes; DEBUG: every request too.")(command)
    return click.option("--log-format", default=None, type=click.Choice(["text", "json"]),
                        help="json: one object per line (default text).")(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bridgehead")
@click.option("--server", "server_url", default=None, metavar="URL[,URL...]",
              help="The server (or replicas, tried in turn) for client commands "
                   "(or BRIDGEHEAD_URL).")
@click.option("--ca-bundle", type=click.Path(path_type=Path), default=None,
              help="PEM CA certificates that sign the server's TLS certificate "
                   "(or BRIDGEHEAD_CA_BUNDLE).")
def cli(server_url: str | None, ca_bundle: Path | None) -> None:
    """Bridgehead: run jobs on your clusters from Airflow, scripts and events."""
    warn_unknown_variables()
    sub = click.get_current_context().invoked_subcommand
    if (server_url or ca_bundle) and sub in SERVICES:
        hint = " (give them after 'agent')" if sub == "agent" else ""
        raise click.UsageError(f"--server and --ca-bundle before the command are for client "
                               f"commands, not '{sub}'{hint}")
    set_client_flags(url=server_url, ca_bundle=ca_bundle)


SERVICES = ("up", "server", "agent", "slurm-event")
"""Commands that are no client of a server (``agent`` takes its own ``--server``)."""


# -- services ------------------------------------------------------------------------------
@cli.command()
@click.option("--port", type=int, default=None, help="Port (default 8765).")
@click.option("--slots", type=int, default=None, help="Core slots of the local cluster.")
def up(port: int | None, slots: int | None) -> None:
    """Embedded Bridgehead: server on SQLite + a local agent, in one process."""
    from bridgehead.cli.services import run_up
    from bridgehead.logs import setup_logging

    settings = ServerSettings.load(host="127.0.0.1", port=port)
    settings.pool_list()  # a bad [[server.pools]] table stops it here, naming the field
    setup_logging(settings.log_format, "WARNING")

    def ready(url: str) -> None:
        output.console.print(f"[bold green]Bridgehead is up[/] at {url}  "
                             f"(store {settings.store}; cluster 'local'); Ctrl-C stops it")
        output.console.print(f"Client config written; in another shell try: "
                             f"{_me()} submit --wait -- echo hello", highlight=False)
        output.console.print(f"Web UI: {url}/ui (log in with the admin token: 'token' "
                             f"under \\[client] in {client_file()})", highlight=False)

    asyncio.run(run_up(settings, {"slots": slots, "poll_interval_s": 0.25}, ready))


def _me() -> str:
    """How to call this command again from another shell: ``bridgehead`` when that is on
    PATH and is this one, else its full path."""
    import shutil

    here = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    found = shutil.which("bridgehead")
    if here is not None and here.name == "bridgehead":
        return "bridgehead" if found and Path(found).resolve() == here else str(here)
    return "bridgehead" if found else f"{sys.executable} -m bridgehead"


@cli.command()
@click.option("--store", default=None, help="sqlite:///path.db or postgresql://...")
@click.option("--host", default=None)
@click.option("--port", type=int, default=None)
@click.option("--access-log/--no-access-log", default=False,
              help="A line per request at INFO (without it, at DEBUG only).")
@click.option("--tls-cert", type=click.Path(path_type=Path), default=None,
              help="PEM certificate (chain) to serve HTTPS with (or BRIDGEHEAD_TLS_CERT).")
@click.option("--tls-key", type=click.Path(path_type=Path), default=None,
              help="Its PEM private key (or BRIDGEHEAD_TLS_KEY).")
@log_options
def server(store: str | None, host: str | None, port: int | None, access_log: bool,
           tls_cert: Path | None, tls_key: Path | None,
           log_format: str | None, log_level: str | None) -> None:
    """Run the Bridgehead API server."""
    from bridgehead.cli.services import run_server
    from bridgehead.logs import loud_requests, setup_logging

    settings = ServerSettings.load(store=store, host=host, port=port, log_format=log_format,
                                   log_level=log_level, tls_cert=tls_cert, tls_key=tls_key)
    settings.dsn  # noqa: B018 - validate the DSN before starting
    settings.pool_list()  # a bad [[server.pools]] table stops it here, naming the field
    setup_logging(settings.log_format, settings.log_level)
    if access_log:
        loud_requests(("uvicorn.access",))
    run_server(settings, access_log=access_log or settings.log_level.upper() == "DEBUG")


@cli.command()
@click.option("--cluster", default=None, help="The cluster this agent serves.")
@click.option("--server", "server_url", default=None, metavar="URL[,URL...]",
              help="Bridgehead server URL (replicas: comma separated, tried in turn).")
@click.option("--token", default=None,
              help="Agent token (or BRIDGEHEAD_TOKEN): visible to other processes; prefer "
                   "--token-file.")
@click.option("--token-file", type=click.Path(path_type=Path), default=None,
              help="A file holding the agent token, mode 600 (or BRIDGEHEAD_TOKEN_FILE).")
@click.option("--state-dir", type=click.Path(path_type=Path), default=None)
@click.option("--slots", type=int, default=None, help="Core slots (local backend).")
@click.option("--poll-interval", type=float, default=None, help="Seconds between polls.")
@click.option("--backend", type=click.Choice(["local", "slurm_cli", "slurm_rest",
                                             "spark_standalone", "emr", "livy"]),
              default=None, help="The cluster's scheduler (default: local).")
@click.option("--wake-dir", type=click.Path(path_type=Path), default=None,
              help="Bind the wake socket here, where 'bridgehead slurm-event' looks.")
@click.option("--label", "labels", multiple=True, help="KEY=VALUE, repeatable: for routing.")
@click.option("--ca-bundle", type=click.Path(path_type=Path), default=None,
              help="PEM CA certificates that sign the server's TLS certificate "
                   "(or BRIDGEHEAD_CA_BUNDLE).")
@log_options
def agent(cluster: str | None, server_url: str | None, token: str | None,
          token_file: Path | None, state_dir: Path | None, slots: int | None,
          poll_interval: float | None, backend: str | None, wake_dir: Path | None,
          labels: tuple[str, ...], ca_bundle: Path | None, log_format: str | None,
          log_level: str | None) -> None:
    """Run an agent on a cluster's head node (outbound HTTP only). Slurm settings come from
    [agent.slurm] in config.toml or BRIDGEHEAD_SLURM__* (e.g. BRIDGEHEAD_SLURM__CONF), Spark's
    from [agent.spark] or BRIDGEHEAD_SPARK__* (e.g. BRIDGEHEAD_SPARK__REST_URL)."""
    from bridgehead.cli.services import run_agent
    from bridgehead.config import scrub_secrets
    from bridgehead.logs import setup_logging

    if token and token_file:
        raise ConfigError("give --token or --token-file, not both")
    settings = AgentSettings.load(cluster=cluster, server=server_url, token=token,
                                  token_file=token_file, state_dir=state_dir, slots=slots,
                                  poll_interval_s=poll_interval, backend=backend,
                                  wake_dir=wake_dir, log_format=log_format,
                                  log_level=log_level, ca_bundle=ca_bundle,
                                  labels=parse_pairs(labels, "--label") if labels else None)
    scrub_secrets()  # nothing the agent starts inherits them
    if token:  # the flag wins over a token_file of the environment or config.toml
        settings = settings.model_copy(update={"token_file": None})
    if settings.token and settings.token_file is None:
        click.echo("bridgehead: warning: an agent token given by --token or BRIDGEHEAD_TOKEN "
                   "is visible to every process of this user (argv in ps, the environment in "
                   "/proc); put it in a file of mode 600 and use --token-file", err=True)
    settings = settings.with_token()
    if not settings.token:
        raise ConfigError("an agent needs a token: --token-file or BRIDGEHEAD_TOKEN_FILE")
    setup_logging(settings.log_format, settings.log_level)
    run_agent(settings)


@cli.command("slurm-event", context_settings={"ignore_unknown_options": True,
                                              "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def slurm_event(args: tuple[str, ...]) -> None:
    """Slurm PrologSlurmctld/EpilogSlurmctld hook: wake this cluster's agents to poll now.
    Options: --wake-dir DIR (every *.sock in it), --wake SOCKET; --server URL[,URL...]
    --token-file FILE [--cluster NAME] [--spool-dir DIR] [--timeout S] [--ca-bundle FILE] to
    post the job's start/end to the server, which wakes the cluster's agents wherever they
    run. Always exits 0."""
    from bridgehead.backends.slurm_event import main as hook

    sys.exit(hook(list(args)))


# -- jobs ----------------------------------------------------------------------------------
@cli.command(context_settings={"ignore_unknown_options": False})
@click.argument("command", nargs=-1)
@click.option("--script", "script_file", type=click.Path(exists=True, dir_okay=False,
                                                          path_type=Path),
              help="A script file (its #! line runs it) instead of a command.")
@click.option("--cluster", default=None, help="The cluster (default: local, unless routed).")
@click.option("--cluster-label", "cluster_labels", multiple=True,
              help="KEY=VALUE, repeatable: route to a cluster whose agents have these labels.")
@click.option("--name")
@click.option("--cores", type=int, help="Total cores (default: the script's #SBATCH "
              "directives, else 1). Given, it wins over a directive, as on sbatch's command "
              "line.")
@click.option("--nodes", type=int, help="Nodes (default: the script's directives, else 1).")
@click.option("--memory", help="e.g. 512M, 4G")
@click.option("--gpus", type=int, help="GPUs (default: the script's directives, else 0).")
@click.option("--walltime", help="e.g. 90, 30m, 2h, HH:MM:SS")
@click.option("--partition")
@click.option("--account")
@click.option("--max-cores", type=int, help="Cap on cores, whatever else asks for more.")
@click.option("--max-nodes", type=int, help="Cap on nodes.")
@click.option("--env", "env", multiple=True, help="KEY=VALUE, repeatable")
@click.option("--label", "labels", multiple=True, help="KEY=VALUE, repeatable")
@click.option("--workdir", help="Absolute working directory on the cluster (default: this "
              "directory when the cluster's jobs see this host's files, as with sbatch; "
              "else a directory of the job's own).")
@click.option("--option", "options", multiple=True,
              help="Scheduler option passed through (--name=value), repeatable.")
@click.option("--array", help="A job array, as sbatch --array (0-99, 1,3,5-7, 0-99:2, "
              "%N for at most N at once): one job per element, under this one.")
@click.option("--tenant", default="default")
@click.option("--key", "idempotency_key", help="Idempotency key: the same key, the same job.")
@click.option("--wait", "wait_", is_flag=True, help="Wait for the end; exit 1 unless it succeeded.")
@click.option("--follow", "-f", is_flag=True,
              help="Stream the job's stdout and stderr until it ends.")
@click.option("--json", "as_json", is_flag=True)
@spark_options
def submit(command: tuple[str, ...], script_file: Path | None, cluster: str | None,
           cluster_labels: tuple[str, ...], name: str | None,
           cores: int | None, nodes: int | None, memory: str | None, gpus: int | None,
           walltime: str | None,
           partition: str | None, account: str | None, max_cores: int | None,
           max_nodes: int | None, env: tuple[str, ...],
           labels: tuple[str, ...], workdir: str | None, options: tuple[str, ...],
           array: str | None, tenant: str,
           idempotency_key: str | None, wait_: bool, follow: bool, as_json: bool,
           **spark: Any) -> None:
    """Submit a job: ``bridgehead submit -- CMD ARGS...`` or ``--script FILE [-- ARGS...]``
    (the script's arguments, as in ``sbatch FILE ARGS...``), or a Spark application:
    ``--spark-app app.py [--conf spark.x=y --executors N ...] [-- ARGS...]``. A script's
    #SBATCH directives give what these options leave out; what they give wins, even a value
    equal to the default (``--cores 1``), as on sbatch's command line."""
    app = spark_app(command, spark)
    if app is not None:
        _refuse_beside_spark(script_file=script_file, cores=cores is not None,
                             nodes=nodes is not None,
                             memory=memory, array=array)
        command = ()
    elif not (command or script_file):
        raise InvalidSpec("give a command after -- or --script FILE (or --spark-app)")
    script = script_file.read_text() if script_file else None
    routed = parse_pairs(cluster_labels, "--cluster-label")
    spec = JobSpec(
        cluster=cluster or ("" if routed else "local"), cluster_labels=routed,
        command=() if script_file else command, args=command if script_file else (),
        name=name, tenant=tenant, script=script,
        env=parse_pairs(env, "--env"), labels=parse_pairs(labels, "--label"),
        working_dir=workdir, scheduler_options=options, idempotency_key=idempotency_key,
        array=array, spark=app,
        resources=Resources(cores=1 if cores is None else cores,
                            nodes=1 if nodes is None else nodes,
                            gpus=0 if gpus is None else gpus, partition=partition,
                            account=account, max_cores=max_cores, max_nodes=max_nodes,
                            memory_mb=parse_memory(memory) if memory else None,
                            walltime_s=parse_walltime(walltime) if walltime else None),
    )
    with _client() as bh:
        if workdir is None and spec.cluster and app is None and not _chdir_directive(script):
            spec = replace(spec, working_dir=default_workdir(bh.clusters(), spec.cluster))
        job = bh.submit(spec, explicit=[option for option, value in (
            ("cores", cores), ("nodes", nodes), ("gpus", gpus)) if value is not None])
        if follow:
            _show_logs(job.id, STREAMS, follow=True)
        if wait_ or follow:
            job = bh.wait(job.id, until="terminal")
    output.show_job(job, as_json=as_json, brief=not (wait_ or follow))
    if wait_ or follow:
        _note_relative_paths(job)
    if (wait_ or follow) and job.state is not JobState.SUCCEEDED:
        sys.exit(1)


def _refuse_beside_spark(**given: object) -> None:
    """InvalidSpec naming the first option that has no meaning beside ``--spark-app``."""
    for option, value in given.items():
        if value:
            flag = f"--{option.replace('_file', '')}"
            why = ("its cores and memory are derived from --driver-*/--executor-* and "
                   "--executors" if option in ("cores", "nodes", "memory")
                   else "a Spark application is its own job body")
            raise InvalidSpec(f"{flag} is not for --spark-app: {why}")


def _chdir_directive(script: str | None) -> bool:
    """Whether the script names its working dir (#SBATCH -D): then it is the default."""
    from bridgehead.domain import sbatch

    return bool(script) and any(d.option == "chdir" for d in sbatch.directives(script or ""))


def _show_logs(job_id: str, streams: Sequence[str], *, follow: bool) -> None:
    from bridgehead.cli import logs_view
    from bridgehead.client import AsyncClient

    async def go() -> None:
        async with AsyncClient() as bh:
            await logs_view.show(bh, job_id, streams, follow=follow)

    asyncio.run(go())


def _note_relative_paths(job: Job) -> None:
    if note := relative_paths_note(job):
        click.echo(f"bridgehead: note: {note}", err=True)


@cli.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
def status(job_id: str, as_json: bool) -> None:
    """Show one job."""
    with _client() as bh:
        job = bh.get(job_id)
    output.show_job(job, as_json=as_json)
    if not as_json:
        _note_relative_paths(job)


@cli.command("list")
@click.option("--cluster")
@click.option("--state", "states", multiple=True, type=click.Choice([s.value for s in JobState]))
@click.option("--label", "labels", multiple=True, help="KEY=VALUE, repeatable")
@click.option("--tenant")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--after", help="Cursor: the last id of the previous page.")
@click.option("--parent", help="Only the elements of this array job.")
@click.option("--json", "as_json", is_flag=True)
def list_(cluster: str | None, states: tuple[str, ...], labels: tuple[str, ...],
          tenant: str | None, limit: int, after: str | None, parent: str | None,
          as_json: bool) -> None:
    """List jobs, oldest first (an array job's elements right after it)."""
    with _client() as bh:
        jobs, nxt = bh.list_jobs(cluster=cluster, states=states, tenant=tenant, limit=limit,
                            labels=parse_pairs(labels, "--label"), after=after,
                            parent=parent)
    output.show_jobs(jobs, nxt, as_json=as_json)


@cli.command()
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="Keep streaming until the job ends.")
@click.option("--stdout", "only_stdout", is_flag=True, help="Only stdout, as raw bytes.")
@click.option("--stderr", "only_stderr", is_flag=True, help="Only stderr, as raw bytes.")
def logs(job_id: str, follow: bool, only_stdout: bool, only_stderr: bool) -> None:
    """Print a job's log: stdout and stderr (its lines marked [stderr]), or one of them."""
    from bridgehead.cli.logs_view import pick_streams

    _show_logs(job_id, pick_streams(only_stdout, only_stderr), follow=follow)


@cli.command()
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--timeout", type=float, default=None, help="Seconds (default: no limit).")
@click.option("--json", "as_json", is_flag=True)
def wait(job_ids: tuple[str, ...], timeout: float | None, as_json: bool) -> None:
    """Wait for jobs to end; exit 1 unless all succeeded."""
    from bridgehead.client import AsyncClient

    async def wait_all() -> list[Any]:
        async with AsyncClient() as bh:
            return await output.wait_with_progress(bh, list(job_ids), timeout)

    jobs = asyncio.run(wait_all())
    output.show_jobs(jobs, None, as_json=as_json)
    if not all(j.state is JobState.SUCCEEDED for j in jobs):
        sys.exit(1)


CANCEL_WAIT_S = 3.0
"""How long ``cancel`` waits to show a running job's new state."""


@cli.command()
@click.argument("job_ids", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True)
def cancel(job_ids: tuple[str, ...], as_json: bool) -> None:
    """Cancel jobs (queued: at once; running: through their agent). Shows each job's state
    once the cancel has landed, or after a few seconds as it is then."""
    from bridgehead.client import AsyncClient

    async def cancel_all() -> list[tuple[Job, Job]]:
        async with AsyncClient() as bh:
            asked = [await bh.cancel(i) for i in job_ids]
            now = await asyncio.gather(*(
                bh.wait(j.id, until="terminal", timeout=CANCEL_WAIT_S) if not j.terminal
                else _same(j) for j in asked))
            return list(zip(asked, now, strict=True))

    pairs = asyncio.run(cancel_all())
    if not as_json:
        for before, after in pairs:
            output.console.print(_cancel_line(before, after), highlight=False)
    output.show_jobs([after for _, after in pairs], None, as_json=as_json)


async def _same(job: Job) -> Job:
    return job


def _cancel_line(before: Job, after: Job) -> str:
    """``j-1: cancel requested (was running) -> cancelled``, or why nothing changed."""
    if before.terminal and not before.cancel_requested:
        return f"{before.id}: already {before.state.value}, nothing to cancel"
    if after.terminal:
        return f"{before.id}: cancel requested -> {after.state.value}"
    return (f"{before.id}: cancel requested (still {after.state.value}; its agent is "
            f"stopping it: bridgehead status {before.id})")


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def clusters(as_json: bool) -> None:
    """Clusters with their agents' state, queue depth and running jobs."""
    with _client() as bh:
        output.show_clusters(bh.clusters(), as_json=as_json)


@cli.command()
@click.option("--bins", type=click.IntRange(1, 64), default=None,
              help="Fan-out of the indexing step (default: the workflow's, 6).")
@click.option("--cluster", default=None,
              help="Run it on this cluster (default: the workflow's, local).")
@click.option("--json", "as_json", is_flag=True,
              help="No live output: print the run's JSON when it ends.")
def demo(bins: int | None, cluster: str | None, as_json: bool) -> None:
    """Run the crystallography demo workflow live: a row per step, each task's log, then a
    summary. Exit 0 if the run succeeded, 1 if not."""
    from bridgehead.cli.demo import run_demo

    sys.exit(run_demo(bins, cluster, as_json=as_json))


# -- tokens --------------------------------------------------------------------------------
@cli.group()
def token() -> None:
    """Create, list and revoke API tokens."""


@token.command("create")
@click.option("--name", required=True)
@click.option("--role", type=click.Choice(["admin", "client", "agent"]), required=True)
@click.option("--cluster", help="The cluster of an agent token.")
@click.option("--tenant", help="Limit a client token to one tenant.")
@click.option("--store", help="Write straight into this store (bootstrap the first admin).")
@click.option("--json", "as_json", is_flag=True)
def token_create(name: str, role: str, cluster: str | None, tenant: str | None,
                 store: str | None, as_json: bool) -> None:
    """Create a token; its secret is printed once."""
    if role == "agent" and not cluster:
        raise InvalidSpec("an agent token needs --cluster")
    if store:
        from bridgehead.cli.tokens import create_in_store

        out = asyncio.run(create_in_store(store, name, role, cluster, tenant))
    else:
        with _client() as bh:
            out = bh.create_token(name=name, role=role, cluster=cluster, tenant=tenant)
    if as_json:
        click.echo(json.dumps(out))
    else:
        click.echo(out["token"])


@token.command("list")
@click.option("--json", "as_json", is_flag=True)
def token_list(as_json: bool) -> None:
    with _client() as bh:
        output.show_tokens(bh.list_tokens(), as_json=as_json)


@token.command("revoke")
@click.argument("token_id")
def token_revoke(token_id: str) -> None:
    with _client() as bh:
        bh.revoke_token(token_id)


from bridgehead.cli.workflow import workflow  # noqa: E402 - a command group

cli.add_command(workflow)

from bridgehead.cli.schedules import schedule  # noqa: E402 - a command group

workflow.add_command(schedule)

from bridgehead.cli.airflow import airflow as airflow_group  # noqa: E402 - a command group

cli.add_command(airflow_group)

from bridgehead.cli.watch import watch  # noqa: E402 - a command

cli.add_command(watch)

from bridgehead.cli.events import events as events_group  # noqa: E402 - a command group

cli.add_command(events_group)

from bridgehead.cli.rules import rules as rules_group  # noqa: E402 - a command group

cli.add_command(rules_group)

from bridgehead.cli.cost import cost  # noqa: E402 - a command

cli.add_command(cost)

from bridgehead.cli.pools import pools  # noqa: E402 - a command

cli.add_command(pools)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: one clear line and exit 2 for bad input, exit 1 for other failures."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="bridgehead",
                 standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(interrupts.exit_code())
    except click.UsageError as exc:
        _fail(exc.format_message(), 2)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except (InvalidSpec, ConfigError, NotFound, AuthError) as exc:
        _fail(exc.message, 2)
    except BridgeheadError as exc:
        _fail(exc.message, 1)


def _fail(message: str, code: int) -> None:
    click.echo(f"bridgehead: error: {message.splitlines()[0] if message else 'failed'}",
               err=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
