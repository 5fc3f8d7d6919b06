"""slurm_rest against every OpenAPI version the lab serves: the backend contract suite of
test_backends.py on gamma (Slurm 24.11) forcing each of v0.0.40, v0.0.41 and v0.0.42, and on
alpha (22.05) forcing v0.0.38; then what the newer versions do better (the cheap poll, batch
cancel, script arguments in argv) and the two ways to a token (a file, scontrol token)."""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridgehead.backends.base import Backend, NativeStatus
from bridgehead.backends.slurm_rest import SlurmRestBackend
from bridgehead.backends.slurm_rest_api import status_of
from bridgehead.domain.jobs import JobSpec, JobState, Resources
from bridgehead.errors import BackendUnavailable
from tests.slurm import test_backends as contract
from tests.slurm.conftest import Lab, Target

pytestmark = pytest.mark.slurm
VERSIONS = [Target("slurm_rest", "gamma", {"rest_version": v})
            for v in ("v0.0.40", "v0.0.41", "v0.0.42")] + [
    Target("slurm_rest", "alpha", {"rest_version": "v0.0.38"})]

# the contract's tests that take the `backend` fixture, run here with this module's fixture
globals().update({name: test for name, test in vars(contract).items()
                  if name.startswith("test_") and "backend" in inspect.signature(test).parameters})


def token_file(lab: Lab, cluster: str, tmp_path: Path) -> Path | None:
    """A copy of the lab's JWT file (gamma), mode 600; None where the agent makes its own."""
    given = lab.cluster(cluster).get("rest_token_file")
    if not given:
        return None
    path = tmp_path / "slurm.jwt"
    shutil.copyfile(given, path)
    path.chmod(0o600)
    return path


def rest_backend(lab: Lab, target: Target, tmp_path: Path) -> SlurmRestBackend:
    options = dict(target.options)
    if (path := token_file(lab, target.cluster, tmp_path)) is not None:
        options["rest_token_file"] = path
    backend = lab.backend("slurm_rest", target.cluster, lab.job_root(target.cluster, tmp_path),
                          **options)
    assert isinstance(backend, SlurmRestBackend)
    return backend


@pytest.fixture(params=VERSIONS, ids=lambda t: t.id)
async def backend(request: pytest.FixtureRequest, lab: Lab, tmp_path: Path
                  ) -> AsyncIterator[Backend]:
    b = rest_backend(lab, request.param, tmp_path)
    yield b
    await b.close()


@pytest.fixture(params=VERSIONS[:3], ids=lambda t: t.id)
async def rest24(request: pytest.FixtureRequest, lab: Lab, tmp_path: Path
                 ) -> AsyncIterator[SlurmRestBackend]:
    b = rest_backend(lab, request.param, tmp_path)
    yield b
    await b.close()


def gamma(**kw: object) -> JobSpec:
    return JobSpec(**{"cluster": "gamma", **kw})  # type: ignore[arg-type]


async def test_the_forced_version_is_spoken(backend: SlurmRestBackend) -> None:
    await backend.poll(["987654"])
    assert backend.settings.rest_version is not None
    assert backend.calls["openapi"] == 1
    api = await backend._version()
    assert api.name == backend.settings.rest_version
    assert (api.state_poll, api.batch_cancel, api.argv) == ((api.name != "v0.0.38",) * 3)


async def test_negotiation_picks_v0_0_42_on_24_11(lab: Lab, tmp_path: Path) -> None:
    b = rest_backend(lab, Target("slurm_rest", "gamma"), tmp_path)
    try:
        assert (await b._version()).name == "v0.0.42"
    finally:
        await b.close()


async def test_the_cheap_poll_asks_full_records_only_of_jobs_that_ended(
        rest24: SlurmRestBackend) -> None:
    sleepers = [await rest24.submit(f"bh-st-s{i}", gamma(command=("sleep", "60")))
                for i in range(3)]
    quick = [await rest24.submit(f"bh-st-q{i}", gamma(command=("true",))) for i in range(3)]
    try:
        for _ in range(60):
            rest24.calls.clear()
            statuses = await rest24.poll([*sleepers, *quick, "987654"])
            assert rest24.calls["states"] == 1 and rest24.calls["jobs"] == 0, rest24.calls
            ended = [n for n in quick if n in statuses and statuses[n].state.terminal]
            assert rest24.calls["job"] == len(ended), (rest24.calls, statuses)
            if len(ended) == 3 and all(statuses[n].state is JobState.RUNNING for n in sleepers):
                break
            await asyncio.sleep(0.5)
        assert {statuses[n].state for n in quick} == {JobState.SUCCEEDED}
        assert "987654" not in statuses
    finally:
        rest24.calls.clear()
        await rest24.cancel([*sleepers, "987654"])
    assert rest24.calls["cancel"] == 1  # one batch DELETE, an unknown id no error
    ends = [await contract.until(rest24, n) for n in sleepers]
    assert {(s.state, s.exit_code) for s in ends} == {(JobState.CANCELLED, 143)}


async def test_script_arguments_reach_the_script_in_order(rest24: SlurmRestBackend) -> None:
    script = '#!/bin/sh\nprintf "%s|" "$#" "$@"\n'
    native = await rest24.submit("bh-args", gamma(script=script, args=("a", "b c", "", "$HOME")))
    status = await contract.until(rest24, native)
    assert status.state is JobState.SUCCEEDED, status
    assert await contract.log_of(rest24, native) == "4|a|b c||$HOME|"


async def test_a_renewed_token_file_is_taken_without_a_restart(lab: Lab, tmp_path: Path) -> None:
    b = rest_backend(lab, Target("slurm_rest", "gamma"), tmp_path)
    path = b.settings.rest_token_file
    assert path is not None
    good = path.read_text()
    try:
        assert await b.poll(["987654"]) == {}
        bad = tmp_path / "bad.jwt"
        bad.write_text(good[:-8] + "AAAAAAAA")  # signature broken: 511 / 502 from slurmrestd
        bad.chmod(0o600)
        os.replace(bad, path)
        with pytest.raises(BackendUnavailable):
            await b.poll(["987654"])
        renewed = tmp_path / "renewed.jwt"
        renewed.write_text(good)
        renewed.chmod(0o600)
        os.replace(renewed, path)
        assert await b.poll(["987654"]) == {}
        assert b.calls["scontrol_token"] == 0
    finally:
        await b.close()


async def test_scontrol_token_is_the_other_way(lab: Lab, tmp_path: Path) -> None:
    """No token file: the agent makes its JWT with the cluster's own scontrol (gamma's)."""
    b = lab.backend("slurm_rest", "gamma", lab.job_root("gamma", tmp_path))
    assert isinstance(b, SlurmRestBackend)
    try:
        native = await b.submit("bh-minted", gamma(command=("true",)))
        assert (await contract.until(b, native)).state is JobState.SUCCEEDED
        assert b.calls["scontrol_token"] == 1
    finally:
        await b.close()


async def test_accounting_reads_exits_as_slurmctld_does(rest24: SlurmRestBackend) -> None:
    """24.11's accounting: a cancelled job's own exit reads 0, its batch step has SIGTERM."""
    exit3 = await rest24.submit("bh-db-exit3", gamma(command=("sh", "-c", "exit 3")))
    running = await rest24.submit("bh-db-cancel", gamma(command=("sleep", "60")))
    held = await rest24.submit("bh-db-held", gamma(command=("true",),
                                                   scheduler_options=("--hold",)))
    await contract.until(rest24, running, frozenset({JobState.RUNNING}))
    await rest24.cancel([running, held])
    live = {n: await contract.until(rest24, n) for n in (exit3, running, held)}
    api = await rest24._version()
    accounted: dict[str, NativeStatus] = {}
    for _ in range(60):  # slurmdbd lags a little behind slurmctld
        accounted = {n: status_of(r) for n, r in (await rest24._accounted(
            api, [exit3, running, held])).items() if r.state not in ("PENDING", "RUNNING")}
        if len(accounted) == 3:
            break
        await asyncio.sleep(0.5)
    for native in (exit3, running, held):
        status = accounted[native]
        assert (status.state, status.exit_code) == (live[native].state, live[native].exit_code)
    assert [live[n].exit_code for n in (exit3, running, held)] == [3, 143, None]


async def test_walltime_ends_timed_out_through_v0_0_40(lab: Lab, tmp_path: Path) -> None:
    """Slurm keeps time limits in minutes: this takes a little over one minute."""
    b = rest_backend(lab, VERSIONS[0], tmp_path)
    try:
        native = await b.submit("bh-rest-walltime", gamma(
            command=("sleep", "600"), resources=Resources(walltime_s=30)))
        status = await contract.until(b, native, timeout=240)
        assert (status.state, status.exit_code, status.reason) == (
            JobState.TIMED_OUT, 143, "walltime exceeded")
    finally:
        await b.close()
