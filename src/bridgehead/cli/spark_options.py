"""``bridgehead submit --spark-app``: the ``spark-submit`` options, made a
:class:`bridgehead.domain.spark.SparkApp`.

Relative paths (the application, ``--py-files``, ``--jars``, ``--files``) are made absolute
against the caller's directory, as ``spark-submit`` reads them; a URI (``s3:``, ``hdfs:``,
``local:``...) is taken as it is. Sizes use the units people write (``--executor-memory
2G``). The job's cores and memory are derived from these sizes by the server, so
``--cores``, ``--nodes`` and ``--memory`` are refused beside ``--spark-app``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from bridgehead.domain.spark import SparkApp
from bridgehead.domain.units import parse_memory
from bridgehead.errors import InvalidSpec

F = TypeVar("F", bound=Callable[..., Any])
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")

_OPTIONS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--spark-app", "spark_app"), {"help": "A Spark application (.py or .jar, a path or "
                                            "URI) instead of a command; the words after -- "
                                            "are its arguments."}),
    (("--main-class", "spark_main_class"), {"help": "The main class of a .jar app."}),
    (("--conf", "spark_conf"), {"multiple": True, "help": "spark.NAME=VALUE, repeatable."}),
    (("--executors", "spark_executors"), {"type": int, "help": "Number of executors."}),
    (("--executor-cores", "spark_executor_cores"), {"type": int}),
    (("--executor-memory", "spark_executor_memory"), {"help": "e.g. 2G"}),
    (("--driver-cores", "spark_driver_cores"), {"type": int}),
    (("--driver-memory", "spark_driver_memory"), {"help": "e.g. 1G"}),
    (("--py-files", "spark_py_files"), {"help": "Comma-separated .py/.zip/.egg files."}),
    (("--jars", "spark_jars"), {"help": "Comma-separated jars."}),
    (("--files", "spark_files"), {"help": "Comma-separated files for the executors."}),
]


def spark_options(func: F) -> F:
    """Add the ``--spark-app`` options (keyword arguments ``spark_*``) to a command."""
    for decls, attrs in reversed(_OPTIONS):
        func = click.option(*decls, **attrs)(func)
    return func


def absolute(location: str) -> str:
    """A path made absolute against the current directory; a URI unchanged."""
    if location.startswith("/") or _SCHEME.match(location):
        return location
    return os.path.abspath(location)


def _list(text: str | None) -> tuple[str, ...]:
    return tuple(absolute(p.strip()) for p in (text or "").split(",") if p.strip())


def spark_app(arguments: Sequence[str], options: dict[str, Any]) -> SparkApp | None:
    """The app the ``spark_*`` options describe (None without ``--spark-app``); InvalidSpec
    naming the option for an option given without it or a value that is refused."""
    given = {k: v for k, v in options.items() if v not in (None, ())}
    if "spark_app" not in given:
        if given:
            flag = next(decls[0] for decls, _ in _OPTIONS if decls[1] in given)
            raise InvalidSpec(f"{flag} is a Spark option: give it with --spark-app")
        return None
    conf = {}
    for item in given.get("spark_conf", ()):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidSpec(f"--conf {item!r} is not spark.NAME=VALUE")
        conf[key] = value
    sizes: dict[str, Any] = {}
    for option, field in (("executors", "executors"), ("executor_cores", "executor_cores"),
                          ("driver_cores", "driver_cores")):
        if (value := given.get(f"spark_{option}")) is not None:
            if value < 1:
                raise InvalidSpec(f"--{option.replace('_', '-')} must be >= 1")
            sizes[field] = value
    for option in ("executor_memory", "driver_memory"):
        if (text := given.get(f"spark_{option}")) is not None:
            try:
                sizes[f"{option}_mb"] = parse_memory(text)
            except InvalidSpec as exc:
                raise InvalidSpec(f"--{option.replace('_', '-')} {text!r}: use e.g. 512M "
                                  "or 2G") from exc
    return SparkApp(application=absolute(given["spark_app"]),
                    main_class=given.get("spark_main_class"), arguments=tuple(arguments),
                    conf=conf, py_files=_list(given.get("spark_py_files")),
                    jars=_list(given.get("spark_jars")), files=_list(given.get("spark_files")),
                    **sizes)
