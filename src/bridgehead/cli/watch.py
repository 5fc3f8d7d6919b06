"""``bridgehead watch``: report files landing in directories as ``file.created`` events.

Bad input (a missing directory, a bad duration) raises ``InvalidSpec``;
``bridgehead.cli.main.main`` turns it into exit 2 and one line.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from bridgehead.cli import interrupts, output
from bridgehead.domain.events import Event
from bridgehead.errors import InvalidSpec
from bridgehead.sources.watch import DirectoryWatcher, WatchSettings, run_watch

_SECONDS = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)?$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_seconds(text: str, what: str) -> float:
    """Seconds from ``0.5``, ``0.5s``, ``500ms``, ``2s``, ``1m``, ``1h``."""
    match = _SECONDS.match(text.strip())
    if not match:
        raise InvalidSpec(f"{what} {text!r}: use e.g. 500ms, 0.5s, 2s or 1m")
    return float(match[1]) * _UNIT[match[2] or "s"]


@click.command()
@click.argument("dirs", nargs=-1, required=True, metavar="DIR...",
                type=click.Path(path_type=Path))
@click.option("--glob", "globs", multiple=True, metavar="PATTERN",
              help="Only names matching this (fnmatch, case-sensitive), repeatable. [default: *]")
@click.option("--recursive", "-r", is_flag=True, help="Watch subdirectories too.")
@click.option("--debounce", default="2s", show_default=True, metavar="DURATION",
              help="A file is complete when its size and mtime stay unchanged this long.")
@click.option("--interval", default="0.5s", show_default=True, metavar="DURATION",
              help="Time between polls.")
@click.option("--allow-empty", is_flag=True, help="Report empty files too.")
@click.option("--from-now", is_flag=True,
              help="Mark the files already there as seen, without reporting them. Without "
                   "it, a first run reports every complete file already there.")
@click.option("--once", is_flag=True,
              help="Wait until every file present is complete, report, exit.")
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path),
              help="What was reported (JSON). [default: $BRIDGEHEAD_HOME/watch/<digest>.json]")
@click.option("--source", metavar="NAME",
              help="The events' source. A client token of one tenant posts only its own "
                   "name or NAME/...: give the watcher a token named bridgehead.watch/<host>, "
                   "or its token's name here.  [default: bridgehead.watch/<host>]")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per reported file.")
def watch(dirs: tuple[Path, ...], globs: tuple[str, ...], recursive: bool, debounce: str,
          interval: str, allow_empty: bool, from_now: bool, once: bool,
          state_path: Path | None, source: str | None, as_json: bool) -> None:
    """Post a file.created event for each file that lands in DIR... (rules act on them).

    Polls (no inotify: it misses writes by other hosts on NFS/Lustre). Files named .* or
    *.tmp, *.part, *.partial, *.crdownload, *~ are ignored: write there, then rename. A
    restarted watcher does not report a file again unless it changed. Needs a client or
    admin token (BRIDGEHEAD_TOKEN, or the one 'bridgehead up' saved)."""
    from bridgehead.logs import setup_logging

    for folder in dirs:
        if not folder.is_dir():
            raise InvalidSpec(f"{folder}: not a directory")
    settings = WatchSettings(
        roots=dirs, globs=globs or ("*",), recursive=recursive,
        interval_s=parse_seconds(interval, "--interval"),
        debounce_s=parse_seconds(debounce, "--debounce"),
        allow_empty=allow_empty, from_now=from_now, state_path=state_path)
    if source is not None and not source.strip():
        raise InvalidSpec("--source: give a name")
    watcher = DirectoryWatcher(settings, source=source)
    setup_logging("text", "WARNING")
    if not as_json:
        output.progress_console.print(
            f"watching {escape(', '.join(watcher.roots))} for {escape(' '.join(settings.globs))}"
            f"{' (recursive)' if recursive else ''}; state {escape(str(watcher.state_path))}",
            highlight=False, soft_wrap=True)
    asyncio.run(_watch(watcher, once=once, as_json=as_json))


async def _watch(watcher: DirectoryWatcher, *, once: bool, as_json: bool) -> None:
    from bridgehead.client import AsyncClient

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stopping() -> None:  # a poll in progress gets a moment to finish, no more
        interrupts.set_exit_code(0)
        interrupts.arm()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping)

    def show(event: Event, answer: dict[str, Any]) -> None:
        if as_json:
            line = {"type": event.type, "source": event.source, "id": event.id,
                    "subject": event.subject, "data": event.data, "seq": answer.get("seq")}
            click.echo(json.dumps(line))
        else:
            output.console.print(f"[green]{event.type}[/] {escape(event.subject)}  "
                                 f"{event.data['size']:,} bytes",
                                 highlight=False, soft_wrap=True)

    async with AsyncClient() as client:
        await run_watch(watcher, client, stop, once=once, on_report=show)
