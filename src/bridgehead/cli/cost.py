"""``bridgehead cost``: what jobs cost, by DAG, workflow, run, tenant, cluster or job, as a
table with a bar chart under it (or ``--json``), from ``GET /v1/costs``."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from typing import Any

import click
from rich.table import Table

from bridgehead.cli.output import console

_AGO = re.compile(r"([1-9][0-9]{0,5})([mhdw])")
_UNIT = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
BAR_WIDTH = 40


def when(text: str) -> float:
    """UNIX seconds from ``7d`` / ``12h`` / ``30m`` / ``2w`` ago, an ISO date or time (UTC
    unless it says), or UNIX seconds. click.BadParameter otherwise."""
    if m := _AGO.fullmatch(text):
        return time.time() - int(m[1]) * _UNIT[m[2]]
    if re.fullmatch(r"[0-9]{1,11}(\.[0-9]+)?", text):
        return float(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r}: use 7d, 12h, 30m, 2w, an ISO date "
                                 "(2026-12-01) or UNIX seconds") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


class When(click.ParamType):
    name = "time"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        return value if isinstance(value, float) else when(str(value))


@click.command()
@click.option("--by", type=click.Choice(["dag", "workflow", "run", "tenant", "cluster", "job",
                                         "total"]), default="dag", show_default=True,
              help="dag: an Airflow dag_id, else a native workflow's name.")
@click.option("--bucket", type=click.Choice(["day", "hour", "none"]), default="none",
              show_default=True)
@click.option("--since", type=When(), default="7d", show_default=True,
              help="7d, 12h, 30m, 2w ago, an ISO date or UNIX seconds.")
@click.option("--until", type=When(), default=None, help="Default: now.")
@click.option("--json", "as_json", is_flag=True)
def cost(by: str, bucket: str, since: float, until: float | None, as_json: bool) -> None:
    """What jobs cost, from each attempt's exact run time and its cluster's price
    ([server.prices]); waste is what lost, failed and timed-out attempts cost."""
    from bridgehead.client import Client

    params: dict[str, Any] = {"by": by, "bucket": bucket, "since": since}
    if until is not None:
        params["until"] = until
    with Client() as bh:
        answer = bh.costs(**params)
    if as_json:
        print(json.dumps(answer))
        return
    show(answer)


def show(answer: dict[str, Any]) -> None:
    rows = answer["rows"]
    title = (f"cost by {answer['by']}, {answer['since'][:16]} to {answer['until'][:16]} UTC")
    table = Table(title=title)
    columns = ["day" if answer["bucket"] == "day" else "hour"] if answer["bucket"] != "none" \
        else []
    for column in [*columns, answer["by"], "cost", "waste", "attempts", "core-hours"]:
        table.add_column(column, justify="right" if column in (
            "cost", "waste", "attempts", "core-hours") else "left")
    for r in rows:
        at = [r["bucket"][:10] if answer["bucket"] == "day" else r["bucket"][:16]] \
            if columns else []
        table.add_row(*at, r["group"], f"{r['cost']:.2f}", f"{r['waste']:.2f}",
                      str(r["attempts"]), f"{r['core_hours']:.1f}")
    console.print(table)
    totals: dict[str, float] = {}
    for r in rows:
        totals[r["group"]] = totals.get(r["group"], 0.0) + r["cost"]
    top = max(totals.values(), default=0.0)
    for group, value in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:15]:
        bar = "█" * (round(value / top * BAR_WIDTH) if top > 0 else 0)
        console.print(f"{group[:24]:>24} {bar} {value:.2f}", highlight=False)
    console.print(f"total {answer['total']:.2f}, of which waste {answer['waste']:.2f}")
    for p in answer.get("pools") or []:  # elastic pools: what their nodes cost, apart
        console.print(f"pool {p['pool']} ({p['cluster']}): nodes {p['node_cost']:.2f} over "
                      f"{p['node_hours']:.1f} node-hours, used by attempts "
                      f"{p['attempts']:.2f}, idle {p['idle']:.2f}", highlight=False)
    if answer["unpriced"]:
        console.print(f"[yellow]no price for {', '.join(answer['unpriced'])}: their attempts "
                      "count 0 (set [server.prices.<cluster>])[/]")
