"""Rules files: YAML in, :class:`~bridgehead.domain.rules.Rule`\\ s out.

The file is ``rules:`` and a list of rules in the API's shape (:func:`rule_from_dict`), with
one addition: a ``start_workflow`` may give ``file: relative/path.yaml`` instead of ``spec``;
the file (relative to the rules file's folder) is read, checked and inlined as ``spec`` and
``filename``. Every workflow spec is parsed when the rules are loaded and its params checked
against the rule's. Errors are one line naming the file, the line and the field::

    rules.yaml:14: rules[1].match.data.size.numeric: '>>' is not a comparison: ...

The YAML machinery (safe loader, no aliases, no duplicate keys, 1 MiB cap, loc -> line) is
the workflow files' (:mod:`bridgehead.workflows.spec`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from yaml.nodes import Node

from bridgehead.domain.rules import (
    ACTION_KINDS,
    InvalidRule,
    Rule,
    StartWorkflow,
    rule_from_dict,
)
from bridgehead.errors import InvalidSpec, Loc, format_loc
from bridgehead.workflows.spec import (
    line_of,
    parse_workflow,
    read_spec_file,
    read_yaml,
)

logger = logging.getLogger(__name__)


# -- workflows -----------------------------------------------------------------------------
def check_workflows(rule: Rule) -> None:
    """Parse each ``start_workflow`` spec of ``rule`` and check its params are declared by
    the workflow; ``InvalidRule`` at ``actions[i].start_workflow.spec`` (or ``.params.x``)."""
    for index, action in enumerate(rule.actions):
        if not isinstance(action, StartWorkflow):
            continue
        loc: Loc = ("actions", index, "start_workflow")
        try:
            workflow = parse_workflow(action.spec, action.filename)
        except InvalidSpec as exc:
            raise InvalidRule(exc.message, (*loc, "spec")) from exc
        for name in action.params:
            if name not in workflow.params:
                raise InvalidRule(f"workflow {workflow.name!r} has no param {name!r} (it has: "
                                  f"{', '.join(workflow.params) or 'none'})",
                                  (*loc, "params", name))


def validate_rule(data: Any) -> Rule:
    """The rule in ``data`` (the API's JSON), its workflow specs parsed and checked too."""
    rule = rule_from_dict(data)
    check_workflows(rule)
    return rule


def _inline_files(rule: Any, base_dir: Path) -> Any:
    """``rule`` with each ``start_workflow.file`` read and inlined as ``spec``/``filename``."""
    actions = rule.get("actions") if isinstance(rule, dict) else None
    if not isinstance(actions, list):
        return rule
    inlined = []
    for index, action in enumerate(actions):
        body = action.get("start_workflow") if isinstance(action, dict) else None
        if isinstance(body, dict) and "file" in body:
            loc: Loc = ("actions", index, "start_workflow")
            if "spec" in body:
                raise InvalidRule("give spec or file, not both", (*loc, "file"))
            body = {k: v for k, v in body.items() if k != "file"} | _workflow_file(
                body["file"], base_dir, (*loc, "file"))
            action = {**action, "start_workflow": body}
        inlined.append(action)
    return {**rule, "actions": inlined}


def _workflow_file(name: Any, base_dir: Path, loc: Loc) -> dict[str, str]:
    if not isinstance(name, str) or not name.strip():
        raise InvalidRule("must be a path relative to the rules file", loc)
    try:
        text = read_spec_file(base_dir / name)
        parse_workflow(text, name)
    except InvalidSpec as exc:
        raise InvalidRule(exc.message, loc) from exc
    return {"spec": text, "filename": name}


# -- files ---------------------------------------------------------------------------------
def _rules(data: Any, base_dir: Path) -> list[Rule]:
    if not isinstance(data, dict):
        raise InvalidRule("the top level must be a mapping: rules: [...]")
    for key in data:
        if key != "rules":
            raise InvalidRule(f"unknown field {key!r} (known: rules)", (key,))
    items = data.get("rules")
    if not isinstance(items, list):
        raise InvalidRule("must be a list of rules", ("rules",))
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        try:
            rule = validate_rule(_inline_files(item, base_dir))
        except InvalidRule as exc:
            raise exc.within("rules", index) from exc
        if rule.name in seen:
            raise InvalidRule(f"duplicate rule name {rule.name!r} (also rules[{seen[rule.name]}])",
                              ("rules", index, "name"))
        seen[rule.name] = index
        rules.append(rule)
    return rules


def _located(filename: str, root: Node, loc: Loc, detail: str) -> str:
    """``file:line: field: detail``, the line of the deepest node of ``loc`` in the file."""
    line, _ = line_of(root, loc)
    return f"{filename}:{line}: {format_loc(loc)}: {detail}" if loc else \
        f"{filename}:{line}: {detail}"


def parse_rules(text: str, filename: str = "<string>",
                base_dir: str | Path | None = None) -> list[Rule]:
    """The rules in YAML ``text``; ``start_workflow.file`` paths are relative to
    ``base_dir`` (default: ``filename``'s folder). ``InvalidSpec("file:line: field: ...")``."""
    root, data = read_yaml(text, filename)
    folder = Path(base_dir) if base_dir is not None else Path(filename).parent
    try:
        return _rules(data, folder)
    except InvalidRule as exc:
        raise InvalidSpec(_located(filename, root, exc.loc, exc.detail)) from exc


def load_rules(path: str | Path) -> list[Rule]:
    """The rules in the YAML file at ``path`` (at most 1 MiB of UTF-8)."""
    path = Path(path)
    rules = parse_rules(read_spec_file(path), str(path), path.parent)
    logger.debug("%d rules loaded from %s", len(rules), path)
    return rules


# -- JSON Schema ---------------------------------------------------------------------------
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_WORDS = {"type": "array", "items": {"type": ["string", "number"]}}
_NUMBER_OR_TEXT = {"type": ["number", "string"]}
_ACTIONS: dict[str, Any] = {
    "submit_job": {"type": "object", "additionalProperties": False, "properties": {
        "cluster": {"type": "string"}, "cluster_labels": _STRINGS, "command": _WORDS,
        "script": {"type": "string"}, "name": {"type": "string"},
        "env": {"type": "object", "additionalProperties": {"type": ["string", "number"]}},
        "working_dir": {"type": "string"}, "scheduler_options": _WORDS, "labels": _STRINGS,
        "tenant": {"type": "string"}, "resources": {"type": "object", "properties": {
            "cores": {"type": "integer"}, "nodes": {"type": "integer"},
            "memory": _NUMBER_OR_TEXT, "gpus": {"type": "integer"}, "walltime": _NUMBER_OR_TEXT,
            "partition": {"type": "string"}, "account": {"type": "string"},
            "max_cores": {"type": "integer"}, "max_nodes": {"type": "integer"}},
            "additionalProperties": False}}},
    "start_workflow": {"type": "object", "additionalProperties": False, "properties": {
        "spec": {"type": "string"}, "file": {"type": "string"}, "filename": {"type": "string"},
        "params": {"type": "object", "additionalProperties": {"type": ["string", "number"]}}}},
    "webhook": {"type": "object", "additionalProperties": False, "required": ["url"],
                "properties": {
                    "url": {"type": "string", "pattern": "^https?://"},
                    "secret": {"type": ["string", "null"]}, "headers": _STRINGS,
                    "retries": {"type": "integer", "minimum": 0, "maximum": 20},
                    "backoff": _NUMBER_OR_TEXT, "max_backoff": _NUMBER_OR_TEXT,
                    "timeout": _NUMBER_OR_TEXT}},
}


def rules_json_schema() -> dict[str, Any]:
    """A JSON Schema of a rules file (draft 2020-12), for editors; the loader checks more."""
    rule = {"type": "object", "additionalProperties": False,
            "required": ["name", "match", "actions"], "properties": {
                "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"},
                "description": {"type": "string"}, "enabled": {"type": "boolean"},
                "match": {"type": "object", "minProperties": 1, "additionalProperties": False,
                          "properties": {k: {} for k in ("type", "source", "subject", "id")}
                          | {"data": {"type": "object"}}},
                "actions": {"type": "array", "minItems": 1, "maxItems": 16, "items": {
                    "type": "object", "minProperties": 1, "maxProperties": 1,
                    "additionalProperties": False,
                    "properties": {kind: _ACTIONS[kind] for kind in ACTION_KINDS}}}}}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Bridgehead rules", "type": "object", "additionalProperties": False,
            "required": ["rules"], "properties": {"rules": {"type": "array", "items": rule}}}
