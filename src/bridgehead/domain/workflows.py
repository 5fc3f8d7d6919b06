"""Workflows: a graph of steps, each a job (or one job per item of a fan-out).

One workflow spec is read by two runners: the Airflow DAG factory (one task per step, a
mapped task per ``foreach``) and the native runner. Both turn a step into ``JobSpec``\\ s with
:func:`step_job_spec`.

Templates: a step's command words, script, env values and a Spark step's arguments and
``conf`` values may contain ``{{ params.NAME }}``
(a workflow param, its default or the run's value) and, in a ``foreach`` step, ``{{ item }}``.
Nothing else is a template; :func:`render` substitutes with a regex, once, never evaluating
anything, so a param's value is inserted verbatim (``$(rm -rf /)`` stays those characters in
one argv word; no shell ever sees it). Airflow's Jinja reads the same syntax the same way.

A step's ``script`` may carry ``#SBATCH`` directives; they are honoured or refused as at the
API's submit (:func:`bridgehead.domain.sbatch.apply`): a directive fills each resource the
step did not give explicitly (``StepSpec.given``: what the step or the workflow's defaults
wrote), ``--job-name`` names the job instead of ``<workflow>.<step>``, and a directive
Bridgehead must own is refused naming the step and the script's line.

A spec is checked when it is built: step ids, ``needs``, cycles, templates and, for each
step, a trial ``JobSpec`` with the default params (so a bad env name, scheduler option or
directive fails at load, not at run time). Errors are :class:`InvalidWorkflow` with the
``loc`` of the field.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from bridgehead.domain import sbatch
from bridgehead.domain.jobs import JobSpec, Resources
from bridgehead.domain.schedules import Schedule
from bridgehead.domain.spark import SparkApp
from bridgehead.domain.spark import sized as spark_sized
from bridgehead.errors import InvalidAt, InvalidSpec, Loc, NotFound

MAX_FOREACH_ITEMS = 10_000
"""The widest fan-out of one step."""

_STEP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_WORKFLOW_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,249}")
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_TEMPLATE = re.compile(r"\{\{(.*?)\}\}")
_EXPRESSION = re.compile(r"\s*(?:params\.([A-Za-z_][A-Za-z0-9_]*)|(item))\s*")

Item = str | int | float
"""A fan-out item: a scalar, rendered as ``{{ item }}``."""


class InvalidWorkflow(InvalidAt):
    """The workflow spec is not valid (at ``loc``: ``("steps", 1, "needs")``)."""


class InvalidDirective(InvalidSpec):
    """A step's script has an ``#SBATCH`` directive that is refused or cannot be read (the
    message names the step and the script's line)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often a failed step is tried again, and how long to wait in between."""

    count: int = 0
    """Retries after the first attempt (0: none)."""
    backoff_s: float = 0.0
    """The wait before the first retry; it doubles for each further one."""
    max_backoff_s: float = 3600.0
    """The longest wait."""

    def __post_init__(self) -> None:
        if not 0 <= self.count <= 100:
            raise InvalidWorkflow("must be between 0 and 100", ("count",))
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise InvalidWorkflow("must be >= 0", ("backoff",))

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based) before the next one:
        ``backoff_s``, then twice that, and so on, capped at ``max_backoff_s``."""
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, not {attempt}")
        return min(self.max_backoff_s, self.backoff_s * 2.0 ** min(attempt - 1, 64))


@dataclass(frozen=True, slots=True, kw_only=True)
class Foreach:
    """A step's fan-out: one job per item, from exactly one of a literal list (``values``),
    a range (``range_``: start, stop, step) or a param whose value is a list or an int N
    (meaning ``range(N)``)."""

    values: tuple[Item, ...] | None = None
    range_: tuple[int, int, int] | None = None
    param: str | None = None

    def __post_init__(self) -> None:
        given = [n for n in ("values", "range_", "param") if getattr(self, n) is not None]
        if len(given) != 1:
            raise InvalidWorkflow("give exactly one of a list, range or param")
        if self.values is not None:
            _check_items(self.values, (), "foreach")
            if not self.values:
                raise InvalidWorkflow("the list of values is empty")
        if self.range_ is not None:
            if self.range_[2] == 0:
                raise InvalidWorkflow("its step (third number) may not be 0", ("range",))
            width = len(range(*self.range_))
            if not 0 < width <= MAX_FOREACH_ITEMS:
                raise InvalidWorkflow(f"must give 1 to {MAX_FOREACH_ITEMS} items, not {width}",
                                      ("range",))
        if self.param is not None and not _PARAM_NAME.fullmatch(self.param):
            raise InvalidWorkflow(f"{self.param!r} is not a param name", ("param",))

    def items(self, params: Mapping[str, Any]) -> list[Item]:
        """The items for a run with these (effective) params; a param's list may be empty."""
        if self.values is not None:
            return list(self.values)
        if self.range_ is not None:
            return list(range(*self.range_))
        assert self.param is not None
        if self.param not in params:
            raise InvalidWorkflow(f"foreach param {self.param!r} is not given", ("param",))
        value = params[self.param]
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value <= MAX_FOREACH_ITEMS:
                raise InvalidWorkflow(f"param {self.param!r} must be 0 to {MAX_FOREACH_ITEMS}, "
                                      f"not {value}", ("param",))
            return list(range(value))
        if isinstance(value, list | tuple):
            _check_items(value, ("param",), f"param {self.param!r}")
            return list(value)
        raise InvalidWorkflow(f"param {self.param!r} must be a list or an int, "
                              f"not {type(value).__name__}", ("param",))


def _check_items(items: Any, loc: Loc, owner: str) -> None:
    if len(items) > MAX_FOREACH_ITEMS:
        raise InvalidWorkflow(f"{owner} has more than {MAX_FOREACH_ITEMS} items ({len(items)})",
                              loc)
    for item in items:
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise InvalidWorkflow(f"{owner}: items must be strings or numbers, not {item!r}"[:200],
                                  loc)


@dataclass(frozen=True, slots=True, kw_only=True)
class StepSpec:
    """One step: what runs (``command`` argv, ``script`` or a ``spark`` application), after
    which steps (``needs``), where and with what. Values are effective: the workflow's
    defaults are already merged."""

    id: str
    command: tuple[str, ...] = ()
    script: str | None = None
    spark: SparkApp | None = None
    """A Spark application; its ``arguments`` and ``conf`` values may hold templates (its
    paths may not: they are checked when the spec is built). Its sizes make the job's
    cores and memory (:func:`bridgehead.domain.spark.sized`)."""
    needs: tuple[str, ...] = ()
    cluster: str = ""
    cluster_labels: dict[str, str] = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    env: dict[str, str] = field(default_factory=dict)
    scheduler_options: tuple[str, ...] = ()
    retries: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: int | None = None
    """How long the orchestrator lets one attempt run before cancelling it."""
    foreach: Foreach | None = None
    labels: dict[str, str] = field(default_factory=dict)
    array: bool = True
    """A ``foreach`` step on a cluster that runs job arrays is submitted as one array when
    its jobs differ only by the item; False: one job per item."""
    given: tuple[str, ...] | None = None
    """The ``resources`` fields (``cores``, ``memory_mb``...) written explicitly, by the step
    or by the workflow's defaults: they beat the script's ``#SBATCH`` directives, which fill
    the others. None: the fields that differ from ``Resources()`` (a spec built in Python)."""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _STEP_ID.fullmatch(self.id):
            raise InvalidWorkflow(f"{self.id!r} is not a step id: use letters, digits, _ and -"
                                  " (at most 128, starting with a letter or digit)", ("id",))
        if bool(self.command) + (self.script is not None) + (self.spark is not None) != 1:
            raise InvalidWorkflow("give exactly one of command (argv list), script or spark")
        for index, need in enumerate(self.needs):
            if need in self.needs[:index]:
                raise InvalidWorkflow(f"{need!r} is listed twice", ("needs", index))
        if self.timeout_s is not None and self.timeout_s < 1:
            raise InvalidWorkflow("must be >= 1 second", ("timeout",))

    def templates(self) -> Iterator[tuple[Loc, str]]:
        """Each templated text of the step with its location: command words, script, env."""
        for index, word in enumerate(self.command):
            yield ("command", index), word
        if self.script is not None:
            yield ("script",), self.script
        for key, value in self.env.items():
            yield ("env", key), value
        if self.spark is not None:
            for index, word in enumerate(self.spark.arguments):
                yield ("spark", "arguments", index), word
            for key, value in self.spark.conf.items():
                yield ("spark", "conf", key), value


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowSpec:
    """A named graph of steps. ``params`` are the defaults of the run's params."""

    name: str
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    steps: tuple[StepSpec, ...] = ()
    schedule: Schedule | None = None
    """When it runs by itself (:mod:`bridgehead.domain.schedules`); None: only on demand."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _WORKFLOW_NAME.fullmatch(self.name):
            raise InvalidWorkflow(f"{self.name!r} is not a workflow name: use letters, digits,"
                                  " _ . and - (at most 250)", ("name",))
        for key in self.params:
            if not _PARAM_NAME.fullmatch(key):
                raise InvalidWorkflow(f"{key!r} is not a param name", ("params", key))
        if not self.steps:
            raise InvalidWorkflow("a workflow needs at least one step", ("steps",))
        _check_graph(self.steps)
        for index, step in enumerate(self.steps):
            _check_step(self, index, step)

    def step(self, step_id: str) -> StepSpec:
        """The step with this id (``NotFound`` if none)."""
        for step in self.steps:
            if step.id == step_id:
                return step
        raise NotFound(f"workflow {self.name!r} has no step {step_id!r}")

    def roots(self) -> list[str]:
        """Steps that need nothing, in file order."""
        return [s.id for s in self.steps if not s.needs]

    def dependents(self, step_id: str) -> list[str]:
        """Steps that directly need ``step_id``, in file order."""
        self.step(step_id)
        return [s.id for s in self.steps if step_id in s.needs]

    def topological_order(self) -> list[str]:
        """Every step after the steps it needs; among steps ready together, file order."""
        position = {s.id: i for i, s in enumerate(self.steps)}
        waiting = [len(s.needs) for s in self.steps]
        dependents: list[list[int]] = [[] for _ in self.steps]
        for index, step in enumerate(self.steps):
            for need in step.needs:
                dependents[position[need]].append(index)
        ready = [i for i, count in enumerate(waiting) if not count]
        order: list[str] = []
        while ready:
            index = heapq.heappop(ready)
            order.append(self.steps[index].id)
            for dependent in dependents[index]:
                waiting[dependent] -= 1
                if not waiting[dependent]:
                    heapq.heappush(ready, dependent)
        return order

    def resolve_params(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The run's params: the defaults updated by ``overrides`` (only declared names)."""
        unknown = sorted(set(overrides or {}) - set(self.params))
        if unknown:
            raise InvalidSpec(f"workflow {self.name!r} has no param {unknown[0]!r} "
                              f"(it has: {', '.join(self.params) or 'none'})")
        return {**self.params, **(overrides or {})}

    def job_specs(self, step_id: str,
                  overrides: Mapping[str, Any] | None = None) -> list[JobSpec]:
        """The jobs of one step for a run: one, or one per ``foreach`` item (maybe none)."""
        step = self.step(step_id)
        params = self.resolve_params(overrides)
        if step.foreach is None:
            return [step_job_spec(self, step, params)]
        return [step_job_spec(self, step, params, item)
                for item in step.foreach.items(params)]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (tuples become lists when dumped)."""
        return asdict(self)


def step_job_spec(workflow: WorkflowSpec, step: StepSpec, params: Mapping[str, Any],
                  item: Item | None = None, *, tenant: str = "default",
                  idempotency_key: str | None = None,
                  labels: Mapping[str, str] | None = None) -> JobSpec:
    """The job for ``step`` (and one ``item`` of its fan-out) with the run's ``params``: the
    templates rendered word by word, its script's directives applied (:func:`directed`),
    named ``<workflow>.<step>`` unless a directive names it, labelled with both (and
    ``labels``)."""
    if (item is None) != (step.foreach is None):
        raise InvalidSpec(f"step {step.id!r}: give an item exactly when the step has foreach")

    def text(value: str) -> str:
        return render(value, params, item)

    spark = step.spark
    if spark is not None:
        spark = replace(spark, arguments=tuple(text(word) for word in spark.arguments),
                        conf={key: text(value) for key, value in spark.conf.items()})
    job = JobSpec(
        cluster=step.cluster, cluster_labels=dict(step.cluster_labels),
        command=tuple(text(word) for word in step.command),
        script=text(step.script) if step.script is not None else None, spark=spark,
        env={key: text(value) for key, value in step.env.items()},
        resources=step.resources, scheduler_options=step.scheduler_options,
        labels={**step.labels, "workflow": workflow.name, "step": step.id, **(labels or {})},
        tenant=tenant, idempotency_key=idempotency_key,
    )
    if spark is not None:
        job = spark_sized(job, _given(step))
    job = directed(step, job)
    return job if job.name is not None else replace(job, name=f"{workflow.name}.{step.id}")


def _given(step: StepSpec) -> tuple[str, ...]:
    """The resources the step wrote (a spec built in Python: those not at their default)."""
    if step.given is not None:
        return step.given
    defaults = Resources()
    return tuple(name for name, value in step.resources.to_dict().items()
                 if value != getattr(defaults, name))


def directed(step: StepSpec, job: JobSpec) -> JobSpec:
    """``job`` (the step's, unnamed) with its script's ``#SBATCH`` directives taken in: each
    resource not in ``step.given`` and the name, array and working dir (which a step does
    not give) come from them. :class:`InvalidDirective` naming the step and the line."""
    if job.script is None:
        return job
    given = sbatch.given_by_default(job) if step.given is None else step.given
    try:
        return sbatch.apply(job, given)
    except InvalidSpec as exc:
        raise InvalidDirective(f"step {step.id!r}: {exc.message}") from exc


def render(text: str, params: Mapping[str, Any], item: Item | None = None) -> str:
    """``text`` with each ``{{ params.NAME }}`` and ``{{ item }}`` replaced by the value as
    Jinja prints it (``str``), in one pass: inserted values are never scanned again."""

    def substitute(match: re.Match[str]) -> str:
        name = _placeholder(match)
        if name is None:
            if item is None:
                raise InvalidSpec("{{ item }} is only defined in a step with foreach")
            return str(item)
        if name not in params:
            raise InvalidSpec(f"unknown param {name!r} in {match[0]!r}")
        return str(params[name])

    return _TEMPLATE.sub(substitute, text)


def placeholders(text: str) -> Iterator[str | None]:
    """The param names used in ``text`` (``None`` for ``{{ item }}``)."""
    for match in _TEMPLATE.finditer(text):
        yield _placeholder(match)


def _placeholder(match: re.Match[str]) -> str | None:
    expression = _EXPRESSION.fullmatch(match[1])
    if expression is None:
        raise InvalidSpec(f"unsupported template {match[0][:80]!r}: "
                          "only {{ params.NAME }} and {{ item }}")
    return expression[1]


def _check_graph(steps: tuple[StepSpec, ...]) -> None:
    seen: dict[str, int] = {}
    for index, step in enumerate(steps):
        if step.id in seen:
            raise InvalidWorkflow(f"duplicate step id {step.id!r} (also steps[{seen[step.id]}])",
                                  ("steps", index, "id"))
        seen[step.id] = index
    for index, step in enumerate(steps):
        for position, need in enumerate(step.needs):
            if need not in seen:
                raise InvalidWorkflow(f"unknown step {need!r}", ("steps", index, "needs", position))
    cycle = _find_cycle(steps)
    if cycle:
        raise InvalidWorkflow(f"steps form a cycle: {' -> '.join(cycle)}",
                              ("steps", seen[cycle[0]], "needs"))


def _find_cycle(steps: tuple[StepSpec, ...]) -> list[str]:
    """A cycle of ``needs`` as a path ``[a, b, a]`` (a needs b needs a), or ``[]``."""
    needs = {s.id: s.needs for s in steps}
    done: set[str] = set()
    for root in needs:
        if root in done:
            continue
        path, on_path = [root], {root}
        pending: list[Iterator[str]] = [iter(needs[root])]
        while pending:
            nxt = next(pending[-1], None)
            if nxt is None:
                pending.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                continue
            if nxt in on_path:
                return [*path[path.index(nxt):], nxt]
            if nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                pending.append(iter(needs[nxt]))
    return []


def _check_step(workflow: WorkflowSpec, index: int, step: StepSpec) -> None:
    """Templates and the foreach param name declared params; a trial job is valid."""
    loc: Loc = ("steps", index)
    for where, text in step.templates():
        try:
            names = list(placeholders(text))
        except InvalidSpec as exc:
            raise InvalidWorkflow(exc.message, (*loc, *where)) from exc
        for name in names:
            if name is None and step.foreach is None:
                raise InvalidWorkflow("{{ item }} is only defined in a step with foreach",
                                      (*loc, *where))
            if name is not None and name not in workflow.params:
                raise InvalidWorkflow(f"unknown param {name!r} (declare it under params)",
                                      (*loc, *where))
    if not step.cluster and not step.cluster_labels:
        raise InvalidWorkflow("give cluster or cluster_labels, in the step or in defaults", loc)
    item: Item | None = None
    if step.foreach is not None:
        if step.foreach.param is not None and step.foreach.param not in workflow.params:
            raise InvalidWorkflow(f"unknown param {step.foreach.param!r} (declare it under "
                                  "params)", (*loc, "foreach", "param"))
        try:
            item = next(iter(step.foreach.items(workflow.params)), "")
        except InvalidWorkflow as exc:
            raise exc.within(*loc, "foreach") from exc
    try:
        step_job_spec(workflow, step, workflow.params, item)
    except InvalidDirective as exc:
        raise InvalidWorkflow(exc.message, (*loc, "script")) from exc
    except InvalidSpec as exc:
        raise InvalidWorkflow(exc.message, loc) from exc
