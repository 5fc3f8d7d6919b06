"""A workflow file as a JSON document and back, for the web UI's form.

The form edits the file's data (what the YAML says, as JSON), not its text: YAML -> form
reads the text with the parser's own safe loader (:func:`~bridgehead.workflows.spec.read_yaml`:
no aliases, no duplicate keys, dates kept as text) and form -> YAML writes the data with
:func:`yaml_of`, which reads back to the same data. Comments and layout do not survive the
form (the YAML tab keeps them); what the file means does.

Data that JSON (and so a browser) cannot hold exactly is refused with the reason, so the form
never shows, and then writes, something else than the file says: keys that are not text,
non-finite floats, integers past 2**53, binary.
"""

from __future__ import annotations

import json
import math
from typing import Any

import yaml

from bridgehead.errors import InvalidSpec, format_loc
from bridgehead.workflows.spec import read_yaml

MAX_SAFE_INT = 2**53 - 1
"""Integers past this lose digits in a browser's numbers."""


def document_of(text: str, filename: str = "workflow.yaml") -> dict[str, Any]:
    """The file's top-level mapping as JSON-safe data; ``InvalidSpec`` with the reason the
    form cannot show it (a YAML error at its line, a top level that is not a mapping, or a
    value JSON cannot hold, named by its field)."""
    root, data = read_yaml(text, filename)
    if not isinstance(data, dict):
        raise InvalidSpec(f"{filename}:{root.start_mark.line + 1}: the top level must be a "
                          "mapping (name, steps, ...)")
    _check_json(data, ())
    return data


def _check_json(value: Any, loc: tuple[str | int, ...]) -> None:
    where = format_loc(loc) or "the file"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidSpec(f"{where}: the key {key!r} is not text: the form cannot "
                                  "show it (quote it, or edit the YAML)")
            _check_json(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, (*loc, index))
    elif isinstance(value, bool) or value is None or isinstance(value, str):
        return
    elif isinstance(value, int):
        if abs(value) > MAX_SAFE_INT:
            raise InvalidSpec(f"{where}: {value} is too large for the form (quote it)")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidSpec(f"{where}: {value} is not a number the form can show")
    else:
        raise InvalidSpec(f"{where}: a {type(value).__name__} value: the form cannot show it")


FLOW_WIDTH = 60
"""A list or mapping of scalars this short (as JSON) is written on one line."""


class _Dumper(yaml.SafeDumper):
    """Block style with indented lists; short lists and mappings of scalars on one line;
    text of several lines as a literal block (``|``) where YAML allows it."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _flow(values: list[Any]) -> bool:
    return all(not isinstance(v, dict | list) and not (isinstance(v, str) and "\n" in v)
               for v in values) and len(json.dumps(values)) <= FLOW_WIDTH


def _mapping(dumper: yaml.SafeDumper, value: dict[str, Any]) -> yaml.MappingNode:
    flow = _flow([*value, *value.values()])
    return dumper.represent_mapping("tag:yaml.org,2002:map", value, flow_style=flow)


def _sequence(dumper: yaml.SafeDumper, value: list[Any]) -> yaml.SequenceNode:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=_flow(value))


_Dumper.add_representer(str, _text)
_Dumper.add_representer(dict, _mapping)
_Dumper.add_representer(list, _sequence)


def yaml_of(document: dict[str, Any]) -> str:
    """The YAML text of ``document`` (key order kept); :func:`document_of` reads it back to
    the same data."""
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     width=100)
