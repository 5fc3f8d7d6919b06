"""Workflow files: YAML in, :class:`~bridgehead.domain.workflows.WorkflowSpec` out.

The file's shape is checked by pydantic models (``extra="forbid"``, strict types; they also
give :func:`workflow_json_schema` for editors), then converted to the domain's dataclasses,
with the ``defaults`` block merged into every step. Every error is one line naming the file,
the line and the field::

    crystallography.yaml:14: steps[1].needs[0]: unknown step 'findpeaks'

A step's resources are explicit when the step or the ``defaults`` block writes them (even at
their default value, ``cores: 1``): those beat the ``#SBATCH`` directives of the step's script,
which fill the resources neither wrote (``StepSpec.given``, as on sbatch's command line).
A ``spark`` step's cores and memory come from its application's sizes: the defaults' cores,
nodes and memory do not apply to it, and its own resources may cap it (``max_cores``) but
not contradict it.

The YAML is composed to a node tree first (safe loader: no tags that build objects, no
aliases, no duplicate keys, dates kept as strings), so each error ``loc`` maps to a line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    Tag,
    ValidationError,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bridgehead.domain.jobs import Resources
from bridgehead.domain.spark import SparkApp
from bridgehead.domain.units import (
    RESOURCE_UNITS,
    parse_memory,
    parse_walltime,
    resource_field,
)
from bridgehead.domain.workflows import (
    Foreach,
    InvalidWorkflow,
    RetryPolicy,
    StepSpec,
    WorkflowSpec,
)
from bridgehead.domain.workflows import _check_graph as check_graph
from bridgehead.errors import InvalidSpec, Loc, format_loc
from bridgehead.workflows.schedule_spec import ScheduleModel, to_schedule

logger = logging.getLogger(__name__)

MAX_FILE_BYTES = 1 << 20
"""Workflow files larger than this (1 MiB) are refused unread."""


# -- YAML ------------------------------------------------------------------------------------
class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The safe loader (libyaml's when installed), keeping dates as strings."""

    yaml_implicit_resolvers = {
        first: [(tag, regex) for tag, regex in resolvers if not tag.endswith(":timestamp")]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


def read_yaml(text: str, filename: str) -> tuple[Node, Any]:
    """The document's node tree (for :func:`line_of`) and its Python value, from at most
    1 MiB of text; ``InvalidSpec("file:line: ...")`` otherwise. Workflow and rules files."""
    if len(text) > MAX_FILE_BYTES or len(text.encode()) > MAX_FILE_BYTES:
        raise InvalidSpec(f"{filename}: larger than {MAX_FILE_BYTES} bytes")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise InvalidSpec(f"{filename}:1: the file is empty")
        _check_tree(node, text)
        return node, loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        detail = f"{exc.problem} ({exc.context})" if exc.context else exc.problem
        raise InvalidSpec(f"{filename}:{line}: invalid YAML: {detail or exc}") from exc
    except yaml.YAMLError as exc:
        raise InvalidSpec(f"{filename}:1: invalid YAML: {exc}") from exc
    except RecursionError as exc:
        raise InvalidSpec(f"{filename}:1: invalid YAML: nested too deeply") from exc
    finally:
        loader.dispose()


def _check_tree(root: Node, text: str) -> None:
    """Refuse duplicate keys (YAML keeps the last one silently) and aliases (a node met
    twice: ``*name`` would let a small file expand to a huge one)."""
    seen: set[int] = set()
    pending = [root]
    while pending:
        node = pending.pop()
        if id(node) in seen:
            alias = next((e for e in yaml.parse(text, Loader=_Loader)
                          if isinstance(e, yaml.AliasEvent)), None)
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not supported",
                                              alias.start_mark if alias else node.start_mark)
        seen.add(id(node))
        if isinstance(node, MappingNode):
            keys: set[str] = set()
            for key, value in node.value:
                if isinstance(key, ScalarNode):
                    if key.value in keys:
                        raise yaml.composer.ComposerError(
                            None, None, f"duplicate key {key.value!r}", key.start_mark)
                    keys.add(key.value)
                pending.extend((value, key))
        elif isinstance(node, SequenceNode):
            pending.extend(reversed(node.value))


def line_of(root: Node, loc: Loc) -> tuple[int, Loc]:
    """The 1-based line of the deepest node along ``loc``, and the parts of ``loc`` found
    (pydantic adds union tags to a ``loc``; they match no key and are skipped)."""
    node, line_node = root, root
    found: Loc = ()
    for part in loc:
        child: tuple[Node, Node] | None = None
        if isinstance(node, MappingNode):
            child = next(((k, v) for k, v in node.value
                          if isinstance(k, ScalarNode) and k.value == str(part)), None)
        elif isinstance(node, SequenceNode) and isinstance(part, int):
            if 0 <= part < len(node.value):
                child = (node.value[part], node.value[part])
        if child is not None:
            (line_node, node), found = child, (*found, part)
    return line_node.start_mark.line + 1, found


def _message(filename: str, root: Node, loc: Loc, detail: str, missing: bool = False) -> str:
    line, found = line_of(root, loc)
    if missing and loc:
        found = (*found, loc[-1])
    return f"{filename}:{line}: {format_loc(found)}: {detail}" if found else \
        f"{filename}:{line}: {detail}"


def _best_error(errors: list[ErrorDetails], root: Node) -> ErrorDetails:
    """The error that points deepest into the file (of a union's members, the one tried)."""
    return max(errors, key=lambda e: len(line_of(root, tuple(e["loc"]))[1]))


# -- file shape ------------------------------------------------------------------------------
def _word(value: Any) -> Any:
    """A bare number in a list of words (``[sleep, 5]``) is the word ``"5"``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _units(parse: Callable[[str], int], error: str) -> BeforeValidator:
    """A validator turning text (``4G``, ``2h``) into a number with ``parse``."""

    def convert(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return parse(value)
        except InvalidSpec as exc:
            raise PydanticCustomError("units", error, {"text": repr(value)}) from exc

    return BeforeValidator(convert)


def _item(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise PydanticCustomError("item_type", "an item must be a string or a number")
    return value


def _range(value: Any) -> Any:
    return [value] if isinstance(value, int) and not isinstance(value, bool) else value


def _shape(value: Any) -> str | None:
    """The union member for ``retries`` and ``foreach``: a number, a list or a mapping."""
    if isinstance(value, int) and not isinstance(value, bool):
        return "count"
    return "list" if isinstance(value, list) else "mapping" if isinstance(value, dict) else None


_NUMBER_OR_TEXT = {"anyOf": [{"type": "number"}, {"type": "string"}]}
_DURATION = _units(parse_walltime, "{text} is not a duration: use 90, 30m, 2h or HH:MM:SS")
_SIZE = _units(parse_memory, "{text} is not a size: use e.g. 512M or 4G")
Word = Annotated[str, BeforeValidator(_word), WithJsonSchema({"type": ["string", "number"]})]
MemoryMB = Annotated[int, _SIZE, Field(ge=1), WithJsonSchema(
    {**_NUMBER_OR_TEXT, "description": "MB, or a size like 512M, 4G"})]
Seconds = Annotated[int, _DURATION, Field(ge=1), WithJsonSchema(
    {**_NUMBER_OR_TEXT, "description": "seconds, or 90, 30m, 2h, HH:MM:SS"})]
Backoff = Annotated[float, _DURATION, Field(ge=0), WithJsonSchema(
    {**_NUMBER_OR_TEXT, "description": "seconds, or 5s, 1m, ..."})]
Item = Annotated[str | int | float, BeforeValidator(_item)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ResourcesModel(_Model):
    """What each job of a step asks of its cluster (merged field by field over defaults)."""

    model_config = ConfigDict(title="Resources")
    cores: int | None = Field(None, ge=1)
    nodes: int | None = Field(None, ge=1)
    memory: MemoryMB | None = None
    gpus: int | None = Field(None, ge=0)
    walltime: Seconds | None = None
    partition: str | None = None
    account: str | None = None
    max_cores: int | None = Field(None, ge=1, description="cap on cores, whatever asks more")
    max_nodes: int | None = Field(None, ge=1, description="cap on nodes")


class RetriesModel(_Model):
    """Retries after a failed attempt, with exponential backoff."""

    model_config = ConfigDict(title="Retries")
    count: int = Field(0, ge=0, le=100)
    backoff: Backoff = 0.0
    max_backoff: Backoff = 3600.0


class ForeachModel(_Model):
    """A fan-out over ``range`` (N, [start, stop] or [start, stop, step]) or a ``param``
    (a list, or an int N meaning range(N))."""

    model_config = ConfigDict(title="Foreach")
    range: Annotated[list[int], BeforeValidator(_range), Field(min_length=1, max_length=3),
                     WithJsonSchema({"anyOf": [{"type": "integer"}, {
                         "type": "array", "items": {"type": "integer"},
                         "minItems": 1, "maxItems": 3}]})] | None = None
    param: str | None = None


Retries = Annotated[
    Annotated[int, Tag("count"), Field(ge=0, le=100)] | Annotated[RetriesModel, Tag("mapping")],
    Discriminator(_shape, custom_error_type="retries_type",
                  custom_error_message="must be a count or a mapping (count, backoff, ...)")]
ForeachField = Annotated[
    Annotated[list[Item], Tag("list")] | Annotated[ForeachModel, Tag("mapping")],
    Discriminator(_shape, custom_error_type="foreach_type",
                  custom_error_message="must be a list of items or a mapping (range or param)")]


class DefaultsModel(_Model):
    """Values every step gets unless it gives its own."""

    model_config = ConfigDict(title="Defaults")
    cluster: str | None = Field(None, description="the cluster; or route by cluster_labels")
    cluster_labels: dict[str, str] | None = None
    resources: ResourcesModel | None = None
    env: dict[str, Word] | None = None
    options: list[str] | None = Field(None, description="scheduler options: --name=value")
    retries: Retries | None = None
    timeout: Seconds | None = Field(None, description="the orchestrator cancels after this")


class SparkModel(_Model):
    """A Spark application (``spark-submit``'s arguments, typed). Its ``arguments`` and
    ``conf`` values may hold ``{{ params.NAME }}`` / ``{{ item }}``; its paths may not.
    Its sizes make the job's cores and memory: a step's ``resources`` may cap them
    (``max_cores`` clamps the executors) but not contradict them."""

    model_config = ConfigDict(title="Spark application")
    application: str = Field(description="a .py or .jar: an absolute path or a URI")
    main_class: str | None = Field(None, description="the main class of a .jar")
    arguments: list[Word] = Field([], description="argv words; never a shell string")
    conf: dict[str, Word] = Field({}, description="spark.* settings only")
    driver_cores: int | None = Field(None, ge=1)
    driver_memory: MemoryMB | None = None
    executor_cores: int | None = Field(None, ge=1)
    executor_memory: MemoryMB | None = None
    executors: int | None = Field(None, ge=1)
    py_files: list[str] = []
    jars: list[str] = []
    files: list[str] = []


class StepModel(DefaultsModel):
    """One step: a ``command`` (argv list), a ``script`` or a ``spark`` application, after
    the steps it ``needs``."""

    model_config = ConfigDict(title="Step")
    id: str
    command: list[Word] | None = Field(None, description="argv words; never a shell string")
    script: str | None = Field(None, description="a script starting with a #! line")
    spark: SparkModel | None = Field(None, description="a Spark application (a cluster "
                                     "with a Spark backend)")
    needs: list[str] = []
    foreach: ForeachField | None = None
    array: bool = Field(True, description="foreach on a Slurm cluster: submit the items as "
                        "one job array when they differ only by the item (false: one job "
                        "per item)")
    labels: dict[str, str] = {}

    @field_validator("command", mode="before")
    @classmethod
    def _argv(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise PydanticCustomError(
                "command_not_argv", "command must be a list of words (argv), not a shell string")
        return value


class WorkflowModel(_Model):
    """A Bridgehead workflow: named steps forming a graph through ``needs``."""

    model_config = ConfigDict(title="Bridgehead workflow")
    name: str
    description: str = ""
    params: dict[str, JsonValue] = Field({}, description="params and their defaults")
    defaults: DefaultsModel | None = None
    steps: list[StepModel] = Field(min_length=1)
    schedule: ScheduleModel | None = Field(None, description="run it by itself: a cron "
                                           "expression or an interval")


# -- to the domain ---------------------------------------------------------------------------
def _resources(*layers: ResourcesModel | None) -> Resources:
    values: dict[str, Any] = {}
    for layer in layers:
        if layer is not None:
            values.update(resource_field(k, v)
                          for k, v in layer.model_dump(exclude_none=True).items())
    return Resources(**values)


def _given(*layers: ResourcesModel | None) -> tuple[str, ...]:
    """The ``Resources`` fields the layers write (``memory`` -> ``memory_mb``), sorted."""
    return tuple(sorted({RESOURCE_UNITS.get(k, (k,))[0] for layer in layers if layer is not None
                         for k in layer.model_dump(exclude_none=True)}))


def _retries(model: int | RetriesModel | None) -> RetryPolicy:
    if model is None:
        return RetryPolicy()
    if isinstance(model, int):
        return RetryPolicy(count=model)
    return RetryPolicy(count=model.count, backoff_s=model.backoff,
                       max_backoff_s=model.max_backoff)


def _foreach(model: list[Any] | ForeachModel | None) -> Foreach | None:
    if model is None:
        return None
    if isinstance(model, list):
        return Foreach(values=tuple(model))
    span = model.range
    if span is None:
        return Foreach(param=model.param)
    args = [0, *span] if len(span) == 1 else list(span)
    start, stop, step = args if len(args) == 3 else [*args, 1]
    return Foreach(range_=(start, stop, step), param=model.param)


_at = InvalidWorkflow.located
_SPARK_FIELD = re.compile(r"spark\.([a-z_]+)")


def _spark(model: SparkModel | None) -> SparkApp | None:
    """The step's Spark application; an error located at the field it names (``conf``)."""
    if model is None:
        return None
    data = model.model_dump(exclude_none=True)
    for name in ("driver_memory", "executor_memory"):
        if name in data:
            data[f"{name}_mb"] = data.pop(name)
    try:
        return SparkApp.from_dict(data)
    except InvalidSpec as exc:
        field = _SPARK_FIELD.match(exc.message)
        name = field[1] if field else ""
        name = {"driver_memory_mb": "driver_memory",
                "executor_memory_mb": "executor_memory"}.get(name, name)
        loc = (name,) if name in SparkModel.model_fields else ()
        raise InvalidWorkflow(exc.message, loc) from exc
"""``_at(loc, build, *args)``: ``build(*args)`` with its errors located at ``loc``."""


def _step(step: StepModel, defaults: DefaultsModel) -> StepSpec:
    """The step with the defaults merged: resources by field, env by key; for the cluster,
    the step's ``cluster``/``cluster_labels`` (either) replace the defaults' (both)."""
    where = step if step.cluster is not None or step.cluster_labels is not None else defaults
    return StepSpec(
        id=step.id, command=tuple(step.command or ()), script=step.script,
        spark=_at(("spark",), _spark, step.spark),
        needs=tuple(step.needs), cluster=where.cluster or "",
        cluster_labels=dict(where.cluster_labels or {}),
        resources=_at(("resources",), _resources, defaults.resources, step.resources),
        env={**(defaults.env or {}), **(step.env or {})},
        scheduler_options=tuple(step.options if step.options is not None
                                else defaults.options or ()),
        retries=_at(("retries",), _retries,
                    step.retries if step.retries is not None else defaults.retries),
        timeout_s=step.timeout if step.timeout is not None else defaults.timeout,
        foreach=_at(("foreach",), _foreach, step.foreach),
        labels=dict(step.labels), given=_given(defaults.resources, step.resources)
        if step.spark is None else _given(step.resources),  # a Spark app's size beats defaults
        array=step.array,
    )


def _to_domain(model: WorkflowModel) -> WorkflowSpec:
    defaults = model.defaults or DefaultsModel()
    _at(("defaults", "resources"), _resources, defaults.resources)
    _at(("defaults", "retries"), _retries, defaults.retries)
    steps = tuple(_at(("steps", index), _step, step, defaults)
                  for index, step in enumerate(model.steps))
    schedule = _at(("schedule",), to_schedule, model.schedule, model.params)
    return WorkflowSpec(name=model.name, description=model.description,
                        params=dict(model.params), steps=steps, schedule=schedule)


# -- public ----------------------------------------------------------------------------------
def parse_workflow(text: str, filename: str = "<string>") -> WorkflowSpec:
    """The workflow in YAML ``text``; ``InvalidSpec("file:line: field: message")`` if bad."""
    root, data = read_yaml(text, filename)
    if not isinstance(data, dict):
        raise InvalidSpec(f"{filename}:{root.start_mark.line + 1}: the top level must be a "
                          "mapping (name, steps, ...)")
    try:
        model = WorkflowModel.model_validate(data)
    except ValidationError as exc:
        error = _best_error(exc.errors(), root)
        raise InvalidSpec(_message(filename, root, tuple(error["loc"]), error["msg"],
                                   missing=error["type"] == "missing")) from exc
    try:
        return _to_domain(model)
    except InvalidWorkflow as exc:
        raise InvalidSpec(_message(filename, root, exc.loc, exc.detail)) from exc


@dataclass(frozen=True, slots=True)
class Problem:
    """One error of a workflow file: its line, the field (``steps[1].needs[0]``; ``""`` for
    the file itself) and what is wrong there."""

    line: int
    loc: str
    detail: str

    def message(self, filename: str) -> str:
        """As :func:`parse_workflow` says it: ``file:line: field: detail``."""
        where = f"{self.loc}: " if self.loc else ""
        return f"{filename}:{self.line}: {where}{self.detail}"


def validate_workflow(text: str, filename: str = "<string>") -> list[Problem]:
    """Every error of the workflow in ``text``, each at its line and field (a form shows
    each at its field), in file order; ``[]`` when :func:`parse_workflow` accepts it.

    The checks are :func:`parse_workflow`'s, in its order: YAML (one error: nothing past it
    can be read), then the schema (all its errors; of a union's, only the deepest along each
    path), then each step's own checks (each step's first error), then the whole workflow's
    (needs, cycles, duplicate ids: its first error), reached only when the steps are valid.
    """
    try:
        root, data = read_yaml(text, filename)
    except InvalidSpec as exc:
        return [_file_problem(exc.message, filename)]
    if not isinstance(data, dict):
        return [Problem(root.start_mark.line + 1, "",
                        "the top level must be a mapping (name, steps, ...)")]
    try:
        model = WorkflowModel.model_validate(data)
    except ValidationError as exc:
        return _schema_problems(exc.errors(), root)
    errors: list[InvalidWorkflow] = []
    defaults = model.defaults or DefaultsModel()
    for loc, check, args in (
            (("defaults", "resources"), _resources, (defaults.resources,)),
            (("defaults", "retries"), _retries, (defaults.retries,)),
            (("schedule",), to_schedule, (model.schedule, model.params))):
        try:
            _at(loc, check, *args)
        except InvalidWorkflow as exc:
            errors.append(exc)
    steps: list[StepSpec] = []
    for index, step in enumerate(model.steps):
        try:
            steps.append(_at(("steps", index), _step, step, defaults))
        except InvalidWorkflow as exc:
            errors.append(exc)
    if not errors:
        errors += _workflow_errors(model, tuple(steps))
    problems = [_problem(root, exc.loc, exc.detail) for exc in errors]
    return sorted(dict.fromkeys(problems), key=lambda p: p.line)


def _workflow_errors(model: WorkflowModel, steps: tuple[StepSpec, ...]) -> list[InvalidWorkflow]:
    """The whole workflow's errors once each step is valid: the one ``WorkflowSpec`` raises
    (parse_workflow's), the graph's, and each step's checks against the params (each step
    alone in a workflow of the same params: templates and foreach)."""
    try:
        WorkflowSpec(name=model.name, description=model.description,
                     params=dict(model.params), steps=steps)
    except InvalidWorkflow as exc:
        errors = [exc]
    else:
        return []
    try:
        check_graph(steps)
    except InvalidWorkflow as exc:
        errors.append(exc)
    for index, step in enumerate(steps):
        try:
            WorkflowSpec(name="w", params=dict(model.params), steps=(replace(step, needs=()),))
        except InvalidWorkflow as exc:
            if exc.loc[:2] == ("steps", 0):
                errors.append(InvalidWorkflow(exc.detail, ("steps", index, *exc.loc[2:])))
    return errors


def _problem(root: Node, loc: Loc, detail: str, missing: bool = False) -> Problem:
    line, found = line_of(root, loc)
    if missing and loc:
        found = (*found, loc[-1])
    return Problem(line, format_loc(found) if found else "", detail)


def _schema_problems(errors: list[ErrorDetails], root: Node) -> list[Problem]:
    """One problem per field: a union's members each report the field, so of the errors
    along one path only the deepest stays (the member that was tried, as parse_workflow)."""
    found = [_problem(root, tuple(e["loc"]), e["msg"], missing=e["type"] == "missing")
             for e in errors]
    deepest = [p for p in found if not any(
        q.loc != p.loc and (q.loc.startswith(p.loc + ".") or q.loc.startswith(p.loc + "["))
        for q in found)]
    unique = list(dict.fromkeys(deepest))
    return sorted(unique, key=lambda p: p.line)


def _file_problem(message: str, filename: str) -> Problem:
    """A problem of the file as a whole from ``InvalidSpec("file:line: detail")``."""
    rest = message.removeprefix(f"{filename}:")
    line, sep, detail = rest.partition(": ")
    if sep and line.isdigit():
        return Problem(int(line), "", detail)
    return Problem(1, "", rest if rest != message else message)


def read_spec_file(path: str | Path) -> str:
    """The UTF-8 text of a workflow or rules file (at most 1 MiB: larger files are refused
    unread); ``InvalidSpec`` naming the file otherwise."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidSpec(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise InvalidSpec(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidSpec(f"{path}: not UTF-8 text") from exc


def load_workflow(path: str | Path) -> WorkflowSpec:
    """The workflow in the YAML file at ``path`` (at most 1 MiB of UTF-8)."""
    return parse_workflow(read_spec_file(path), str(path))


def load_workflows(folder: str | Path, pattern: str = "*.y*ml") -> list[WorkflowSpec]:
    """Every workflow file in ``folder`` matching ``pattern``, by file name; the first bad
    file, or two files with one workflow name, raise ``InvalidSpec``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidSpec(f"{folder}: not a directory")
    specs: list[WorkflowSpec] = []
    origin: dict[str, Path] = {}
    for path in sorted(p for p in folder.glob(pattern) if p.is_file()):
        spec = load_workflow(path)
        if spec.name in origin:
            raise InvalidSpec(f"{path}: workflow {spec.name!r} is also in {origin[spec.name]}")
        origin[spec.name] = path
        specs.append(spec)
        logger.debug("workflow %s loaded from %s (%d steps)", spec.name, path, len(spec.steps))
    return specs


def workflow_json_schema() -> dict[str, Any]:
    """The JSON Schema of a workflow file (draft 2020-12), for editors and linters."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            **WorkflowModel.model_json_schema()}
