"""A pool's provider-specific ``options``, checked by the provider that reads them.

Each provider declares its options (name -> :class:`Option`); :func:`read_options` refuses an
unknown name, a value of the wrong type or out of range, with :class:`InvalidPool` at
``("options", name)``, and fills in defaults. A site's provider declares its own the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from bridgehead.domain.pools import InvalidPool, Pool

Value = str | int | float | bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Option:
    """One option: its type (``str``, ``int``, ``float`` or ``bool``; an int is a float too),
    its default, and for numbers the bounds it must keep (inclusive)."""

    kind: type[str] | type[int] | type[float] | type[bool]
    default: Value
    low: float | None = None
    high: float | None = None

    def check(self, value: object) -> Value:
        """``value`` if it is of this option's type and within bounds, else InvalidPool."""
        if self.kind is bool:
            if not isinstance(value, bool):
                raise InvalidPool("must be true or false")
            return value
        if self.kind is str:
            if not isinstance(value, str):
                raise InvalidPool("must be a string")
            return value
        number = int if self.kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, number) or not math.isfinite(value):
            raise InvalidPool("must be an integer" if self.kind is int else "must be a number")
        if self.low is not None and value < self.low:
            raise InvalidPool(f"must be >= {self.low:g}")
        if self.high is not None and value > self.high:
            raise InvalidPool(f"must be <= {self.high:g}")
        return value


def read_options(pool: Pool, spec: Mapping[str, Option]) -> dict[str, Value]:
    """Every option of ``spec``: the pool's value, checked, or the default."""
    given: Mapping[str, object] = pool.options
    for name in given:
        if name not in spec:
            known = ", ".join(sorted(spec)) or "none"
            raise InvalidPool(f"unknown option {name!r} for provider {pool.provider} "
                              f"(known: {known})", ("options", name))
    return {name: InvalidPool.located(("options", name), option.check,
                                      given.get(name, option.default))
            for name, option in spec.items()}
