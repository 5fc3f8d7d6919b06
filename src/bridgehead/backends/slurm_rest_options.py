"""slurmrestd's job options, per OpenAPI version: how each sbatch pass-through option becomes a
field of the job description (``slurm_rest_api`` picks the table of the version it speaks).

v0.0.37/v0.0.38 take sbatch's own text (they go through sbatch's option parser); v0.0.40 on
take typed values (flag lists, node lists, ``{"set", "number"}`` numbers), converted here.

A script's own ``#SBATCH`` lines are NOT read by slurmrestd (sbatch reads them; slurmrestd
takes only the job description): verified on 22.05.8 (v0.0.38) and 24.11.5 (v0.0.40, v0.0.41,
v0.0.42), where a held script's ``--nice``, ``--mem-per-cpu``, ``--exclusive``, ``--begin``,
``--no-requeue``, ``--mail-type`` left ``scontrol show job`` at the defaults
(tests/slurm/test_rest_directives.py). So :func:`script_fields` turns each directive the
request does not already carry into job fields through the same table, and refuses, naming
its line, one the table cannot send: honoured or refused, never dropped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bridgehead.backends import slurm
from bridgehead.domain import sbatch
from bridgehead.errors import SubmitRejected


@dataclass(frozen=True, slots=True)
class Option:
    """How one sbatch pass-through option becomes a field of the job description."""

    field: str
    takes: Literal["value", "flag", "either"] = "value"
    bare: Any = True
    """What the option sends given no value (``--hold``)."""
    convert: Callable[[str], Any] | None = None
    """sbatch's text to the field's typed value (v0.0.40 on); ValueError if it cannot."""


V38_OPTIONS: dict[str, Option] = {
    "account": Option("account"), "begin": Option("begin_time"),
    "constraint": Option("constraints"), "deadline": Option("deadline"),
    "dependency": Option("dependency"),
    "exclude": Option("exclude_nodes"),  # 'excluded_nodes' is a disabled key
    "exclusive": Option("exclusive", "either", "exclusive"), "gpus": Option("gpus"),
    "gpus-per-node": Option("gpus_per_node"), "gres": Option("gres"),
    "hold": Option("hold", "flag"), "job-name": Option("name"),
    "kill-on-invalid-dep": Option("kill_on_invalid_dependency"),
    "licenses": Option("licenses"), "mail-type": Option("mail_type"),
    "mail-user": Option("mail_user"), "mem-per-cpu": Option("memory_per_cpu"),
    "mincpus": Option("minimum_cpus_per_node"), "nice": Option("nice", "either", "100"),
    "nodelist": Option("nodelist"),
    "no-requeue": Option("no_requeue", "flag"),  # 'requeue': false leaves Requeue=1
    "ntasks-per-node": Option("tasks_per_node"), "partition": Option("partition"),
    "priority": Option("priority"), "qos": Option("qos"), "requeue": Option("requeue", "flag"),
    "reservation": Option("reservation"), "signal": Option("signal"),
    "spread-job": Option("spread_job", "flag"), "time-min": Option("time_minimum"),
    "tmp": Option("temporary_disk_per_node"),
}

# v0.0.40 on (data_parser): typed values
_SIZE = re.compile(r"([0-9]+)([KMGT]?)B?", re.IGNORECASE)
_DURATION = re.compile(r"(?:([0-9]+)-)?([0-9]+)(?::([0-9]+))?(?::([0-9]+))?")


def _megabytes(text: str) -> int:
    """sbatch's size (``512``, ``2G``; MB by default) in MB."""
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError("expected a size such as 512, 512M or 2G")
    scale = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2}[match.group(2).upper()]
    return max(1, math.ceil(int(match.group(1)) * scale))


def _minutes(text: str) -> int:
    """sbatch's time (``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``) in minutes,
    rounded up."""
    match = _DURATION.fullmatch(text)
    if not match:
        raise ValueError("expected minutes, M:S, H:M:S or D-H[:M[:S]]")
    days, first, second, third = (int(g) if g else 0 for g in match.groups())
    if match.group(1):  # D-H[:M[:S]]
        seconds = days * 86400 + first * 3600 + second * 60 + third
    elif match.group(4):  # H:M:S
        seconds = first * 3600 + second * 60 + third
    else:  # M[:S]
        seconds = first * 60 + second
    return math.ceil(seconds / 60)


def number(value: int) -> dict[str, Any]:
    return {"set": True, "infinite": False, "number": value}


_MAIL = {"ALL": ["BEGIN", "END", "FAIL", "REQUEUE", "STAGE_OUT"], "NONE": [],
         "INVALID_DEPEND": ["INVALID_DEPENDENCY"], "TIME_LIMIT": ["TIME=100%"],
         "TIME_LIMIT_90": ["TIME=90%"], "TIME_LIMIT_80": ["TIME=80%"],
         "TIME_LIMIT_50": ["TIME=50%"]}


def _mail_types(text: str) -> list[str]:
    """sbatch's ``--mail-type`` words as v0.0.40's flags."""
    words = [word.strip().upper() for word in text.split(",") if word.strip()]
    return [flag for word in words for flag in _MAIL.get(word, [word])]


def _kill_on_invalid_dep(text: str) -> list[str]:
    if text.lower() not in ("yes", "no"):
        raise ValueError("expected yes or no")
    return ["KILL_INVALID_DEPENDENCY" if text.lower() == "yes" else "NO_KILL_INVALID_DEPENDENCY"]


def _gres(text: str) -> str:
    return ",".join(f"gres/{item}" for item in text.split(",") if item)


V40_OPTIONS: dict[str, Option] = {
    "account": Option("account"), "constraint": Option("constraints"),
    "dependency": Option("dependency"),
    "exclude": Option("excluded_nodes", convert=lambda v: [v]),
    "exclusive": Option("exclusive", "either", ["true"], convert=lambda v: [v]),
    "gpus": Option("tres_per_job", convert=lambda v: f"gres/gpu:{v}"),
    "gpus-per-node": Option("tres_per_node", convert=lambda v: f"gres/gpu:{v}"),
    "gres": Option("tres_per_node", convert=_gres),
    "hold": Option("hold", "flag"), "job-name": Option("name"),
    "kill-on-invalid-dep": Option("flags", convert=_kill_on_invalid_dep),
    "licenses": Option("licenses"), "mail-type": Option("mail_type", convert=_mail_types),
    "mail-user": Option("mail_user"),
    "mem-per-cpu": Option("memory_per_cpu", convert=lambda v: number(_megabytes(v))),
    "mincpus": Option("minimum_cpus_per_node", convert=int),
    "nice": Option("nice", "either", 100, convert=int),
    "nodelist": Option("required_nodes", convert=lambda v: [v]),
    "no-requeue": Option("requeue", "flag", False),
    "ntasks-per-node": Option("tasks_per_node", convert=int),
    "partition": Option("partition"), "priority": Option("priority", convert=lambda v: number(
        int(v))), "qos": Option("qos"), "requeue": Option("requeue", "flag"),
    "reservation": Option("reservation"), "spread-job": Option("flags", "flag", ["SPREAD_JOB"]),
    "time-min": Option("time_minimum", convert=lambda v: number(_minutes(v))),
    "tmp": Option("temporary_disk_per_node", convert=_megabytes),
}
V42_OPTIONS = V40_OPTIONS | {  # `exclusive` is gone: `shared` says it
    "exclusive": Option("shared", "either", ["none"],
                        convert=lambda v: ["none" if v == "true" else v]),
}


def typed(option: str, value: str, convert: Callable[[str], Any] | None) -> Any:
    try:
        return convert(value) if convert else value
    except ValueError as exc:
        raise SubmitRejected(f"scheduler option {option!r}: {exc}") from None


# -- a script's #SBATCH directives -------------------------------------------------------------
CARRIED = frozenset({"ntasks", "cpus-per-task", "nodes", "job-name", "output", "error",
                     "chdir", "array"})
"""Directives whose value the request always carries (its tasks, CPUs, nodes, name, log
paths, working dir, array indices)."""
_COUNT = re.compile(r"[1-9][0-9]{0,5}")


def honoured_directives(table: Mapping[str, Option]) -> frozenset[str]:
    """The directive names a version honours (a value may still be refused: ``--mem=0``)."""
    return CARRIED | {"mem", "time", "partition", "account", "gpus"} | set(table)


def _carried(d: sbatch.Directive, request: slurm.SlurmRequest) -> bool:
    """Does the request's own field give this directive's value, or one that beats it as
    sbatch's command line would (the submit's explicit value)?"""
    match d.option:
        case "mem":
            return request.memory_mb is not None
        case "time":
            return request.time_minutes is not None
        case "partition" | "account":
            return getattr(request, d.option) is not None
        case "gpus":  # a typed count (a100:2) is the directive's own words, unless beaten
            plain = bool(_COUNT.fullmatch(d.value or ""))
            return bool(request.gpus) and (plain or "gpus" not in request.from_script)
    return d.option in CARRIED


def script_fields(request: slurm.SlurmRequest, table: Mapping[str, Option],
                  version: str) -> tuple[dict[str, Any], frozenset[str]]:
    """The job fields of the script's directives that the request does not carry, and the
    request's own fields they replace (where the script's words stand, as on sbatch: a
    ``--gres=gpu:2`` directive, not the ``gpus`` it was read as). SubmitRejected naming the
    line for a directive the table cannot send."""
    fields: dict[str, Any] = {}
    replaced: set[str] = set()
    for d in sbatch.directives(request.script):
        if _carried(d, request):
            continue
        where = f"script line {d.line}: #SBATCH {d.text}"
        spec = table.get(d.option)
        if spec is None:
            raise SubmitRejected(
                f"{where}: the slurm_rest backend cannot honour it (slurmrestd {version} "
                "does not read a script's #SBATCH lines, and its job description has no "
                "field for this): leave it out, or use the slurm_cli backend")
        if d.value is not None and spec.takes == "flag":
            raise SubmitRejected(f"{where}: --{d.option} takes no value")
        if d.value is None and spec.takes == "value":
            raise SubmitRejected(f"{where}: --{d.option} needs a value")
        try:
            value = spec.bare if d.value is None else (
                spec.convert(d.value) if spec.convert else d.value)
        except ValueError as exc:
            raise SubmitRejected(f"{where}: {exc}") from None
        old = fields.get(spec.field)
        fields[spec.field] = old + value if isinstance(old, list) and isinstance(value,
                                                                                 list) else value
        if d.option in ("gpus", "gres") and "gpus" in request.from_script:
            replaced.add(table["gpus"].field)
    return fields, frozenset(replaced)
