"""``bridgehead workflow schedule list|pause|resume``: the server's workflow schedules.

Schedules are the ``schedule:`` blocks of the workflow files the server keeps (``[server]
workflows_dir``); these commands read them and pause or resume one. An unknown workflow (or
another tenant's) exits 2 with one line, as every refused input does.
"""

from __future__ import annotations

import json
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from bridgehead.cli import output


def _client() -> Any:
    from bridgehead.client import Client

    return Client()


def _last(schedule: dict[str, Any]) -> str:
    recent = schedule.get("recent") or []
    if not recent:
        return "-"
    tick = recent[0]
    what = tick.get("run_id") or tick.get("reason") or ""
    return f"{tick['at']} {tick['state']} {what}".strip()


def _table(schedules: list[dict[str, Any]]) -> Table:
    t = Table(title=f"{len(schedules)} schedules")
    for column in ("workflow", "tenant", "when", "catchup", "max active", "state",
                   "next runs", "last tick"):
        t.add_column(column)
    for s in schedules:
        catchup = s["catchup"] + (f" (max {s['max_catchup']})" if s["catchup"] == "all" else "")
        t.add_row(escape(s["workflow"]), escape(s["tenant"]), escape(s["when"]), catchup,
                  str(s["max_active_runs"]), "paused" if s["paused"] else "active",
                  "\n".join(s["next_runs"][:3]) or "-", escape(_last(s)))
    return t


@click.group()
def schedule() -> None:
    """Workflow schedules (the schedule: blocks of the server's workflow files)."""


@schedule.command("list")
@click.option("--next", "next_runs", type=click.IntRange(0, 50), default=5, show_default=True,
              help="How many next run times to show per schedule.")
@click.option("--json", "as_json", is_flag=True, help="One JSON list.")
def list_schedules(next_runs: int, as_json: bool) -> None:
    """Each schedule: when it ticks, its catch-up policy, paused or not, its next runs."""
    with _client() as bh:
        found = bh.list_schedules(next_runs=next_runs)
    if as_json:
        print(json.dumps(found))
    else:
        output.console.print(_table(found))


def _set(workflow: str, paused: bool, as_json: bool) -> None:
    with _client() as bh:
        stored = bh.pause_schedule(workflow) if paused else bh.resume_schedule(workflow)
    if as_json:
        print(json.dumps(stored))
        return
    nxt = stored["next_runs"][0] if stored["next_runs"] else "-"
    state = "paused" if paused else f"resumed; next run {nxt}"
    output.console.print(f"schedule of [bold]{escape(workflow)}[/] {state}")


@schedule.command("pause")
@click.argument("workflow")
@click.option("--json", "as_json", is_flag=True)
def pause(workflow: str, as_json: bool) -> None:
    """Pause WORKFLOW's schedule: no tick falls until it is resumed."""
    _set(workflow, True, as_json)


@schedule.command("resume")
@click.argument("workflow")
@click.option("--json", "as_json", is_flag=True)
def resume(workflow: str, as_json: bool) -> None:
    """Resume WORKFLOW's schedule from now (ticks that fell while paused are not run)."""
    _set(workflow, False, as_json)
