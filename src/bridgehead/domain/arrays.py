"""Job arrays: one native submission (Slurm's ``sbatch --array``) whose elements are
Bridgehead jobs of their own.

An array job is a *parent* plus one *element* job per index, all created in one store
transaction. Element ids are the parent's id and the index (``<parent>_<index>``, as Slurm
writes ``JOBID_INDEX``), so an agent knows them without asking. Only the parent is claimed
and submitted; when it becomes ``submitted`` with native id ``N`` its elements become
``submitted`` with native ids ``N_<index>`` and are polled one by one. The parent is never
polled: it runs when an element runs and ends when the last element ends (:func:`outcome`).

This module is pure: the rules the store applies, and Slurm's array-id notation.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from bridgehead.domain.jobs import Job, JobSpec, JobState, Transition, Usage, array_indices
from bridgehead.errors import InvalidSpec

ARRAY_BACKENDS = frozenset({"slurm_cli", "slurm_rest", "local"})
"""Backends that run an array job and poll its elements (``N_<index>``): Slurm's one
``sbatch --array`` (or slurmrestd submit with the job's ``array``); the local backend's one
process per element."""
FANOUT_BACKENDS = frozenset({"slurm_cli", "slurm_rest"})
"""Backends on which a workflow fan-out is submitted as one array (:func:`fanout_array`):
one submission instead of one per item."""


def element_id(parent_id: str, index: int) -> str:
    """The Bridgehead id of element ``index`` of the array job ``parent_id``."""
    return f"{parent_id}_{index}"


def element_native_id(parent_native_id: str, index: int) -> str:
    """Slurm's id of one array element: ``JOBID_INDEX``."""
    return f"{parent_native_id}_{index}"


def element_spec(spec: JobSpec) -> JobSpec:
    """What an element's record holds of its parent's spec: where and how big, its name and
    labels (list filters and job events find elements by them), not the script, its argv or
    env (10,000 copies of a 1 MiB script are not stored: read the parent's)."""
    data = spec.to_dict()  # not a request of its own: kept, never validated as one
    data.update(script=None, command=[], args=[], env={}, array=None, idempotency_key=None)
    return JobSpec.from_stored(data)


def elements_of(parent_id: str, spec: JobSpec) -> list[tuple[str, int]]:
    """(element id, index) for each index of ``spec.array``, in index order."""
    assert spec.array is not None
    indices, _throttle = array_indices(spec.array)
    return [(element_id(parent_id, i), i) for i in indices]


def element_jobs(parent: Job, native_id: str) -> list[Job]:
    """The elements of ``parent`` as the store holds them once it is submitted as
    ``native_id`` (what an agent tracks before it hears back from the server)."""
    spec = element_spec(parent.spec)
    return [Job(id=job_id, spec=spec, state=JobState.SUBMITTED, agent_id=parent.agent_id,
                native_id=element_native_id(native_id, index), parent_id=parent.id,
                array_index=index, created_at=parent.created_at)
            for job_id, index in elements_of(parent.id, parent.spec)]


_END_ORDER = (JobState.FAILED, JobState.LOST, JobState.TIMED_OUT, JobState.CANCELLED)


def outcome(parent: Job, elements: Sequence[Job], *, at: float) -> Transition:
    """The parent's end once every element has ended: succeeded only if all did; cancelled
    if a user cancelled the whole array; else the worst element end (failed before lost
    before timed out before cancelled). Its exit code is the first failed element's, its
    usage the sum of the elements' core-seconds (``cores`` is the largest element's, and
    ``elapsed_s`` the total core-seconds over it, so ``core_seconds`` is exactly the sum)."""
    counts = Counter(e.state for e in elements)
    ordered = sorted(elements, key=lambda e: e.array_index or 0)
    bad = [e for e in ordered if e.state is not JobState.SUCCEEDED]
    exit_code: int | None
    if not bad:
        state, reason, exit_code = JobState.SUCCEEDED, None, 0
    else:
        state = (JobState.CANCELLED if parent.cancel_requested else
                 next(s for s in _END_ORDER if counts[s]))
        failed = [e for e in bad if e.exit_code]
        exit_code = failed[0].exit_code if failed else None
        parts = ", ".join(f"{counts[s]} {s.value}" for s in (JobState.SUCCEEDED, *_END_ORDER)
                          if counts[s])
        first = bad[0]
        reason = (f"{len(bad)} of {len(elements)} array elements did not succeed ({parts}); "
                  f"first: index {first.array_index}, {first.state.value}"
                  + (f" with exit code {first.exit_code}" if first.exit_code else ""))
    return Transition(job_id=parent.id, state=state, exit_code=exit_code, reason=reason,
                      usage=total_usage(elements), at=at)


def total_usage(elements: Sequence[Job]) -> Usage | None:
    """The elements' usage summed (see :func:`outcome`); None if none reported any."""
    used = [e.usage for e in elements if e.usage is not None]
    if not used:
        return None
    cores = max(u.cores for u in used) or 1
    core_seconds = sum(u.core_seconds for u in used)
    rss = [u.max_rss_mb for u in used if u.max_rss_mb is not None]
    return Usage(elapsed_s=core_seconds / cores, cores=cores,
                 nodes=max(u.nodes for u in used), max_rss_mb=max(rss) if rss else None)


# -- Slurm's notation --------------------------------------------------------------------
_COMPRESSED = re.compile(r"([0-9]{1,12})_\[([^\]]*)\]")


def expand_native_ids(text: str) -> list[str]:
    """The element ids a Slurm listing line names: ``12_[2-9%2]`` (squeue and sacct compress
    pending elements so, with the throttle) is ``12_2`` ... ``12_9``; any other id is
    itself."""
    match = _COMPRESSED.fullmatch(text)
    if not match:
        return [text]
    try:
        indices, _throttle = array_indices(match[2])
    except InvalidSpec:  # not an index list Slurm would print: keep it whole
        return [text]
    return [element_native_id(match[1], i) for i in indices]


def array_job_id(native_id: str) -> str:
    """The array's id of an element id (``12_3`` -> ``12``); any other id is itself."""
    return native_id.partition("_")[0]


# -- a workflow fan-out as one array -------------------------------------------------------
ARRAY_ENV_BYTES = 512 << 10
"""The most per-element data one fan-out array carries in its environment (sbatch passes
it to every element; exec's limit for environment and arguments is about 2 MiB)."""
_PREFIX = "BH_ARRAY_"
FANOUT_SCRIPT = r"""#!/bin/sh
# Bridgehead: one element of a workflow fan-out submitted as a job array. Element N runs the
# argv held in BH_ARRAY_<N>_ARGV_<i> with the variables BH_ARRAY_<N>_ENVN_<k> set to
# BH_ARRAY_<N>_ENVV_<k>. eval only sees this fixed text with numbers in it: the words and
# values themselves are never parsed by a shell.
a="$SLURM_ARRAY_TASK_ID"
case "$a" in
    ''|*[!0-9]*) echo "bridgehead: not an array element (SLURM_ARRAY_TASK_ID='$a')" >&2
                 exit 127 ;;
esac
eval "n=\"\${BH_ARRAY_${a}_ENVC:-0}\""
k=0
while [ "$k" -lt "$n" ]; do
    eval "export \"\${BH_ARRAY_${a}_ENVN_$k}=\${BH_ARRAY_${a}_ENVV_$k}\""
    k=$((k + 1))
done
eval "n=\"\${BH_ARRAY_${a}_ARGC:-0}\""
i=0
set --
while [ "$i" -lt "$n" ]; do
    eval "set -- \"\$@\" \"\${BH_ARRAY_${a}_ARGV_$i}\""
    i=$((i + 1))
done
exec "$@"
"""


def fanout_array(specs: Sequence[JobSpec], indices: Sequence[int]) -> JobSpec | None:
    """One array job whose element ``indices[i]`` runs ``specs[i]``, when the specs differ
    only in their argv and env (the item), none is an array already and the per-element
    data fits :data:`ARRAY_ENV_BYTES`; else None (submit them one by one)."""
    first = specs[0]

    def rest(spec: JobSpec) -> dict[str, object]:
        data = spec.to_dict()
        return {k: v for k, v in data.items() if k not in ("command", "env", "idempotency_key")}

    if first.spark is not None:  # a Spark application is never a Slurm array
        return None
    if first.array is not None or any(rest(s) != rest(first) for s in specs[1:]) or any(
            key.startswith(_PREFIX) for s in specs for key in s.env):
        return None
    common = {k: v for k, v in first.env.items() if all(s.env.get(k) == v for s in specs)}
    if first.script is not None:  # the same script for all: only its env may differ
        if any(s.env != common for s in specs):
            return None
        return replace(first, array=compress(indices), idempotency_key=None)
    env: dict[str, str] = {}
    for index, spec in zip(indices, specs, strict=True):
        env.update(_element_env(index, spec.command,
                                {k: v for k, v in spec.env.items() if k not in common}))
    if sum(len(k) + len(v.encode()) + 2 for k, v in env.items()) > ARRAY_ENV_BYTES:
        return None
    return replace(first, command=(), script=FANOUT_SCRIPT, env={**common, **env},
                   array=compress(indices), idempotency_key=None)


def _element_env(index: int, argv: Sequence[str], env: dict[str, str]) -> dict[str, str]:
    out = {f"{_PREFIX}{index}_ARGC": str(len(argv)), f"{_PREFIX}{index}_ENVC": str(len(env))}
    out.update({f"{_PREFIX}{index}_ARGV_{i}": word for i, word in enumerate(argv)})
    for k, (name, value) in enumerate(sorted(env.items())):
        out[f"{_PREFIX}{index}_ENVN_{k}"], out[f"{_PREFIX}{index}_ENVV_{k}"] = name, value
    return out


def compress(indices: Sequence[int]) -> str:
    """sbatch's ``--array`` text for ``indices``: runs of consecutive ones as ``a-b``."""
    parts: list[str] = []
    ordered = sorted(set(indices))
    start = prev = ordered[0]
    for i in [*ordered[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ",".join(parts)
