"""``bridgehead workflow``: check workflow files, run them and follow, inspect and steer runs.

A bad file raises ``InvalidSpec``; ``bridgehead.cli.main.main`` turns it into exit 2 and
one line (``bridgehead: error: file.yaml:14: steps[1].needs[0]: unknown step 'x'``).
``run`` and ``retry --follow`` exit 0 when the run succeeded and 1 when it failed, was
cancelled, or was still running when ``--timeout`` ended the following.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml
from rich.table import Table

from bridgehead.cli import output, runs_view
from bridgehead.domain.jobs import JobSpec, Resources
from bridgehead.domain.runs import RunState
from bridgehead.domain.spark import sized as spark_sized
from bridgehead.domain.workflows import InvalidWorkflow, StepSpec, WorkflowSpec
from bridgehead.errors import InvalidSpec

T = TypeVar("T")


@click.group()
def workflow() -> None:
    """Workflow files (YAML): validate and run them; follow, list, cancel and retry runs."""


@workflow.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True,
              help="Print each parsed workflow as one line of JSON.")
def validate(files: tuple[Path, ...], as_json: bool) -> None:
    """Check workflow files: exit 0 and show their steps, or print every error of every
    file, one a line (``file:line: steps[2].needs[0]: ...``), and exit 2."""
    from bridgehead.workflows import load_workflow
    from bridgehead.workflows.spec import read_spec_file, validate_workflow

    # The same checks as POST /v1/workflows/validate (and the editor): all errors at once, so
    # a file is fixed in one pass rather than one error per run.
    problems = [p.message(str(path)) for path in files
                for p in validate_workflow(read_spec_file(path), str(path))]
    for message in problems:
        click.echo(f"bridgehead: error: {message}", err=True)
    if problems:
        sys.exit(2)
    specs = [load_workflow(path) for path in files]
    for spec in specs:
        if as_json:
            click.echo(json.dumps(spec.to_dict()))
        else:
            output.console.print(steps_table(spec))


@workflow.command("schema")
def schema() -> None:
    """Print the JSON Schema of workflow files (for editors)."""
    from bridgehead.workflows import workflow_json_schema

    click.echo(json.dumps(workflow_json_schema(), indent=2))


# -- runs ------------------------------------------------------------------------------------
@workflow.command("run")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A param of the workflow, its value read as YAML (8, 1.5, [1, 2], text); "
                   "repeatable.")
@click.option("--params-file", type=click.Path(path_type=Path),
              help="Params from a JSON or YAML mapping (-p wins).")
@click.option("--detach", is_flag=True, help="Print the run's id and return at once.")
@click.option("--timeout", type=click.FloatRange(0, min_open=True), metavar="S",
              help="Stop following after S seconds (exit 1; the run goes on).")
@click.option("--idempotency-key", "key", help="The same key, the same run (not a new one).")
@click.option("--json", "as_json", is_flag=True,
              help="No live output: print the run's JSON when it ends (with --detach: at once).")
@click.option("--no-logs", is_flag=True, help="Do not print each task's log as its job ends.")
def run(file: Path, params: tuple[str, ...], params_file: Path | None, detach: bool,
        timeout: float | None, key: str | None, as_json: bool, no_logs: bool) -> None:
    """Run a workflow file and follow it live: a row per step, each task's log as its job
    ends, then a summary. Exit 0 if the run succeeded, 1 if not, 2 for bad input."""
    from bridgehead.workflows import load_workflow

    spec = load_workflow(file)
    values = read_params_file(params_file) if params_file else {}
    values.update(parse_params(params))
    checked_params(spec, values, str(file))
    how = Follow(detach=detach, timeout=timeout, as_json=as_json, logs=not no_logs)
    sys.exit(launch(file.read_text(), file.name, values, key=key, how=how))


@workflow.command("status")
@click.argument("run_id", metavar="RUN")
@click.option("--tasks", "show_tasks", is_flag=True, help="A row per task, not per step.")
@click.option("--json", "as_json", is_flag=True)
def status(run_id: str, show_tasks: bool, as_json: bool) -> None:
    """Show a run: its steps (or tasks) with their states."""
    detail = call(lambda bh: bh.get_run(run_id))
    if as_json:
        click.echo(json.dumps(detail))
    else:
        runs_view.show_run(detail, tasks=show_tasks)


@workflow.command("list")
@click.option("--state", type=click.Choice([s.value for s in RunState]))
@click.option("--workflow", "name", help="Only runs of this workflow.")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--after", help="Cursor: the 'next' of the previous page.")
@click.option("--json", "as_json", is_flag=True)
def list_(state: str | None, name: str | None, limit: int, after: str | None,
          as_json: bool) -> None:
    """List runs, newest first."""
    page = call(lambda bh: bh.list_runs(state=state, workflow=name, limit=limit, after=after))
    if as_json:
        click.echo(json.dumps(page))
        return
    output.console.print(runs_view.runs_table(page["runs"]))
    if page["next"]:
        output.console.print(f"more: --after {page['next']}")


@workflow.command("cancel")
@click.argument("run_id", metavar="RUN")
@click.option("--json", "as_json", is_flag=True)
def cancel(run_id: str, as_json: bool) -> None:
    """Cancel a run: its live jobs are cancelled and nothing else starts."""
    out = call(lambda bh: bh.cancel_run(run_id))
    if as_json:
        click.echo(json.dumps(out))
    else:
        output.console.print(runs_view.run_line(out))


@workflow.command("retry")
@click.argument("run_id", metavar="RUN")
@click.option("--from-failed/--all", "from_failed", default=True, show_default=True,
              help="Run only the failed, skipped and cancelled tasks again, in this run; or "
                   "all of it, as a new run.")
@click.option("--follow", "follow_", is_flag=True, help="Follow the run like 'workflow run'.")
@click.option("--no-logs", is_flag=True, help="With --follow: do not print the tasks' logs.")
@click.option("--json", "as_json", is_flag=True)
def retry(run_id: str, from_failed: bool, follow_: bool, no_logs: bool, as_json: bool) -> None:
    """Retry a failed or cancelled run; with --follow, exit 0 only if it then succeeds."""

    async def both(bh: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        before = await bh.get_run(run_id)
        return before, await bh.retry_run(run_id, from_failed=from_failed)

    before, out = call(both)
    if as_json and not follow_:
        click.echo(json.dumps(out))
    elif not as_json:
        what = "retrying" if from_failed else f"new run of {run_id}"
        output.console.print(f"{what}: {runs_view.run_line(out)}")
    if follow_:
        seen = runs_view.tries_of(before) if from_failed else None
        sys.exit(follow(out["id"], Follow(as_json=as_json, logs=not no_logs), seen))


# -- starting and following runs (shared with `bridgehead demo`) ----------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Follow:
    """How to follow a run: not at all (``detach``), quietly (``as_json``), with logs."""

    detach: bool = False
    timeout: float | None = None
    as_json: bool = False
    logs: bool = True


def call(fn: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``fn(client)`` with a fresh ``AsyncClient`` (one async core; sync at the edge)."""
    from bridgehead.client import AsyncClient

    async def go() -> T:
        async with AsyncClient() as bh:
            return await fn(bh)

    return asyncio.run(go())


def launch(text: str, filename: str, params: Mapping[str, Any], *, key: str | None,
           how: Follow) -> int:
    """Start a run of the workflow ``text`` and follow it: the exit code (0: succeeded)."""
    started = call(lambda bh: bh.start_run(text, filename=filename, params=dict(params),
                                           idempotency_key=key))
    if how.detach:
        click.echo(json.dumps(started) if how.as_json else started["id"])
        return 0
    if not how.as_json:
        tasks = sum(started["counts"].values())
        output.console.print(f"run [bold]{started['id']}[/] started: "
                             f"{started['workflow']}, {tasks} tasks")
    return follow(started["id"], how)


def follow(run_id: str, how: Follow, seen: Mapping[tuple[str, int], int] | None = None) -> int:
    """Follow the run to its end, then show it (summary table or JSON): the exit code."""
    with runs_view.interrupted_note(run_id):
        final = call(lambda bh: runs_view.follow_run(
            bh, run_id, live=not how.as_json, logs=how.logs, timeout=how.timeout, seen=seen))
    if how.as_json:
        click.echo(json.dumps(final))
    else:
        runs_view.show_run(final)
    if final["state"] == "running":
        click.echo(f"bridgehead: run {run_id} is still running after {how.timeout:g}s: "
                   f"bridgehead workflow status {run_id}", err=True)
    return 0 if final["state"] == "succeeded" else 1


# -- params ----------------------------------------------------------------------------------
class _ValueLoader(yaml.SafeLoader):
    """YAML values as in workflow files: dates stay strings."""

    yaml_implicit_resolvers = {
        first: [(tag, regex) for tag, regex in resolvers if not tag.endswith(":timestamp")]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


def param_value(name: str, text: str) -> Any:
    """``8`` -> 8, ``[1, 2]`` -> [1, 2], ``true`` -> True; other text stays text."""
    structured = text.lstrip()[:1] in ("[", "{")
    try:
        value = yaml.load(text, Loader=_ValueLoader) if text.strip() else text
    except yaml.YAMLError as exc:
        if structured:
            raise InvalidSpec(f"param {name!r}: {text!r} is not a YAML list or mapping") from exc
        return text
    return text if isinstance(value, dict) and not structured else value


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise InvalidSpec(f"param {item!r} is not NAME=VALUE")
        out[name.strip()] = param_value(name.strip(), text)
    return out


def read_params_file(path: Path) -> dict[str, Any]:
    """A mapping of param values from a JSON or YAML file."""
    try:
        data = yaml.load(path.read_text(), Loader=_ValueLoader)
    except OSError as exc:
        raise InvalidSpec(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except yaml.MarkedYAMLError as exc:
        line = (exc.problem_mark.line + 1) if exc.problem_mark else 1
        raise InvalidSpec(f"{path}:{line}: invalid YAML: {exc.problem}") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidSpec(f"{path}: invalid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise InvalidSpec(f"{path}: params must be a mapping of name: value")
    return data


def checked_params(spec: WorkflowSpec, params: Mapping[str, Any], where: str) -> None:
    """What the server checks before it starts a run, here first: declared names, and every
    step's jobs buildable with these values (templates, ``foreach`` params)."""
    resolved = spec.resolve_params(params)
    for step in spec.steps:
        try:
            spec.job_specs(step.id, resolved)
        except InvalidSpec as exc:
            detail = exc.detail if isinstance(exc, InvalidWorkflow) else exc.message
            raise InvalidSpec(f"{where}: step {step.id!r}: {detail}") from exc


def steps_table(spec: WorkflowSpec) -> Table:
    """The workflow's steps in the order they can run."""
    table = Table(title=f"[bold]{spec.name}[/]: {len(spec.steps)} steps"
                  + (f" - {spec.description}" if spec.description else ""),
                  title_justify="left")
    for column in ("id", "needs", "foreach", "cluster", "resources"):
        table.add_column(column)
    for step_id in spec.topological_order():
        step = spec.step(step_id)
        table.add_row(step.id, ", ".join(step.needs) or "-", _foreach(step), _where(step),
                      _step_resources(step))
    return table


def _foreach(step: StepSpec) -> str:
    each = step.foreach
    if each is None:
        return "-"
    if each.param is not None:
        return f"params.{each.param}"
    if each.range_ is not None:
        return "range({}, {}, {})".format(*each.range_)
    values = each.values or ()
    shown = ", ".join(str(v) for v in values[:5])
    return f"[{shown}{', ...' if len(values) > 5 else ''}] ({len(values)})"


def _where(step: StepSpec) -> str:
    if step.cluster:
        return step.cluster
    return " ".join(f"{key}={value}" for key, value in step.cluster_labels.items())


def _step_resources(step: StepSpec) -> str:
    """The step's resources; a Spark step's as its app makes them (its shape shown)."""
    app = step.spark
    if app is None:
        return _resources(step.resources)
    sized = spark_sized(JobSpec(cluster="x", spark=app, resources=step.resources), ())
    return (f"spark: {app.driver_cores} driver + {sized.spark.executors if sized.spark else 0}"
            f" x {app.executor_cores} = {_resources(sized.resources)}")


def _resources(res: Resources) -> str:
    parts = [_count(res.cores, "core", res.max_cores)]
    if res.nodes > 1 or res.max_nodes:
        parts.append(_count(res.nodes, "node", res.max_nodes))
    if res.memory_mb:
        memory = res.memory_mb
        parts.append(f"{memory // 1024}G" if memory % 1024 == 0 else f"{memory}M")
    if res.gpus:
        parts.append(_count(res.gpus, "GPU", None))
    if res.walltime_s:
        parts.append(_duration(res.walltime_s))
    parts.extend(value for value in (res.partition, res.account) if value)
    return ", ".join(parts)


def _count(n: int, what: str, cap: int | None) -> str:
    return f"{n} {what}{'s' if n != 1 else ''}" + (f" (max {cap})" if cap else "")


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
