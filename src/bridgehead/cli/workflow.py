"""``bridgehead workflow``: check workflow files and print their JSON Schema.

A bad file raises ``InvalidSpec``; ``bridgehead.cli.main.main`` turns it into exit 2 and
one line (``bridgehead: error: file.yaml:14: steps[1].needs[0]: unknown step 'x'``).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from bridgehead.cli import output
from bridgehead.domain.jobs import Resources
from bridgehead.domain.workflows import StepSpec, WorkflowSpec


@click.group()
def workflow() -> None:
    """Workflow files (YAML): validate them, print their JSON Schema."""


@workflow.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True,
              help="Print each parsed workflow as one line of JSON.")
def validate(files: tuple[Path, ...], as_json: bool) -> None:
    """Check workflow files: exit 0 and show their steps, or exit 2 at the first error."""
    from bridgehead.workflows import load_workflow

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
                      _resources(step.resources))
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
