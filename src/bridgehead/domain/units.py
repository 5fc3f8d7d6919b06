"""Units people write: durations (``90``, ``30m``, ``2h``, ``HH:MM:SS``) and sizes (``4G``).

Shared by the CLI's flags, workflow files, rule templates and the Airflow operator, so
``--walltime 2h``, ``walltime: 2h`` and ``job_resources={"walltime": "2h"}`` mean the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from bridgehead.errors import InvalidSpec

_DURATION = re.compile(r"^(\d+)([smhd])$")
_MEMORY = re.compile(r"^(\d+)([KMGT]?)B?$", re.IGNORECASE)


def parse_walltime(text: str) -> int:
    """Seconds from ``90``, ``30m``, ``2h``, ``1d``, ``MM:SS``, ``HH:MM:SS`` or ``D-HH:MM:SS``."""
    if m := _DURATION.match(text):
        return int(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]
    parts = text.replace("-", ":").split(":")
    if not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 4:
        raise InvalidSpec(f"walltime {text!r}: use 90, 30m, 2h, HH:MM:SS or D-HH:MM:SS")
    seconds = 0
    for unit, value in zip((86400, 3600, 60, 1)[-len(parts):], parts, strict=True):
        seconds += unit * int(value)
    return seconds


def parse_memory(text: str) -> int:
    """Megabytes from ``512``, ``512M``, ``4G``, ``1T``."""
    m = _MEMORY.match(text)
    if not m:
        raise InvalidSpec(f"memory {text!r}: use e.g. 512M or 4G")
    factor = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[m[2].upper()]
    return max(1, int(int(m[1]) * factor))


RESOURCE_UNITS: dict[str, tuple[str, Callable[[str], int]]] = {
    "memory": ("memory_mb", parse_memory), "walltime": ("walltime_s", parse_walltime)}
"""Resources people write with units (``memory: 4G``, ``walltime: 2h``): the ``Resources``
field each fills and its parser. Every other resource keeps its name."""


def resource_field(name: str, value: Any) -> tuple[str, Any]:
    """``("memory", "4G")`` -> ``("memory_mb", 4096)``: the ``Resources`` field and value of a
    resource as people write it; a number, or another field, as it is."""
    field, parse = RESOURCE_UNITS.get(name, (name, None))
    return field, parse(value) if parse is not None and isinstance(value, str) else value
