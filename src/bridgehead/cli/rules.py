"""``bridgehead rules apply|list|delete``: event rules from YAML files, stored in the server.

``apply`` checks every file locally first (``file:line: field: message``, exit 2, nothing
sent), inlines each ``start_workflow.file``, then creates or replaces the rules by name in one
request (all or none). ``--prune`` also deletes the server's rules that no file names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from bridgehead.cli import output
from bridgehead.errors import InvalidSpec
from bridgehead.rules.spec import load_rules


def _client() -> Any:
    from bridgehead.client import Client

    return Client()


def _actions(rule: dict[str, Any]) -> str:
    return ", ".join(next(iter(a)) for a in rule.get("actions", []))


def _match(rule: dict[str, Any]) -> str:
    return json.dumps(rule.get("match", {}), separators=(",", ":"))[:80]


def _table(rules: list[dict[str, Any]], title: str) -> Table:
    t = Table(title=title)
    for column in ("name", "enabled", "match", "actions", "description"):
        t.add_column(column)
    for rule in rules:
        t.add_row(escape(rule["name"]), "yes" if rule.get("enabled", True) else "no",
                  escape(_match(rule)), _actions(rule), escape(rule.get("description", "")))
    return t


@click.group()
def rules() -> None:
    """Event rules: an event pattern -> actions (submit a job, start a workflow, a webhook)."""


@rules.command("apply")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--prune", is_flag=True, help="Delete the server's rules no file names.")
@click.option("--dry-run", is_flag=True, help="Check the files and show the rules; send none.")
@click.option("--json", "as_json", is_flag=True, help="Print the stored rules as JSON.")
def apply(files: tuple[Path, ...], prune: bool, dry_run: bool, as_json: bool) -> None:
    """Create or replace the rules in FILE... by name (all or none)."""
    loaded = [rule for path in files for rule in load_rules(path)]
    names = [r.name for r in loaded]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise InvalidSpec(f"rule {name!r} is defined twice in {', '.join(map(str, files))}")
    if dry_run:
        shown = [r.public_dict() for r in loaded]
        if as_json:
            print(json.dumps(shown))
        else:
            output.console.print(_table(shown, f"{len(shown)} rules (dry run: nothing sent)"))
        return
    with _client() as bh:
        stored = bh.put_rules([r.to_dict() for r in loaded])
        pruned = []
        if prune:
            for rule in bh.list_rules():
                if rule["name"] not in names:
                    bh.delete_rule(rule["name"])
                    pruned.append(rule["name"])
    if as_json:
        print(json.dumps({"applied": stored, "deleted": pruned}))
        return
    output.console.print(_table(stored, f"{len(stored)} rules applied"))
    for name in pruned:
        output.console.print(f"deleted rule [bold]{escape(name)}[/]")


@rules.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON list (secrets masked).")
def list_rules(as_json: bool) -> None:
    """The server's rules (webhook secrets shown as ***)."""
    with _client() as bh:
        found = bh.list_rules()
    if as_json:
        print(json.dumps(found))
    else:
        output.console.print(_table(found, f"{len(found)} rules"))


@rules.command("delete")
@click.argument("names", nargs=-1, required=True)
def delete(names: tuple[str, ...]) -> None:
    """Delete the rules NAME...."""
    with _client() as bh:
        for name in names:
            bh.delete_rule(name)
            output.console.print(f"deleted rule [bold]{escape(name)}[/]")
