"""A job cannot take its agent's token: real server and agent processes, real jobs.

A job looks for the token everywhere a process of the same user can: its own environment, the
environment of its supervisor (``/proc/$PPID/environ``) and the command lines and environments
of all its ancestors. The agent reads its token from a mode-600 file (a looser one is refused,
as ssh refuses a private key). With ``run_as`` the job runs as another user, who can read
neither the agent's state dir nor its token file. However the agent is told its token file
(the flag, ``token_file`` in config.toml, ``BRIDGEHEAD_TOKEN_FILE``), the token is in no
process's command line or environment."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridgehead.client import Client
from bridgehead.domain.jobs import Job, JobSpec, JobState
from tests.conftest import IN_CI
from tests.procs import Proc, Stack, env_for, stack, start_up

pytestmark = pytest.mark.slow

RUN_AS = "bh-isolation-test"
PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
"""An interpreter every user may run (the test's own may live in root's home)."""

# Print what this process and its ancestors show of themselves: {pid: {cmdline, environ}}
# (None where the kernel refuses to tell), and what the job may read of the given paths.
SNOOP = r"""
import json, os, sys
def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError as exc:
        return None
seen, pid = {}, os.getpid()
while pid > 1:
    seen[pid] = {"cmdline": read(f"/proc/{pid}/cmdline"), "environ": read(f"/proc/{pid}/environ")}
    status = read(f"/proc/{pid}/status") or ""
    pid = next((int(l.split()[1]) for l in status.splitlines() if l.startswith("PPid:")), 1)
reads = {}
for path in sys.argv[1:]:
    try:
        reads[path] = sorted(os.listdir(path)) if os.path.isdir(path) else read(path)
    except OSError:
        reads[path] = None
print(json.dumps({"uid": os.getuid(), "cwd": os.getcwd(), "ppid": os.getppid(),
                  "seen": seen, "reads": reads}))
"""


def snoop(bh: Client, *paths: Path, **kw: object) -> tuple[Job, dict]:
    job = bh.submit(JobSpec(cluster="local", command=(PYTHON, "-c", SNOOP,
                                                       *map(str, paths)), **kw))
    job = bh.wait(job.id, until="terminal", timeout=60)
    out, _, _ = bh.read_logs(job.id)
    assert job.state is JobState.SUCCEEDED, (job.reason, bh.read_logs(job.id, stream="stderr"))
    return job, json.loads(out)


def places_holding(found: dict, token: str) -> list[str]:
    return [f"{what} of pid {pid}" for pid, info in found["seen"].items()
            for what, text in info.items() if text and token in text]


@pytest.fixture
def home() -> Iterator[Path]:
    """A home others may traverse (pytest's tmp dirs are private to root), so only the
    agent's own modes keep other users out of its files."""
    path = Path(tempfile.mkdtemp(prefix="bh-isolation-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_job_finds_the_token_file_agents_token_nowhere(home: Path) -> None:
    with stack(home) as s, Client(s.server.url, s.admin) as bh:
        assert s.agents[0].args.count("--token") == 0
        _, found = snoop(bh)
        assert found["uid"] == os.getuid() and len(found["seen"]) >= 3  # job, supervisor, agent
        assert places_holding(found, s.agent_token) == []
        supervisor = found["seen"][str(found["ppid"])]["environ"]
        assert supervisor is not None and "BRIDGEHEAD_" not in supervisor.replace(
            "BRIDGEHEAD_JOB_ID", "")  # a minimal environment, not the agent's


def test_a_token_given_by_environment_is_scrubbed_before_jobs_start(home: Path) -> None:
    """The compatible way (BRIDGEHEAD_TOKEN) warns; the agent's own initial environment still
    shows it to this user (the warning says so), but no supervisor or job inherits it."""
    with stack(home, agent=False) as s, Client(s.server.url, s.admin) as bh:
        agent = s.start_agent(token_file=False)
        assert "--token-file" not in agent.args and agent.env["BRIDGEHEAD_TOKEN"]
        _, found = snoop(bh)
        job_pid, supervisor_pid = (int(p) for p in list(found["seen"])[:2])
        assert str(supervisor_pid) == str(found["ppid"])
        holding = places_holding(found, s.agent_token)
        assert f"environ of pid {job_pid}" not in holding
        assert f"environ of pid {supervisor_pid}" not in holding
        assert agent.popen is not None
        assert all(place.endswith(f"pid {agent.popen.pid}") for place in holding)
        assert "visible to every process of this user" in agent.output()


@pytest.mark.parametrize("given_by", ["config.toml", "BRIDGEHEAD_TOKEN_FILE"])
def test_a_token_file_from_config_or_environment_stays_out_of_every_argv_and_environment(
    home: Path, given_by: str
) -> None:
    """``token_file`` in ``[agent]`` of config.toml, or ``BRIDGEHEAD_TOKEN_FILE``: the agent
    works (its job runs) and the token is in no process's command line or environment, as
    the job sees them and as root sees every process on the host."""
    with stack(home, agent=False) as s, Client(s.server.url, s.admin) as bh:
        agent = agent_by_token_file(s, given_by)
        try:
            _, found = snoop(bh)
            assert places_holding(found, s.agent_token) == []
            assert agent.popen is not None and str(agent.popen.pid) in found["seen"]  # ancestor
            assert everywhere_holding(s.agent_token) == []
            state_dir = str(s.home / "agent-by-setting")  # the scan reads the agent's argv
            assert f"cmdline of pid {agent.popen.pid}" in everywhere_holding(state_dir)
            assert "visible to every process" not in agent.output()
        finally:
            agent.kill()


def agent_by_token_file(s: Stack, given_by: str) -> Proc:
    """A local agent told its mode-600 token file only by config.toml or the environment
    (no --token-file, no --token, no BRIDGEHEAD_TOKEN)."""
    token = s.home / "by-setting.token"
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(s.agent_token + "\n")
    env: dict[str, str] = {}
    if given_by == "config.toml":
        (s.home / "config.toml").write_text(f"[agent]\ntoken_file = {json.dumps(str(token))}\n")
    else:
        env["BRIDGEHEAD_TOKEN_FILE"] = str(token)
    agent = Proc(["agent", "--cluster", "local", "--server", s.server.url, "--state-dir",
                  str(s.home / "agent-by-setting"), "--slots", "2", "--poll-interval", "0.2"],
                 s.home / "agent-by-setting.log", env_for(s.home, **env)).start()
    assert all(s.agent_token not in part for part in [*agent.args, *agent.env.values()])
    return agent


def everywhere_holding(token: str) -> list[str]:
    """The processes on this host whose command line or environment holds ``token`` (all of
    them are readable to root; others' are skipped)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        for what in ("cmdline", "environ"):
            try:
                text = (proc / what).read_bytes()
            except OSError:  # gone, or not ours to read
                continue
            if token.encode() in text:
                found.append(f"{what} of pid {proc.name}")
    return found


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_token_file_others_may_read_is_refused(home: Path, mode: int) -> None:
    token = home / "agent.token"
    token.write_text("bh_secret\n")
    token.chmod(mode)
    r = agent_cli(home, "--token-file", str(token))
    assert r.returncode == 2, r.stderr
    [line] = r.stderr.strip().splitlines()
    assert str(token) in line and "chmod 600" in line


def test_a_token_file_of_another_user_is_refused(home: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file to another user")
    token = home / "agent.token"
    token.write_text("bh_secret\n")
    token.chmod(0o600)
    os.chown(token, 65534, 65534)
    r = agent_cli(home, "--token-file", str(token))
    assert r.returncode == 2 and str(token) in r.stderr and "owned by uid 65534" in r.stderr


def agent_cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridgehead", "agent", "--server", "http://127.0.0.1:9",
         "--state-dir", str(home / "state"), *args],
        env=env_for(home, **env), capture_output=True, text=True, timeout=60)


# -- run_as ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def job_user() -> pwd.struct_passwd:
    """A throwaway user (created if missing; needs root)."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("run_as tests need root in CI (to create a user and switch to it)")
        pytest.skip("run_as tests need root: to create a user and switch to it")
    try:
        return pwd.getpwnam(RUN_AS)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", RUN_AS], check=True, capture_output=True)
        return pwd.getpwnam(RUN_AS)


def test_run_as_runs_jobs_as_that_user_away_from_the_agents_files(
    home: Path, job_user: pwd.struct_passwd
) -> None:
    with stack(home, BRIDGEHEAD_RUN_AS_TENANTS=json.dumps({"lab": RUN_AS})) as s, \
            Client(s.server.url, s.admin) as bh:
        agent = s.agents[0]
        _, own = snoop(bh)  # the default tenant: no run_as, the agent's user
        assert own["uid"] == os.getuid()
        _, found = snoop(bh, agent.state_dir, agent.token_file, agent.state_dir / "outbox.db",
                           tenant="lab")
        assert found["uid"] == job_user.pw_uid
        assert found["reads"] == {str(p): None for p in (
            agent.state_dir, agent.token_file, agent.state_dir / "outbox.db")}
        supervisor = found["seen"][str(found["ppid"])]
        assert supervisor["environ"] is None  # another user's: the kernel keeps it
        assert places_holding(found, s.agent_token) == []
        assert found["cwd"] == (job_user.pw_dir if os.path.isdir(job_user.pw_dir) else "/")
        script = bh.wait(bh.submit(JobSpec(cluster="local", tenant="lab",
                                           script="#!/bin/sh\nid -u\n")).id,
                         until="terminal", timeout=60)
        assert script.state is JobState.SUCCEEDED
        assert bh.read_logs(script.id)[0] == f"{job_user.pw_uid}\n".encode()
        private = bh.wait(bh.submit(JobSpec(cluster="local", tenant="lab", command=("true",),
                                            working_dir=str(agent.state_dir))).id,
                          until="terminal", timeout=60)
        assert private.state is JobState.FAILED
        assert f"user {RUN_AS!r} cannot enter the working dir" in (private.reason or "")


def test_the_agent_wide_run_as_runs_every_tenants_jobs_as_that_user(
    home: Path, job_user: pwd.struct_passwd
) -> None:
    """``run_as`` (not per tenant): the jobs of every tenant run as that user, who cannot
    read the agent's state dir or token file; a tenant of ``run_as_tenants`` still wins."""
    me = pwd.getpwuid(os.getuid()).pw_name
    with stack(home, BRIDGEHEAD_RUN_AS=RUN_AS,
               BRIDGEHEAD_RUN_AS_TENANTS=json.dumps({"own": me})) as s, \
            Client(s.server.url, s.admin) as bh:
        agent = s.agents[0]
        private = (agent.state_dir, agent.token_file)
        for tenant in ("default", "lab"):
            _, found = snoop(bh, *private, tenant=tenant)
            assert found["uid"] == job_user.pw_uid, tenant
            assert found["reads"] == {str(p): None for p in private}, tenant
            assert places_holding(found, s.agent_token) == []
        _, own = snoop(bh, tenant="own")
        assert own["uid"] == os.getuid()
        script = bh.wait(bh.submit(JobSpec(cluster="local", script="#!/bin/sh\nid -u\n")).id,
                         until="terminal", timeout=60)
        assert script.state is JobState.SUCCEEDED
        assert bh.read_logs(script.id)[0] == f"{job_user.pw_uid}\n".encode()


def test_run_as_needs_a_user_that_exists_and_a_slurm_agent_refuses_it(home: Path) -> None:
    token = home / "agent.token"
    token.write_text("bh_secret\n")
    token.chmod(0o600)
    r = agent_cli(home, "--token-file", str(token), BRIDGEHEAD_RUN_AS="bh-no-such-user")
    assert r.returncode == 2 and "run_as" in r.stderr and "bh-no-such-user" in r.stderr, r.stderr
    r = agent_cli(home, "--token-file", str(token), "--backend", "slurm_cli",
                  BRIDGEHEAD_RUN_AS="nobody")
    assert r.returncode == 2 and "run_as is not supported on the slurm_cli" in r.stderr


def test_run_as_is_refused_to_an_agent_that_may_not_switch_users(
    home: Path, job_user: pwd.struct_passwd
) -> None:
    """An agent without CAP_SETUID/CAP_SETGID (here root with both dropped) naming run_as
    stops at start with a clear error."""
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is needed to drop the capabilities")
    token = home / "agent.token"
    token.write_text("bh_secret\n")
    token.chmod(0o600)
    r = subprocess.run(
        ["setpriv", "--bounding-set", "-setuid,-setgid", sys.executable, "-m", "bridgehead",
         "agent", "--token-file", str(token), "--state-dir", str(home / "state"),
         "--server", "http://127.0.0.1:9"],
        env=env_for(home, BRIDGEHEAD_RUN_AS=RUN_AS), capture_output=True, text=True,
        timeout=60)
    assert r.returncode == 2, r.stderr
    assert f"run_as = {RUN_AS!r}" in r.stderr and "CAP_SETUID" in r.stderr


def test_up_keeps_its_agent_token_out_of_argv_and_environments(home: Path) -> None:
    """``bridgehead up``: the agent token is in the process's memory and its mode-600 file
    only (a job of the same user can read that file: the README says so)."""
    proc = start_up(home, slots=2)
    try:
        agent_token = (home / "agent.token").read_text().strip()
        assert (home / "agent.token").stat().st_mode & 0o777 == 0o600
        saved = tomllib.loads((home / "client.toml").read_text())["client"]
        with Client(saved["url"], saved["token"]) as bh:
            _, found = snoop(bh)
        assert places_holding(found, agent_token) == []
        assert places_holding(found, saved["token"]) == []  # nor the admin token
    finally:
        proc.kill()
