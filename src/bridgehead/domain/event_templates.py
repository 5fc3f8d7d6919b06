"""Event templates: the ``{{ data.a.b }}`` placeholders of rule actions, filled from an event.

A placeholder is ``{{ data }}``, ``{{ data.a.b }}`` (a key, or a list index, at each step) or
``{{ event.id }}`` (``type``, ``source``, ``subject``, ``time``), optionally piped through
filters: ``{{ data.path | basename }}`` (``dirname``, ``stem``, ``suffix``: POSIX paths).
Strings are inserted as they are, other numbers with ``str``, anything else as JSON.

:func:`render` substitutes every placeholder in one regex pass and evaluates nothing: an
inserted value is never scanned again, so ``$(rm -rf /); ls`` or ``{{ event.id }}`` in the
event's data stay those characters. A path the event lacks is an ``InvalidSpec``
(``{{ data.path }}: the event has no data.path``).
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bridgehead.domain.events import Event
from bridgehead.errors import InvalidSpec

_TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_PATH = re.compile(r"data(?:\.[A-Za-z0-9_-]+)*|event\.(?:id|type|source|subject|time)")
FILTERS: dict[str, Callable[[str], str]] = {
    "basename": posixpath.basename,
    "dirname": posixpath.dirname,
    "stem": lambda path: posixpath.splitext(posixpath.basename(path))[0],
    "suffix": lambda path: posixpath.splitext(posixpath.basename(path))[1],
}
PLACEHOLDER = "/placeholder"
"""What every path renders to in :func:`trial_render` (an absolute path: fits working_dir)."""
_Resolve = Callable[[tuple[str, ...], str], Any]
"""Looks up a path (``("data", "path")``); the second argument is the placeholder's text."""


def _expression(match: re.Match[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The path and the filters of one ``{{ ... }}``."""
    path, *filters = (part.strip() for part in match[1].split("|"))
    if not _PATH.fullmatch(path):
        raise InvalidSpec(f"unsupported template {match[0][:80]!r}: use {{{{ data.NAME }}}} or "
                          "{{ event.id|type|source|subject|time }}")
    for name in filters:
        if name not in FILTERS:
            raise InvalidSpec(f"unknown filter {name[:40]!r} in {match[0][:80]!r} (known: "
                              f"{', '.join(FILTERS)})")
    return tuple(path.split(".")), tuple(filters)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value)


def _render(text: str, resolve: _Resolve) -> str:
    def substitute(match: re.Match[str]) -> str:
        path, filters = _expression(match)
        value = _as_text(resolve(path, match[0]))
        for name in filters:
            value = FILTERS[name](value)
        return value

    return _TEMPLATE.sub(substitute, text)


def _from(event: Event) -> _Resolve:
    def resolve(path: tuple[str, ...], template: str) -> Any:
        if path[0] == "event":
            if path[1] == "time":
                return datetime.fromtimestamp(event.time, UTC).isoformat()
            return getattr(event, path[1])
        value: Any = event.data
        for part in path[1:]:
            if isinstance(value, dict) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                raise InvalidSpec(f"{template}: the event has no {'.'.join(path)}")
        return value

    return resolve


def render(text: str, event: Event) -> str:
    """``text`` with each placeholder replaced from ``event``, in one pass."""
    return _render(text, _from(event))


def trial_render(text: str) -> str:
    """``text`` with each placeholder replaced by :data:`PLACEHOLDER`: checks the syntax
    (``InvalidSpec`` for an unknown path form or filter) and shows what a job would be."""
    return _render(text, lambda path, template: PLACEHOLDER)
