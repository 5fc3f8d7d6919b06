"""Pure domain rules: the transition table, spec validation, ids, the DSN parser."""

from __future__ import annotations

import itertools

import pytest

from bridgehead.config import StoreDsn
from bridgehead.domain.jobs import (
    TERMINAL,
    TRANSITIONS,
    JobSpec,
    JobState,
    Resources,
    can_transition,
    new_job_id,
    predecessors,
)
from bridgehead.errors import ConfigError, InvalidSpec

S = JobState


def test_every_state_has_a_row_and_terminal_states_lead_nowhere() -> None:
    assert set(TRANSITIONS) == set(JobState)
    assert all(not TRANSITIONS[s] for s in TERMINAL)


def test_the_happy_path_and_the_forbidden_shortcuts() -> None:
    path = [S.QUEUED, S.CLAIMED, S.SUBMITTING, S.SUBMITTED, S.RUNNING, S.SUCCEEDED]
    assert all(can_transition(a, b) for a, b in itertools.pairwise(path))
    assert not can_transition(S.QUEUED, S.RUNNING)  # never skip the claim
    assert not can_transition(S.CLAIMED, S.SUBMITTED)  # never skip the submitting record
    assert not can_transition(S.SUBMITTING, S.RUNNING)
    assert not can_transition(S.SUCCEEDED, S.FAILED)
    assert predecessors(S.SUBMITTING) == {S.CLAIMED}
    assert S.TIMED_OUT in TRANSITIONS[S.RUNNING] and S.LOST in TRANSITIONS[S.SUBMITTED]


def test_job_ids_sort_by_creation_and_are_unique() -> None:
    ids = [new_job_id() for _ in range(5000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


@pytest.mark.parametrize("kwargs, words", [
    ({"command": ()}, "exactly one"),
    ({"command": ("a",), "script": "#!/bin/sh\n"}, "exactly one"),
    ({"command": ("a\x00b",)}, "NUL"),
    ({"script": "echo hi"}, "#!"),
    ({"command": ("a",), "working_dir": "tmp"}, "absolute"),
    ({"command": ("a",), "working_dir": "/a/../b"}, ".."),
    ({"command": ("a",), "scheduler_options": ("--ok=1", "-x")}, "--name"),
    ({"command": ("a",), "scheduler_options": ("--x=$(id)\n",)}, "--name"),
    ({"command": ("a",), "env": {"1BAD": "x"}}, "variable"),
    ({"command": ("a",), "tenant": "a b"}, "tenant"),
    ({"command": ("a",), "labels": {"k k": "v"}}, "label"),
])
def test_bad_specs_are_refused_with_a_reason(kwargs: dict, words: str) -> None:
    with pytest.raises(InvalidSpec, match=words.replace("$", r"\$")):
        JobSpec(cluster="c", **kwargs)


def test_resources_are_checked_and_specs_round_trip() -> None:
    with pytest.raises(InvalidSpec, match="cores"):
        Resources(cores=0)
    with pytest.raises(InvalidSpec, match="partition"):
        Resources(partition="gpu;rm")
    spec = JobSpec(cluster="c", command=("echo", "$(x)"), env={"A": "1"},
                   resources=Resources(cores=4, walltime_s=60),
                   scheduler_options=("--qos=high", "--exclusive"), labels={"run": "r"})
    assert JobSpec.from_dict(spec.to_dict()) == spec


def test_store_dsns() -> None:
    assert StoreDsn.parse("sqlite:////var/lib/bh.db") == StoreDsn("sqlite", "/var/lib/bh.db")
    assert StoreDsn.parse("postgresql://u@db:5432/bh").kind == "postgres"
    for bad in ("sqlite://relative.db", "mysql://x/y", "postgresql:///nohost"):
        with pytest.raises(ConfigError):
            StoreDsn.parse(bad)


def test_a_stored_spec_loads_back_equal() -> None:
    spec = JobSpec(cluster="c", script="#!/bin/sh\necho hi\n", env={"A": "1"}, tenant="t",
                   resources=Resources(cores=2, memory_mb=512, partition="p"),
                   scheduler_options=("--qos=x",), labels={"k": "v"}, idempotency_key="key")
    assert JobSpec.from_stored(spec.to_dict()) == spec
    assert JobSpec.from_stored(spec.to_dict()).resources == spec.resources


def test_capacity_refuses_what_can_never_fit_after_the_caps() -> None:
    from bridgehead.domain.clusters import Capacity

    capacity = Capacity.from_info({"capacity": {"cores": 4, "nodes": 1, "source": "4 slots"}})
    assert capacity == Capacity(cores=4, nodes=1, source="4 slots")
    capacity.refuse_unfit(JobSpec(cluster="c", command=("x",), resources=Resources(cores=4)))
    capacity.refuse_unfit(JobSpec(cluster="c", command=("x",),
                                  resources=Resources(cores=64, max_cores=4)))
    with pytest.raises(InvalidSpec, match=r"asks for 5 cores .* at most 4 cores .*4 slots"):
        capacity.refuse_unfit(JobSpec(cluster="c", command=("x",), resources=Resources(cores=5)))
    with pytest.raises(InvalidSpec, match="asks for 2 nodes"):
        capacity.refuse_unfit(JobSpec(cluster="c", command=("x",), resources=Resources(nodes=2)))
    assert Capacity.from_info({}) is None and Capacity.from_info({"capacity": 3}) is None
    unknown = Capacity.from_info({"capacity": {"cores": "many"}})
    assert unknown is not None and unknown.cores is None  # not checked
    unknown.refuse_unfit(JobSpec(cluster="c", command=("x",), resources=Resources(cores=999)))
