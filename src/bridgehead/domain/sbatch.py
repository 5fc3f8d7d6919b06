"""A script's own ``#SBATCH`` directives, read the way sbatch reads them, and what they ask.

sbatch's rules (``src/sbatch/opt.c`` ``_opt_batch_script``/``_get_argument``; sbatch(1)):
- a directive is a line that starts exactly with ``#SBATCH`` (no leading blanks);
- reading stops at the first line that is neither blank nor a comment (its first non-blank
  character is not ``#``): later ``#SBATCH`` lines are plain comments;
- the rest of the line is split into words on blanks; ``"..."``/``'...'`` group, a backslash
  escapes the next character, an unescaped ``#`` starts a comment; an unmatched quote, a word
  that is not an option, and ``hetjob``/``packjob`` lines are errors here (sbatch refuses the
  first two; the third makes a heterogeneous job);
- options are getopt's: ``--opt=value``, ``--opt value``, ``-n 4``, ``-n4``, ``-Hn4``.

Directives are honoured or refused, never replaced in silence: :func:`apply` turns the
resource directives into the job's request (a value the submit gave wins, as on sbatch's
command line), takes ``--job-name``, ``--array`` and an absolute ``--chdir`` when the submit
gave none, and refuses, naming the line, what Bridgehead must own (:data:`REFUSED`). Every
other directive stays in the script, where sbatch honours it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from bridgehead.domain.jobs import JobSpec, Resources, array_indices
from bridgehead.errors import InvalidSpec

SHORT: dict[str, str] = {
    "a": "array", "A": "account", "b": "begin", "B": "extra-node-info", "c": "cpus-per-task",
    "C": "constraint", "d": "dependency", "D": "chdir", "e": "error", "F": "nodefile",
    "G": "gpus", "h": "help", "H": "hold", "i": "input", "I": "immediate", "J": "job-name",
    "k": "no-kill", "L": "licenses", "m": "distribution", "M": "clusters", "n": "ntasks",
    "N": "nodes", "o": "output", "O": "overcommit", "p": "partition", "q": "qos",
    "Q": "quiet", "s": "oversubscribe", "S": "core-spec", "t": "time", "v": "verbose",
    "V": "version", "w": "nodelist", "W": "wait", "x": "exclude",
}
"""sbatch's one-letter options and their long names."""
NO_VALUE = frozenset({
    "contiguous", "exclusive", "export", "get-user-env", "help", "hold", "ignore-pbs",
    "immediate", "no-kill", "no-requeue", "overcommit", "oversubscribe", "parsable",
    "propagate", "quiet", "reboot", "requeue", "spread-job", "test-only", "usage",
    "use-min-nodes", "verbose", "version", "wait", "nice"})
"""Options that take no value, or one only as ``--opt=value`` (getopt's optional argument)."""
ALIASES = {"workdir": "chdir", "cluster": "clusters", "name": "job-name"}

REFUSED: dict[str, str] = {
    "comment": "Bridgehead tags the job with its id there",
    "export": "the job's environment is its env, which Bridgehead passes",
    "export-file": "the job's environment is its env, which Bridgehead passes",
    "get-user-env": "the job's environment is its env, which Bridgehead passes",
    "wrap": "the script itself is the job",
    "parsable": "the agent reads sbatch's answer itself",
    "wait": "the agent follows the job itself",
    "test-only": "the agent must submit the job for real",
    "uid": "jobs run as the agent's user",
    "gid": "jobs run as the agent's group",
    "clusters": "the job's cluster chooses the Slurm cluster",
}
"""Directives Bridgehead must own, and why (the refusal's message)."""
MAPPED = frozenset({"ntasks", "cpus-per-task", "nodes", "ntasks-per-node", "mem", "time",
                    "partition", "account", "gpus", "gres", "job-name", "output", "error",
                    "array", "chdir"})
"""Directives whose value Bridgehead reads (it must understand their spelling)."""
_OWNED = frozenset(REFUSED) | MAPPED


@dataclass(frozen=True, slots=True)
class Directive:
    """One option of an ``#SBATCH`` line: its long name (``cpus-per-task``), its value
    (None for a flag), the 1-based line it is on, and how it was written (``-c 8``)."""

    option: str
    value: str | None
    line: int
    text: str

    def fail(self, why: str) -> InvalidSpec:
        return InvalidSpec(f"script line {self.line}: #SBATCH {self.text}: {why}")


def directives(script: str) -> tuple[Directive, ...]:
    """The script's directives in order; InvalidSpec naming the line for what sbatch would
    refuse (an unmatched quote, a word that is not an option) and for heterogeneous jobs."""
    found: list[Directive] = []
    for lineno, line in enumerate(script.split("\n"), start=1):
        if not line.startswith("#SBATCH"):
            stripped = line.lstrip()
            if stripped and not stripped.startswith("#"):
                break  # the first command: sbatch reads no further
            continue
        words = _words(line[len("#SBATCH"):], lineno)
        if any(w.lower() in ("hetjob", "packjob", ":") for w in words):
            raise InvalidSpec(f"script line {lineno}: heterogeneous jobs (hetjob) are not "
                              "supported: submit each component as a job of its own")
        found += _options(words, lineno)
    return tuple(found)


def _words(text: str, lineno: int) -> list[str]:
    words: list[str] = []
    word: list[str] | None = None
    quote, escaped = "", False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped, word = True, word if word is not None else []
            continue
        elif quote:
            if ch == quote:
                quote = ""
                continue
        elif ch in "\"'":
            quote, word = ch, word if word is not None else []
            continue
        elif ch == "#":
            break
        elif ch.isspace():
            if word is not None:
                words.append("".join(word))
                word = None
            continue
        word = word if word is not None else []
        word.append(ch)
    if quote:
        raise InvalidSpec(f"script line {lineno}: unmatched {quote} in an #SBATCH line")
    if word is not None:
        words.append("".join(word))
    return words


def _options(words: list[str], lineno: int) -> list[Directive]:
    found: list[Directive] = []
    i = 0
    while i < len(words):
        word, i = words[i], i + 1
        if word.startswith("--") and len(word) > 2:
            name, eq, value = word[2:].partition("=")
            name = _long_name(name, lineno, word)
            if not eq and name not in NO_VALUE and i < len(words) and (
                    name in _OWNED or not words[i].startswith("-")):
                value, i = words[i], i + 1
                word = f"{word} {value}"
            found.append(Directive(name, value if eq or value else None, lineno, word))
        elif word.startswith("-") and len(word) > 1:
            j = 1
            while j < len(word):
                letter = word[j]
                if letter not in SHORT:
                    raise InvalidSpec(f"script line {lineno}: -{letter} is not an sbatch "
                                      "option")
                name = SHORT[letter]
                if name in NO_VALUE:
                    found.append(Directive(name, None, lineno, f"-{letter}"))
                    j += 1
                    continue
                value = word[j + 1:]
                if not value:
                    if i >= len(words):
                        raise InvalidSpec(f"script line {lineno}: -{letter} needs a value")
                    value, i = words[i], i + 1
                found.append(Directive(name, value, lineno, f"-{letter} {value}"))
                break
        else:
            raise InvalidSpec(f"script line {lineno}: {word!r} is not an option (sbatch "
                              "refuses it: 'Invalid directive found in batch script')")
    return found


def _long_name(name: str, lineno: int, word: str) -> str:
    name = ALIASES.get(name, name)
    if name in _OWNED or name in NO_VALUE:
        return name
    near = sorted(o for o in _OWNED if o.startswith(name))
    if near:  # getopt takes unambiguous abbreviations: never misread one of ours
        raise InvalidSpec(f"script line {lineno}: #SBATCH {word}: write the option's full "
                          f"name ({', '.join('--' + o for o in near)})")
    return name


# -- values ------------------------------------------------------------------------------------
_TIME = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")
_MEM = re.compile(r"(\d+)([KMGT]?)", re.IGNORECASE)
_NODES = re.compile(r"([1-9]\d{0,5})(?:-([1-9]\d{0,5}))?")
_COUNT = re.compile(r"[1-9]\d{0,6}")
_GPUS = re.compile(r"(?:[A-Za-z0-9_.-]+:)?([1-9]\d{0,5})")
_GRES_GPU = re.compile(r"gpu(?::[A-Za-z0-9_.-]+)?:([1-9]\d{0,5})")
UNLIMITED = ("infinite", "unlimited")


def time_s(text: str) -> int | None:
    """sbatch's ``--time`` in seconds: ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``,
    ``D-H:M:S``; None for ``UNLIMITED``/``INFINITE``. ValueError otherwise."""
    if text.lower() in UNLIMITED:
        return None
    m = _TIME.fullmatch(text)
    if not m:
        raise ValueError(text)
    days, a, b, c = (int(g) if g is not None else None for g in m.groups())
    if days is None:  # M, M:S or H:M:S
        if c is not None:
            return a * 3600 + (b or 0) * 60 + c  # type: ignore[operator]
        return (a or 0) * 60 + (b or 0)
    return days * 86400 + (a or 0) * 3600 + (b or 0) * 60 + (c or 0)


def memory_mb(text: str) -> int:
    """sbatch's ``--mem`` in MB: a number with an optional K, M, G or T (default M)."""
    m = _MEM.fullmatch(text)
    if not m:
        raise ValueError(text)
    factor = {"": 1, "M": 1, "K": 1 / 1024, "G": 1024, "T": 1024 * 1024}[m[2].upper()]
    return math.ceil(int(m[1]) * factor)


@dataclass(frozen=True, slots=True, kw_only=True)
class Asked:
    """What a script's directives ask, as values (None: not asked; the last one wins, as in
    sbatch). ``cores`` is ntasks x cpus-per-task, ntasks being --ntasks, else
    --ntasks-per-node x the least --nodes, else the least --nodes (one task per node)."""

    ntasks: int | None = None
    cpus_per_task: int | None = None
    nodes: str | None = None
    ntasks_per_node: int | None = None
    memory_mb: int | None = None
    walltime_s: int | None = None
    partition: str | None = None
    account: str | None = None
    gpus: int | None = None
    name: str | None = None
    output: str | None = None
    error: str | None = None
    array: str | None = None
    chdir: str | None = None

    @property
    def min_nodes(self) -> int | None:
        return int(self.nodes.partition("-")[0]) if self.nodes else None

    @property
    def tasks(self) -> int | None:
        if self.ntasks is not None:
            return self.ntasks
        if self.ntasks_per_node is not None:
            return self.ntasks_per_node * (self.min_nodes or 1)
        return self.min_nodes

    @property
    def cores(self) -> int | None:
        if self.tasks is None and self.cpus_per_task is None:
            return None
        return (self.tasks or 1) * (self.cpus_per_task or 1)


def asked(found: Sequence[Directive]) -> Asked:
    """What ``found`` asks; InvalidSpec naming the line for a refused directive or a value
    that cannot be read."""
    values: dict[str, object] = {}
    for d in found:
        if d.option in REFUSED:
            raise d.fail(f"not allowed: {REFUSED[d.option]}")
        if d.option in MAPPED and d.value is None:
            raise d.fail("needs a value")
        if d.option in MAPPED:
            values.update(_read(d))
    return Asked(**values)  # type: ignore[arg-type]


def _read(d: Directive) -> dict[str, object]:
    value = d.value or ""
    match d.option:
        case "ntasks" | "cpus-per-task" | "ntasks-per-node":
            if not _COUNT.fullmatch(value):
                raise d.fail("expected a positive whole number")
            return {d.option.replace("-", "_"): int(value)}
        case "nodes":
            m = _NODES.fullmatch(value)
            if not m or (m[2] and int(m[2]) < int(m[1])):
                raise d.fail("expected N or MIN-MAX nodes")
            return {"nodes": value}
        case "mem":
            try:
                mb = memory_mb(value)
            except ValueError:
                raise d.fail("expected a size such as 4000, 500M or 4G") from None
            return {"memory_mb": mb or None}  # --mem=0 (a whole node's memory) stays sbatch's
        case "time":
            try:
                return {"walltime_s": time_s(value) or None}
            except ValueError:
                raise d.fail("expected minutes, M:S, H:M:S, D-H, D-H:M or D-H:M:S") from None
        case "partition" | "account":  # a list (a,b) is left to sbatch
            return {d.option: value} if _NAME.fullmatch(value) else {}
        case "gpus":
            m = _GPUS.fullmatch(value)
            return {"gpus": int(m[1])} if m else {}
        case "gres":
            counts = [m[1] for part in value.split(",") if (m := _GRES_GPU.fullmatch(part))]
            return {"gpus": int(counts[0])} if len(counts) == 1 else {}
        case "job-name":
            return {"name": value}
        case "output" | "error":
            check_log_pattern(value, d)
            return {d.option: value}
        case "chdir":
            if not value.startswith("/") or ".." in value.split("/"):
                raise d.fail("give an absolute path without '..' (the job's working_dir)")
            return {"chdir": value}
    try:
        array_indices(value)
    except InvalidSpec as exc:
        raise d.fail(exc.message) from None
    return {"array": value}


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}")
GIVEN_FIELDS = frozenset({"cores", "nodes", "memory_mb", "gpus", "walltime_s", "partition",
                          "account", "name", "array", "working_dir"})
"""What a submit may give explicitly, beating a directive: Resources fields and three more."""


def apply(spec: JobSpec, given: Collection[str]) -> JobSpec:
    """``spec`` with its script's directives taken in: each of :data:`GIVEN_FIELDS` not in
    ``given`` (what the submit set explicitly) comes from the directives that ask for it.
    Caps (``max_cores``/``max_nodes``) are kept: they clamp directives as they clamp any
    request. InvalidSpec naming the line for a directive that is refused or unreadable."""
    if spec.script is None:
        return spec
    want = asked(directives(spec.script))
    r = spec.resources
    res: dict[str, object] = {}
    for field, value in (("cores", want.cores), ("nodes", want.min_nodes),
                         ("memory_mb", want.memory_mb), ("walltime_s", want.walltime_s),
                         ("partition", want.partition), ("account", want.account),
                         ("gpus", want.gpus)):
        if value is not None and field not in given and value != getattr(r, field):
            res[field] = value
    top: dict[str, object] = {}
    for field, value in (("name", want.name), ("array", want.array),
                         ("working_dir", want.chdir)):
        if value is not None and field not in given and getattr(spec, field) is None:
            top[field] = value
    if not res and not top:
        return spec
    return replace(spec, resources=replace(r, **res) if res else r,  # type: ignore[arg-type]
                   **top)  # type: ignore[arg-type]


def given_by_default(spec: JobSpec) -> frozenset[str]:
    """What a spec sets to other than the defaults: how the SDK, CLI and server-side makers
    of jobs (workflows, rules) say what they gave, since a default means "not asked"."""
    default = Resources()
    given = {f for f in GIVEN_FIELDS - {"name", "array", "working_dir"}
             if getattr(spec.resources, f) != getattr(default, f)}
    given |= {f for f in ("name", "array", "working_dir") if getattr(spec, f) is not None}
    return frozenset(given)


# -- log paths ---------------------------------------------------------------------------------
_PATTERN = re.compile(r"%(\d*)(.)")
_EXPANDED = frozenset("%AajJNux")
_NO_NODE = frozenset({"", "n/a", "none", "none assigned", "(null)"})
"""How Slurm's tools write "no node yet" (squeue, sacct, slurmrestd)."""


def check_log_pattern(value: str, d: Directive) -> None:
    """Refuse a ``-o``/``-e`` pattern Bridgehead could not find the file of."""
    if "\\" in value:
        raise d.fail("a backslash in a log path is not supported (it turns patterns off)")
    for m in _PATTERN.finditer(value):
        if m[2] not in _EXPANDED:
            raise d.fail(f"%{m[2]} is not supported in a log path: Bridgehead reads the log "
                         "from the head node and can expand only %j %x %u %A %a %J %N %%")


def needs_node(pattern: str) -> bool:
    """Does ``pattern`` name its file by the node the job runs on (``%N``)? Its path is then
    known only once the job has started."""
    return pattern.lower() != "none" and any(m[2] == "N" for m in _PATTERN.finditer(pattern))


def first_host(nodelist: str) -> str | None:
    """The first host of a Slurm node list (``node[01-03,07],gpu1`` -> ``node01``): the node
    a batch script runs on; None for no node (a pending job's empty list, ``None assigned``)."""
    text = nodelist.strip()
    if text.lower() in _NO_NODE:
        return None
    depth, end = 0, len(text)
    for i, ch in enumerate(text):  # the first name ends at a comma outside brackets
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            end = i
            break
    first = re.sub(r"\[([^\]]*)\]", lambda m: re.split(r"[,-]", m[1])[0], text[:end])
    return first or None


def log_path(pattern: str, *, working_dir: str, job_id: str, name: str, user: str,
             array_job_id: str | None = None, array_task_id: str | None = None,
             node: str | None = None) -> str:
    """The file sbatch's ``pattern`` names: ``%j``/``%J`` the job id, ``%x`` its name, ``%u``
    the user, ``%A``/``%a`` the array's job id and index (for a plain job: the job id and
    4294967294, as Slurm writes), ``%N`` the node the batch script runs on (``node``; a
    ValueError without it), ``%%`` a percent; ``%5j`` pads numbers with zeros; relative to the
    working dir; ``none`` is /dev/null."""
    if pattern.lower() == "none":
        return "/dev/null"
    if node is None and needs_node(pattern):
        raise ValueError(f"{pattern}: %N needs the job's node")
    values = {"j": job_id, "J": job_id, "x": name, "u": user, "%": "%", "N": node or "",
              "A": array_job_id or job_id, "a": array_task_id or "4294967294"}

    def one(m: re.Match[str]) -> str:
        value = values[m[2]]
        return value.zfill(int(m[1])) if m[1] and m[2] != "N" and value.isdigit() else value

    path = _PATTERN.sub(one, pattern)
    return path if path.startswith("/") else f"{working_dir.rstrip('/')}/{path}"
