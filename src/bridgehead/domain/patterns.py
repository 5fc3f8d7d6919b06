"""Event patterns: which events a rule acts on, in the style of cloud event-bus patterns.

A pattern is a mapping over the event's CloudEvent fields ``type``, ``source``, ``subject``,
``id`` and ``data``; every key must match (AND). A value is one of:

- a scalar: equal, with no type coercion (``5`` is not ``"5"``; ``true`` is not ``1``);
- a list: any of its elements (each a scalar or an operator mapping);
- an operator mapping: ``prefix``, ``suffix``, ``wildcard`` (``*`` and ``?``, whole string),
  ``numeric`` (``[">", 0, "<=", 10]``: one or two comparisons of ``> >= < <= =``),
  ``exists`` (true/false) or ``anything-but`` (a scalar or a list); several operators in one
  mapping must all hold, and ``exists`` stands alone;
- any other mapping (no key an operator's name): a nested pattern over the event's mapping
  at that key. So a data key named like an operator (``prefix``) cannot be matched by name.

A key the event lacks matches only ``exists: false`` (not ``anything-but``). When the event's
value is a list, a matcher holds if it holds for any element (a nested pattern: for any one
mapping element). A pattern is compiled once, when it is built; every mistake is an
:class:`InvalidPattern` naming its place (``data.size.numeric: ...``).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from bridgehead.domain.events import Event
from bridgehead.errors import InvalidAt, Loc

EVENT_FIELDS: Final = ("type", "source", "subject", "id", "data")
"""The event fields a pattern may name; all but ``data`` are strings."""
OPERATORS: Final = ("anything-but", "exists", "numeric", "prefix", "suffix", "wildcard")
MAX_DEPTH = 16
"""How deep a pattern may nest into the event's data."""
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "=": operator.eq}
_MISSING: Final = object()
"""The value of a key the event does not have."""


class InvalidPattern(InvalidAt):
    """The event pattern is not valid (at ``loc`` inside it: ``("data", "size", "numeric")``)."""


# -- matchers: each tests one value of the event (or _MISSING) ----------------------------
@dataclass(frozen=True, slots=True)
class _Test:
    """Predicates that must all hold for a present value, or for any element of a list."""

    checks: tuple[Callable[[Any], bool], ...]

    def test(self, value: Any) -> bool:
        if value is _MISSING:
            return False
        if isinstance(value, list):
            return any(self._all(element) for element in value)
        return self._all(value)

    def _all(self, value: Any) -> bool:
        return all(check(value) for check in self.checks)


@dataclass(frozen=True, slots=True)
class _Exists:
    present: bool

    def test(self, value: Any) -> bool:
        return (value is not _MISSING) == self.present


@dataclass(frozen=True, slots=True)
class _AnyOf:
    options: tuple[_Matcher, ...]

    def test(self, value: Any) -> bool:
        return any(option.test(value) for option in self.options)


@dataclass(frozen=True, slots=True)
class _Fields:
    """A nested pattern: every key's matcher holds for the mapping's value at that key."""

    fields: tuple[tuple[str, _Matcher], ...]

    def test(self, value: Any) -> bool:
        if value is _MISSING:
            return all(matcher.test(_MISSING) for _, matcher in self.fields)
        if isinstance(value, list):
            return any(self.test(element) for element in value if isinstance(element, dict))
        if not isinstance(value, dict):
            return False
        return all(matcher.test(value.get(key, _MISSING)) for key, matcher in self.fields)


_Matcher = _Test | _Exists | _AnyOf | _Fields


# -- scalars -------------------------------------------------------------------------------
def _kind(value: Any) -> str | None:
    """The JSON kind of a scalar (numbers are one kind), or None for anything else."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "string" if isinstance(value, str) else None


def _key(value: Any) -> tuple[str, Any] | None:
    kind = _kind(value)
    return None if kind is None else (kind, value)


def _is_number(value: Any) -> bool:
    return _kind(value) == "number" and not (isinstance(value, float) and math.isnan(value))


def _scalar(value: Any, loc: Loc) -> tuple[str, Any]:
    """The strict-equality key of a scalar of the pattern."""
    key = _key(value)
    if key is None:
        raise InvalidPattern("must be a string, number, boolean or null, not "
                             f"{type(value).__name__}", loc)
    return key


def _one_of(values: list[Any], loc: Loc) -> frozenset[tuple[str, Any]]:
    return frozenset(_scalar(value, (*loc, index)) for index, value in enumerate(values))


def _in(keys: frozenset[tuple[str, Any]]) -> Callable[[Any], bool]:
    return lambda value: _key(value) in keys


# -- operators -----------------------------------------------------------------------------
def _text(value: Any, loc: Loc) -> str:
    if not isinstance(value, str):
        raise InvalidPattern("must be a string", loc)
    return value


def _prefix(value: Any, loc: Loc) -> Callable[[Any], bool]:
    text = _text(value, loc)
    return lambda v: isinstance(v, str) and v.startswith(text)


def _suffix(value: Any, loc: Loc) -> Callable[[Any], bool]:
    text = _text(value, loc)
    return lambda v: isinstance(v, str) and v.endswith(text)


def _wildcard(value: Any, loc: Loc) -> Callable[[Any], bool]:
    """``*`` any run of characters, ``?`` one; the whole string. Each ``*`` but the last is
    an atomic lazy group (as :func:`fnmatch.translate` does): no catastrophic backtracking."""
    parts = [
        "".join("." if char == "?" else re.escape(char) for char in part)
        for part in _text(value, loc).split("*")
    ]
    regex = parts[0]
    if len(parts) > 1:
        regex += "".join(f"(?>.*?{part})" for part in parts[1:-1]) + ".*" + parts[-1]
    fullmatch = re.compile(regex, re.DOTALL).fullmatch
    return lambda v: isinstance(v, str) and fullmatch(v) is not None


def _numeric(value: Any, loc: Loc) -> Callable[[Any], bool]:
    if not isinstance(value, list) or len(value) not in (2, 4):
        raise InvalidPattern('must be one or two comparisons: [">", 0] or [">", 0, "<=", 10]',
                             loc)
    comparisons: list[tuple[Callable[[Any, Any], bool], float]] = []
    for index in range(0, len(value), 2):
        op, bound = value[index], value[index + 1]
        if not isinstance(op, str) or op not in _COMPARISONS:
            raise InvalidPattern(f"{op!r} is not a comparison: use one of "
                                 f"{', '.join(_COMPARISONS)}", (*loc, index))
        if not _is_number(bound):
            raise InvalidPattern(f"{bound!r} is not a number", (*loc, index + 1))
        comparisons.append((_COMPARISONS[op], bound))
    return lambda v: _is_number(v) and all(compare(v, bound) for compare, bound in comparisons)


def _anything_but(value: Any, loc: Loc) -> Callable[[Any], bool]:
    if isinstance(value, list):
        if not value:
            raise InvalidPattern("the list is empty", loc)
        keys = _one_of(value, loc)
    else:
        keys = frozenset({_scalar(value, loc)})
    return lambda v: (key := _key(v)) is not None and key not in keys


_BUILDERS: dict[str, Callable[[Any, Loc], Callable[[Any], bool]]] = {
    "prefix": _prefix, "suffix": _suffix, "wildcard": _wildcard, "numeric": _numeric,
    "anything-but": _anything_but}


def _operators(spec: Mapping[str, Any], loc: Loc) -> _Matcher:
    """An operator mapping: all its operators hold (``exists`` alone)."""
    for key in spec:
        if key not in OPERATORS:
            raise InvalidPattern(f"unknown operator {key!r} (known: {', '.join(OPERATORS)})",
                                 (*loc, key))
    if "exists" in spec:
        if len(spec) > 1:
            raise InvalidPattern("exists cannot be combined with other operators", loc)
        if not isinstance(spec["exists"], bool):
            raise InvalidPattern("must be true or false", (*loc, "exists"))
        return _Exists(spec["exists"])
    return _Test(tuple(_BUILDERS[key](value, (*loc, key)) for key, value in spec.items()))


# -- compiling -----------------------------------------------------------------------------
def _value(spec: Any, loc: Loc, *, nested: bool) -> _Matcher:
    """The matcher for one key's pattern value; ``nested``: a mapping may be a sub-pattern."""
    if isinstance(spec, list):
        if not spec:
            raise InvalidPattern("an empty list matches nothing", loc)
        if all(_kind(item) is not None for item in spec):
            return _Test((_in(_one_of(spec, loc)),))
        return _AnyOf(tuple(_element(item, (*loc, index)) for index, item in enumerate(spec)))
    if isinstance(spec, dict) and nested and spec and not any(key in OPERATORS for key in spec):
        return _fields(spec, loc)
    return _element(spec, loc)


def _element(spec: Any, loc: Loc) -> _Matcher:
    """A scalar or an operator mapping."""
    if isinstance(spec, dict):
        if not spec:
            raise InvalidPattern("an empty mapping matches nothing", loc)
        return _operators(spec, loc)
    return _Test((_in(frozenset({_scalar(spec, loc)})),))


def _fields(spec: Mapping[Any, Any], loc: Loc) -> _Fields:
    if len(loc) > MAX_DEPTH:
        raise InvalidPattern(f"nested deeper than {MAX_DEPTH} levels", loc)
    matchers = []
    for key, value in spec.items():
        if not isinstance(key, str):
            raise InvalidPattern(f"key {key!r} must be a string", loc)
        matchers.append((key, _value(value, (*loc, key), nested=True)))
    return _Fields(tuple(matchers))


def _compile(spec: Any) -> _Fields:
    if not isinstance(spec, dict):
        raise InvalidPattern("must be a mapping of event fields "
                             f"({', '.join(EVENT_FIELDS)})")
    if not spec:
        raise InvalidPattern("name at least one event field (to match every event: "
                             "type: {prefix: \"\"})")
    matchers = []
    for key, value in spec.items():
        if key not in EVENT_FIELDS:
            raise InvalidPattern(f"unknown event field {key!r} (match on: "
                                 f"{', '.join(EVENT_FIELDS)})", (key,))
        matchers.append((key, _value(value, (key,), nested=key == "data")))
    return _Fields(tuple(matchers))


@dataclass(frozen=True, slots=True, kw_only=True)
class Pattern:
    """A compiled event pattern. ``source`` is the pattern as given (JSON types); it is
    checked and compiled when the pattern is built."""

    source: dict[str, Any]
    _root: _Fields = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_root", _compile(self.source))

    def matches(self, event: Event) -> bool:
        """Whether ``event`` matches every field of the pattern."""
        fields = {"type": event.type, "source": event.source, "subject": event.subject,
                  "id": event.id, "data": event.data}
        return self._root.test(fields)
