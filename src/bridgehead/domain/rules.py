"""Event rules: when an event matches a rule's pattern, its actions run, in order.

A rule is ``name``, ``description``, ``enabled``, ``match`` (an event pattern, see
:mod:`bridgehead.domain.patterns`) and 1 to 16 ``actions``: :class:`SubmitJob` (a job
template), :class:`StartWorkflow` (a workflow spec and its params) or :class:`Webhook` (a
signed POST of the event). One shape serves the API's JSON, the store and (through
:mod:`bridgehead.rules.spec`) YAML files; :func:`rule_from_dict` reads it and
:meth:`Rule.to_dict` writes it.

Templates (:mod:`bridgehead.domain.event_templates`): command words, the script, env values,
the job's name and working_dir, and workflow param values may contain ``{{ data.a.b }}`` or
``{{ event.id }}``, rendered once, never evaluated, never through a shell: ``$(rm -rf /)``
stays those characters in one argv word. A path the event lacks fails the action.

A job template's script may carry ``#SBATCH`` directives, honoured or refused as at the API's
submit (:func:`bridgehead.domain.sbatch.apply`): they fill the resources, name and working_dir
the template does not give. A refused or unreadable directive fails the rule when it is
built (``actions[0].submit_job.script: script line 3: ...``); one on a line holding a
template can only be read per event, and fails that event's action (``rule.failed``).

Everything is checked when a rule is built (patterns compiled, templates parsed, a trial job
built), and every error is an :class:`InvalidRule` naming its field:
``actions[1].webhook.url: must be an http or https URL``.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, ClassVar
from urllib.parse import urlsplit

from bridgehead.domain import sbatch, spark
from bridgehead.domain.event_templates import render, trial_render
from bridgehead.domain.events import Event
from bridgehead.domain.jobs import MAX_KEY_LEN, JobSpec, Resources
from bridgehead.domain.patterns import InvalidPattern, Pattern
from bridgehead.domain.units import RESOURCE_UNITS, parse_walltime
from bridgehead.errors import InvalidAt, InvalidSpec, Loc

__all__ = [
    "Action", "InvalidPattern", "InvalidRule", "Pattern", "Rule", "StartWorkflow", "SubmitJob",
    "Webhook", "idempotency_key", "render", "rule_from_dict", "sign", "verify",
]

MAX_ACTIONS = 16
MAX_SPEC_BYTES = 1 << 20
"""The largest inline workflow spec."""
SECRET_MASK = "***"
_RULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")
_HEADER_VALUE = re.compile(r"[\x20-\x7e\t]{0,4096}")
_RESERVED_HEADERS = re.compile(r"content-type|content-length|host|transfer-encoding|"
                               r"x-bridgehead-.*", re.IGNORECASE)
_SENSITIVE_HEADER = re.compile(r".*(authorization|cookie|token|secret|key|password|signature)"
                               r".*", re.IGNORECASE)


class InvalidRule(InvalidAt):
    """The rule is not valid (at ``loc``: ``("actions", 1, "webhook", "url")``)."""


class InvalidDirective(InvalidRule):
    """A job template's script has an ``#SBATCH`` directive that is refused or cannot be read
    (:func:`rule_from_dict` names the rule in the message)."""


def idempotency_key(rule: str, event: Event, index: int) -> str:
    """``rule:<rule>:<event source>:<event id>:<index>``: one job or run per (rule, event,
    action), however often the event is delivered; an event is its (source, id), as in the
    log. A hash of both if the key would be too long."""
    key = f"rule:{rule}:{event.source}:{event.id}:{index}"
    if len(key) <= MAX_KEY_LEN:
        return key
    digest = hashlib.sha256(f"{event.source}\0{event.id}".encode()).hexdigest()
    return f"rule:{rule}:sha256-{digest}:{index}"


# -- field checks --------------------------------------------------------------------------
def _mapping(value: Any, loc: Loc, known: tuple[str, ...],
             required: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRule("must be a mapping", loc)
    for key in value:
        if key not in known:
            raise InvalidRule(f"unknown field {key!r} (known: {', '.join(known)})", (*loc, key))
    for key in required:
        if key not in value:
            raise InvalidRule("is required", (*loc, key))
    return value


def _text(value: Any, loc: Loc, *, limit: int = 4096, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidRule("must be a string", loc)
    if len(value) > limit or (not empty and not value):
        raise InvalidRule(f"must be {0 if empty else 1} to {limit} characters", loc)
    return value


def _word(value: Any, loc: Loc) -> str:
    """A string; a bare number (``[sleep, 5]``) is the word ``"5"``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return _text(value, loc, limit=MAX_SPEC_BYTES, empty=True)


def _words(value: Any, loc: Loc) -> list[str]:
    if isinstance(value, str):
        raise InvalidRule("must be a list of words (argv), not a shell string", loc)
    if not isinstance(value, list):
        raise InvalidRule("must be a list", loc)
    return [_word(item, (*loc, index)) for index, item in enumerate(value)]


def _text_map(value: Any, loc: Loc, *, words: bool = False) -> dict[str, str]:
    if not isinstance(value, dict):
        raise InvalidRule("must be a mapping", loc)
    check = _word if words else _text
    return {_text(k, loc, limit=256): check(v, (*loc, k)) for k, v in value.items()}


def _seconds(value: Any, loc: Loc, low: float, high: float) -> float:
    """Seconds from a number or a duration (``1s``, ``2m``), within [low, high]."""
    if isinstance(value, str):
        try:
            value = parse_walltime(value)
        except InvalidSpec as exc:
            raise InvalidRule(f"{value!r} is not a duration: use e.g. 1s, 30s, 2m", loc) from exc
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidRule(f"must be {low:g} to {high:g} seconds", loc)
    return float(value)


_checked = InvalidRule.located
"""``_checked(loc, build, *args)``: ``build(*args)`` with its errors located at ``loc``."""


# -- submit_job ----------------------------------------------------------------------------
_JOB_FIELDS = ("cluster", "cluster_labels", "command", "script", "spark", "name", "env",
               "working_dir", "resources", "scheduler_options", "labels", "tenant")
_RESOURCE_FIELDS = ("cores", "nodes", "memory", "gpus", "walltime", "partition", "account",
                    "max_cores", "max_nodes")


def resources_from_dict(data: Mapping[str, Any], loc: Loc = ()) -> Resources:
    """:class:`Resources` from workflow-file fields: ``memory`` in MB or ``4G``, ``walltime``
    in seconds or ``2h``; ``partition``/``account`` strings; the rest integers."""
    values: dict[str, Any] = {}
    for key, value in _mapping(data, loc, _RESOURCE_FIELDS).items():
        name, parse = RESOURCE_UNITS.get(key, (key, None))
        if parse is not None and isinstance(value, str):
            value = _checked((*loc, key), parse, value)
        elif key in ("partition", "account"):
            value = _text(value, (*loc, key), limit=128)
        if key not in ("partition", "account") and (
                isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidRule("must be an integer" if parse is None else
                              "must be an integer or a size/duration (4G, 2h)", (*loc, key))
        values[name] = value
    return _checked(loc, lambda: Resources(**values))


def _job_template(data: Any) -> dict[str, Any]:
    """The template's fields checked for type, words as strings."""
    if isinstance(data, dict) and "idempotency_key" in data:
        raise InvalidRule("is set by the rule: rule:<name>:<event id>:<action index>",
                          ("idempotency_key",))
    template = dict(_mapping(data, (), _JOB_FIELDS))
    for key in ("cluster", "name", "working_dir", "tenant"):
        if key in template:
            template[key] = _text(template[key], (key,))
    if "script" in template:
        template["script"] = _text(template["script"], ("script",), limit=MAX_SPEC_BYTES)
    for key in ("command", "scheduler_options"):
        if key in template:
            template[key] = _words(template[key], (key,))
    for key in ("cluster_labels", "labels", "env"):
        if key in template:
            template[key] = _text_map(template[key], (key,), words=key == "env")
    resources_from_dict(template.get("resources", {}), ("resources",))
    if "spark" in template:
        template["spark"] = _spark_template(template["spark"], ("spark",))
    return template


def _spark_template(data: Any, loc: Loc) -> dict[str, Any]:
    """A ``spark`` template's fields checked for type (:data:`spark.TEMPLATE_FIELDS`)."""
    app = dict(_mapping(data, loc, spark.TEMPLATE_FIELDS, required=("application",)))
    for key in ("application", "main_class"):
        if key in app:
            app[key] = _text(app[key], (*loc, key))
    for key in ("arguments", "py_files", "jars", "files"):
        if key in app:
            app[key] = _words(app[key], (*loc, key))
    if "conf" in app:
        app["conf"] = _text_map(app["conf"], (*loc, "conf"), words=True)
    for key in ("driver_cores", "executor_cores", "executors", "driver_memory",
                "executor_memory"):
        if key not in app:
            continue
        value, memory = app[key], key.endswith("memory")
        if isinstance(value, bool) or not (
                isinstance(value, int) or (memory and isinstance(value, str))):
            raise InvalidRule("must be MB (an integer) or a size (2G)" if memory
                              else "must be an integer", (*loc, key))
    return app


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitJob:
    """Submit one job built from ``template`` (the API's job fields, resources in
    workflow-file units) with its templates rendered from the event."""

    kind: ClassVar[str] = "submit_job"
    template: dict[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "template", _job_template(self.template))
        trial = _checked((), self._build, trial_render, "rule", "trial")
        if trial.script is not None:  # the directives of lines without a template, now
            static = _static_directives(self.template["script"])
            try:
                self._directed(replace(trial, script=static))
            except InvalidSpec as exc:
                raise InvalidDirective(exc.message, ("script",)) from exc

    def job_spec(self, event: Event, rule_name: str, index: int) -> JobSpec:
        """The job for ``event``: labelled ``rule: <rule_name>``, keyed so that a redelivered
        event submits nothing new, in the event's tenant (its poster's: a rule acts for who
        sent the event, with that tenant's rights). A template that names a tenant acts for
        that tenant's events only (and for untenanted ones, which only tokens of every tenant
        post). ``InvalidSpec`` if a template's path is missing or the tenants differ."""
        spec = self._directed(self._build(partial(render, event=event), rule_name,
                                          idempotency_key(rule_name, event, index)))
        if not event.tenant:
            return spec
        named = self.template.get("tenant")
        if named is not None and named != event.tenant:
            raise InvalidSpec(f"rule {rule_name!r} submits into tenant {named!r}: an event of "
                              f"tenant {event.tenant!r} may not act there (a rule acts in its "
                              "event's tenant; leave tenant out to follow the event)")
        return replace(spec, tenant=event.tenant)

    def _build(self, text: Callable[[str], str], rule_name: str, key: str) -> JobSpec:
        t = self.template
        return JobSpec(
            cluster=t.get("cluster", ""), cluster_labels=dict(t.get("cluster_labels", {})),
            command=tuple(text(word) for word in t.get("command", ())),
            script=text(t["script"]) if "script" in t else None,
            spark=spark.from_template(t["spark"], text) if "spark" in t else None,
            name=text(t["name"])[:256] if "name" in t else None,
            env={name: text(value) for name, value in t.get("env", {}).items()},
            working_dir=text(t["working_dir"]) if "working_dir" in t else None,
            resources=resources_from_dict(t.get("resources", {}), ("resources",)),
            scheduler_options=tuple(t.get("scheduler_options", ())),
            labels={**{k: text(v) for k, v in t.get("labels", {}).items()}, "rule": rule_name},
            tenant=t.get("tenant", "default"), idempotency_key=key,
        )

    def _directed(self, spec: JobSpec) -> JobSpec:
        """``spec`` with its script's directives taken in where the template gives no value:
        the resources it names (even at their defaults), its name and working_dir; a Spark
        application's size made its resources (:func:`spark.sized`)."""
        t = self.template
        given = {RESOURCE_UNITS.get(k, (k,))[0] for k in t.get("resources", {})}
        if spec.spark is not None:
            return spark.sized(spec, given)
        return sbatch.apply(spec, given | {k for k in ("name", "working_dir") if k in t})

    def to_dict(self) -> dict[str, Any]:
        return {self.kind: copy.deepcopy(self.template)}

    def public_dict(self) -> dict[str, Any]:
        return self.to_dict()


def _static_directives(script: str) -> str:
    """``script`` with each ``#SBATCH`` line that holds a template turned into a bare ``#``
    (a comment, as sbatch reads it): what can be checked before any event."""
    return "\n".join("#" if line.startswith("#SBATCH") and "{{" in line else line
                     for line in script.split("\n"))


# -- start_workflow ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class StartWorkflow:
    """Start a run of the workflow ``spec`` (YAML text; ``filename`` names it in errors) with
    ``params`` rendered from the event. The spec itself is parsed by the caller (the YAML
    edge, :func:`bridgehead.rules.validate_rule`), not here."""

    kind: ClassVar[str] = "start_workflow"
    spec: str
    filename: str = "<spec>"
    params: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.spec, str) or not self.spec.strip():
            raise InvalidRule("must be the workflow's YAML text", ("spec",))
        if len(self.spec) > MAX_SPEC_BYTES or len(self.spec.encode()) > MAX_SPEC_BYTES:
            raise InvalidRule(f"is larger than {MAX_SPEC_BYTES} bytes", ("spec",))
        _text(self.filename, ("filename",), limit=1024)
        for name, value in self.params.items():
            if not isinstance(name, str) or not _PARAM_NAME.fullmatch(name):
                raise InvalidRule(f"{name!r} is not a param name", ("params",))
            _checked(("params", name), trial_render, _word(value, ("params", name)))

    @staticmethod
    def tenant_for(event: Event) -> str:
        """The run's tenant: the event's (its poster's), ``default`` for an untenanted one."""
        return event.tenant or "default"

    def params_for(self, event: Event) -> dict[str, str]:
        """The run's params: each value rendered from ``event``."""
        return {name: render(value, event) for name, value in self.params.items()}

    def idempotency_key(self, rule_name: str, event: Event, index: int) -> str:
        return idempotency_key(rule_name, event, index)

    def to_dict(self) -> dict[str, Any]:
        return {self.kind: {"spec": self.spec, "filename": self.filename,
                            "params": dict(self.params)}}

    def public_dict(self) -> dict[str, Any]:
        return self.to_dict()


# -- webhook -------------------------------------------------------------------------------
def sign(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of body>``: the ``X-Bridgehead-Signature`` header."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the signature of ``body`` with ``secret`` (constant time)."""
    if not isinstance(header, str):
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.encode("utf-8", "replace"))


def _check_url(url: Any) -> None:
    text = _text(url, ("url",), limit=2048)
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError as exc:
        raise InvalidRule(f"is not a valid URL: {exc}", ("url",)) from exc
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidRule("must be an http or https URL", ("url",))
    if parts.username is not None or parts.password is not None:
        raise InvalidRule("may not contain credentials: use secret or headers", ("url",))
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text):
        raise InvalidRule("may not contain spaces or control characters", ("url",))


def _check_headers(headers: Any) -> None:
    if not isinstance(headers, dict) or len(headers) > 32:
        raise InvalidRule("must be a mapping of at most 32 headers", ("headers",))
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise InvalidRule(f"{name!r} is not a header name", ("headers",))
        if _RESERVED_HEADERS.fullmatch(name):
            raise InvalidRule("is set by Bridgehead", ("headers", name))
        if not isinstance(value, str) or not _HEADER_VALUE.fullmatch(value):
            raise InvalidRule("must be printable ASCII text (at most 4096)", ("headers", name))


@dataclass(frozen=True, slots=True, kw_only=True)
class Webhook:
    """POST the event (JSON) to ``url``, signed with ``secret`` if given; retried
    ``retries`` times on connection errors, timeouts, 408, 429 and 5xx, ``backoff_s``
    doubling each time up to ``max_backoff_s``; each attempt at most ``timeout_s``."""

    kind: ClassVar[str] = "webhook"
    url: str
    secret: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        _check_url(self.url)
        if self.secret is not None:
            _text(self.secret, ("secret",), limit=1024)
        _check_headers(self.headers)
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) \
                or not 0 <= self.retries <= 20:
            raise InvalidRule("must be an integer from 0 to 20", ("retries",))
        _seconds(self.backoff_s, ("backoff",), 0, 3600)
        _seconds(self.max_backoff_s, ("max_backoff",), 0, 3600)
        _seconds(self.timeout_s, ("timeout",), 0.001, 300)

    def delay(self, retry: int) -> float:
        """The wait before retry ``retry`` (1-based), without jitter."""
        return min(self.max_backoff_s, self.backoff_s * 2.0 ** min(retry - 1, 64))

    def body(self, event: Event, rule_name: str) -> bytes:
        """The request body: the CloudEvent plus ``"rule"``, compact JSON."""
        return json.dumps({**event.to_cloudevent(), "rule": rule_name},
                          separators=(",", ":")).encode()

    def headers_for(self, event: Event, rule_name: str, body: bytes) -> dict[str, str]:
        """The request headers; ``X-Bridgehead-Delivery`` is the same on every retry."""
        headers = {**self.headers, "Content-Type": "application/json",
                   "X-Bridgehead-Event": event.type,
                   "X-Bridgehead-Delivery": f"{rule_name}:{event.id}"}
        if self.secret is not None:
            headers["X-Bridgehead-Signature"] = sign(self.secret, body)
        return headers

    def to_dict(self) -> dict[str, Any]:
        return {self.kind: {"url": self.url, "secret": self.secret, "headers": dict(self.headers),
                            "retries": self.retries, "backoff": self.backoff_s,
                            "max_backoff": self.max_backoff_s, "timeout": self.timeout_s}}

    def public_dict(self, *, full: bool = True) -> dict[str, Any]:
        """``to_dict`` with the secret and credential-like header values masked; not
        ``full`` (for non-admins): the URL cut to ``scheme://host[:port]`` (its path and
        query may carry a token) and every header value masked."""
        data = self.to_dict()[self.kind]
        if self.secret is not None:
            data["secret"] = SECRET_MASK
        data["headers"] = {k: SECRET_MASK if not full or _SENSITIVE_HEADER.fullmatch(k) else v
                           for k, v in self.headers.items()}
        if not full:
            parts = urlsplit(self.url)
            data["url"] = f"{parts.scheme}://{parts.netloc}"
        return {self.kind: data}


Action = SubmitJob | StartWorkflow | Webhook
ACTION_KINDS = ("submit_job", "start_workflow", "webhook")


# -- rules ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """When an event matches ``pattern``, run ``actions`` in order (if ``enabled``)."""

    name: str
    pattern: Pattern
    actions: tuple[Action, ...]
    description: str = ""
    enabled: bool = True

    def __post_init__(self) -> None:
        _check_head(self.name, self.description, self.enabled)
        if not 1 <= len(self.actions) <= MAX_ACTIONS:
            raise InvalidRule(f"give 1 to {MAX_ACTIONS} actions", ("actions",))

    def matches(self, event: Event) -> bool:
        """Whether the rule is enabled and ``event`` matches its pattern."""
        return self.enabled and self.pattern.matches(event)

    def to_dict(self) -> dict[str, Any]:
        """The stored form, secrets included: :func:`rule_from_dict` reads it back."""
        return {"name": self.name, "description": self.description, "enabled": self.enabled,
                "match": copy.deepcopy(self.pattern.source),
                "actions": [action.to_dict() for action in self.actions]}

    def public_dict(self, *, full: bool = True) -> dict[str, Any]:
        """The form to show: webhook secrets (and credential headers) are ``"***"``; not
        ``full`` (for non-admins), webhook URLs are cut to their host too
        (:meth:`Webhook.public_dict`)."""
        return {**self.to_dict(), "actions": [
            action.public_dict(full=full) if isinstance(action, Webhook)
            else action.public_dict() for action in self.actions]}


def _check_head(name: Any, description: Any, enabled: Any) -> None:
    if not isinstance(name, str) or not _RULE_NAME.fullmatch(name):
        raise InvalidRule(f"{name!r} is not a rule name: use letters, digits, _ . and - (at "
                          "most 128, starting with a letter or digit)", ("name",))
    _text(description, ("description",), empty=True)
    if not isinstance(enabled, bool):
        raise InvalidRule("must be true or false", ("enabled",))


def _action(data: Any) -> Action:
    if not isinstance(data, dict) or len(data) != 1:
        raise InvalidRule(f"must be a mapping with one of {', '.join(ACTION_KINDS)}")
    ((kind, body),) = data.items()
    if kind == "submit_job":
        return _checked((kind,), lambda: SubmitJob(template=body))
    if kind == "start_workflow":
        return _checked((kind,), _start_workflow, body)
    if kind == "webhook":
        return _checked((kind,), _webhook, body)
    raise InvalidRule(f"unknown action {kind!r} (known: {', '.join(ACTION_KINDS)})", (kind,))


def _start_workflow(body: Any) -> StartWorkflow:
    if isinstance(body, dict) and "file" in body:
        raise InvalidRule("is only for rules files (the loader inlines it): send the "
                          "workflow's text as spec", ("file",))
    body = _mapping(body, (), ("spec", "filename", "params"), required=("spec",))
    return StartWorkflow(spec=body["spec"], filename=body.get("filename", "<spec>"),
                         params=_text_map(body.get("params", {}), ("params",), words=True))


def _webhook(body: Any) -> Webhook:
    known = ("url", "secret", "headers", "retries", "backoff", "max_backoff", "timeout")
    body = _mapping(body, (), known, required=("url",))
    return Webhook(
        url=body["url"], secret=body.get("secret"), headers=body.get("headers", {}),
        retries=body.get("retries", 5),
        backoff_s=_seconds(body.get("backoff", 1.0), ("backoff",), 0, 3600),
        max_backoff_s=_seconds(body.get("max_backoff", 60.0), ("max_backoff",), 0, 3600),
        timeout_s=_seconds(body.get("timeout", 10.0), ("timeout",), 0.001, 300))


def rule_from_dict(data: Any) -> Rule:
    """The rule in ``data`` (the API's JSON, the stored form, one item of a rules file).
    ``InvalidRule`` names the field: ``actions[1].webhook.url: ...``."""
    data = _mapping(data, (), ("name", "description", "enabled", "match", "actions"),
                    required=("name", "match", "actions"))
    _check_head(data["name"], data.get("description", ""), data.get("enabled", True))
    actions = data["actions"]
    if not isinstance(actions, list) or not 1 <= len(actions) <= MAX_ACTIONS:
        raise InvalidRule(f"must be a list of 1 to {MAX_ACTIONS} actions", ("actions",))
    try:
        pattern = Pattern(source=data["match"])
    except InvalidPattern as exc:
        raise InvalidRule(exc.detail, ("match", *exc.loc)) from exc
    try:
        built = tuple(_checked(("actions", index), _action, action)
                      for index, action in enumerate(actions))
    except InvalidDirective as exc:
        raise InvalidDirective(f"rule {data['name']!r}: {exc.detail}", exc.loc) from exc
    return Rule(name=data["name"], description=data.get("description", ""),
                enabled=data.get("enabled", True), pattern=pattern, actions=built)
