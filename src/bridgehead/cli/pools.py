"""``bridgehead pools``: the elastic pools, their nodes by state, bounds and price, as a table
(or ``--json``), from ``GET /v1/pools``."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.table import Table

from bridgehead.cli.output import console

ORDER = ("requested", "launching", "booting", "idle", "busy", "cordoned", "terminating",
         "orphan")
"""The live states, in lifecycle order (the table's nodes column)."""


@click.command()
@click.option("--lift", metavar="POOL", default=None,
              help="End POOL's quarantine and backoff first (admin token).")
@click.option("--json", "as_json", is_flag=True)
def pools(lift: str | None, as_json: bool) -> None:
    """Elastic pools: nodes by state, min/max nodes and price per node-hour; a pool backing
    off after failed boots, short of capacity or quarantined says so."""
    from bridgehead.client import Client

    with Client() as bh:
        if lift is not None:
            bh.lift_pool(lift)
        answer = bh.pools()
    if as_json:
        print(json.dumps(answer))
        return
    if not answer:
        console.print("no elastic pools (configure [[server.pools]] in the server's config)")
        return
    table = Table("pool", "cluster", "provider", "nodes", "min/max", "price/h", "status")
    for p in answer:
        states = p["states"]
        nodes = ", ".join(f"{states[s]} {s}" for s in (*ORDER, *sorted(set(states) - set(ORDER)))
                          if states.get(s)) or "none"
        table.add_row(p["name"], p["cluster"], p["provider"], nodes,
                      f"{p['min_nodes']}/{p['max_nodes']}", f"{p['price_per_hour']:.2f}",
                      status(p))
    console.print(table)


def status(p: dict[str, Any]) -> str:
    """A pool's status cell from its ``GET /v1/pools`` entry: quarantined, backing off after
    failed boots, short of capacity (asking one node at a time), backing off, or ok."""
    if p["quarantined"]:
        return "[red]quarantined[/]"
    if p["failures_in_row"] and p["backoff_until"]:
        return f"[yellow]backing off ({p['failures_in_row']} failed)[/]"
    if p.get("shortage_since"):
        since = str(p["shortage_since"])[:16].replace("T", " ")
        return f"[yellow]capacity shortage since {since} UTC: one node at a time[/]"
    return "[yellow]backing off[/]" if p["backoff_until"] else "ok"
