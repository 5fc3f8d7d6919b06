"""``bridgehead events``: read the event log (every change, as CloudEvents) from the shell.

``tail`` reads it from a cursor with the server's long-poll (no busy polling): with
``--follow`` (the default) it then waits for new events until Ctrl-C, which ends it cleanly
(exit 0). ``--type`` filters here, with shell-style patterns (``bridgehead.job.*``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any

import click
from rich.markup import escape

from bridgehead.cli import interrupts, output
from bridgehead.cli.runs_view import COLOURS

PAGE = 500
"""Events asked for per request."""
WAIT_S = 30.0
"""The longest single long-poll for new events."""
DATA_WIDTH = 100
"""Characters of an event's data shown in a line (``--json`` shows all of it)."""


@click.group()
def events() -> None:
    """The event log: jobs, workflow runs and external events (CloudEvents)."""


@events.command("tail")
@click.option("--after", type=click.IntRange(0), default=0, show_default=True, metavar="SEQ",
              help="Start after this seq (0: the start of the log).")
@click.option("--type", "types", multiple=True, metavar="PATTERN",
              help="Only types matching this (fnmatch: bridgehead.job.*), repeatable.")
@click.option("--follow/--no-follow", default=True, show_default=True,
              help="Keep waiting for new events (Ctrl-C ends), or stop at the end of the log.")
@click.option("--limit", type=click.IntRange(1), default=None, metavar="N",
              help="Stop after printing this many events.")
@click.option("--json", "as_json", is_flag=True, help="One CloudEvent JSON per line.")
def tail(after: int, types: tuple[str, ...], follow: bool, limit: int | None,
         as_json: bool) -> None:
    """Print events from the log, oldest first: seq, time, type, subject and data."""
    show = _json_line if as_json else _human_line
    interrupts.set_exit_code(0)  # Ctrl-C is how a follower ends
    try:
        asyncio.run(_tail(after, types, follow, limit, show))
    except KeyboardInterrupt:
        return
    except BrokenPipeError:  # `| head`: the reader has gone, nothing left to do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


async def _tail(after: int, types: Sequence[str], follow: bool, limit: int | None,
                show: Callable[[Mapping[str, Any]], None]) -> None:
    from bridgehead.client import AsyncClient

    shown = 0
    async with AsyncClient() as bh:
        while True:
            page = await bh.events(after=after, limit=PAGE, wait=WAIT_S if follow else 0.0)
            for event in page["events"]:
                if types and not any(fnmatchcase(event["type"], t) for t in types):
                    continue
                show(event)
                shown += 1
                if limit is not None and shown >= limit:
                    return
            after = page["next"]
            if len(page["events"]) < PAGE and not follow:
                return


def _json_line(event: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _human_line(event: Mapping[str, Any]) -> None:
    data = event.get("data") or {}
    colour = COLOURS.get(str(data.get("state")), "")
    kind = f"[{colour}]{escape(event['type'])}[/]" if colour else escape(event["type"])
    output.console.print(f"{event['seq']:>7}  {_time(event['time'])}  {kind}  "
                         f"{escape(event['subject'])}  [dim]{escape(short_data(event))}[/]",
                         highlight=False, soft_wrap=True)


def _time(iso: str) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(datetime.fromisoformat(iso)
                                                           .timestamp()))


def short_data(event: Mapping[str, Any]) -> str:
    """``state=succeeded exit_code=0 name=x``: the data's fields, without the ids the
    subject names already, cut to ``DATA_WIDTH`` characters."""
    named = set((event.get("subject") or "").split("/"))
    parts = []
    for key, value in (event.get("data") or {}).items():
        if value is None or (isinstance(value, str) and value in named):
            continue
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        parts.append(f"{key}={text}")
    line = " ".join(parts)
    return line if len(line) <= DATA_WIDTH else line[:DATA_WIDTH - 1] + "…"
