"""TLS end to end: a real server over HTTPS with a certificate of a CA made by the test
(``openssl``, argv lists), an agent and CLI calls through it with the CA bundle; without the
CA a client refuses with one clear line (exit 2); a server listening beyond loopback without
TLS warns."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bridgehead.client import Client
from bridgehead.domain.jobs import JobSpec
from tests.procs import Agent, Proc, env_for, eventually, free_port, make_token

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is needed to make the test's certificates")
    d = tmp_path_factory.mktemp("certs")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=bridgehead test CA", "-keyout", str(d / "ca.key"),
             "-out", str(d / "ca.pem"))
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"))
    (d / "san.ext").write_text("subjectAltName = IP:127.0.0.1, DNS:localhost\n")
    _openssl("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"),
             "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
             "-extfile", str(d / "san.ext"), "-out", str(d / "server.pem"))
    return Certs(ca=d / "ca.pem", cert=d / "server.pem", key=d / "server.key")


class TlsServer(Proc):
    def __init__(self, dsn: str, home: Path, certs: Certs) -> None:
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.ca = certs.ca
        super().__init__(["server", "--store", dsn, "--port", str(self.port),
                          "--tls-cert", str(certs.cert), "--tls-key", str(certs.key)],
                         home / "server.log", env_for(home))

    def start(self) -> TlsServer:
        super().start()
        context = ssl.create_default_context(cafile=str(self.ca))

        def healthy() -> bool:
            assert self.alive, self.output()
            try:
                return httpx.get(f"{self.url}/health", verify=context,
                                 timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        eventually(healthy, 30, what="the HTTPS server")
        return self


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory,
              certs: Certs) -> Iterator[tuple[TlsServer, str, Path]]:
    home = tmp_path_factory.mktemp("tls")
    dsn = f"sqlite:///{home / 'bh.db'}"
    admin, agent_token = make_token(dsn, "admin"), make_token(dsn, "agent", "local")
    server = TlsServer(dsn, home, certs).start()
    agent = Agent(server.url, agent_token, home, args=("--ca-bundle", str(certs.ca))).start()
    try:
        yield server, admin, home
    finally:
        agent.kill()
        server.kill()
    assert "without TLS" not in server.output()


def _cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridgehead", *args],
                          env=env_for(home, **env), capture_output=True, text=True, timeout=120)


def test_agent_and_cli_through_https(tls_stack: tuple[TlsServer, str, Path],
                                     certs: Certs) -> None:
    server, admin, home = tls_stack
    by_flag = _cli(home, "--server", server.url, "--ca-bundle", str(certs.ca),
                   "submit", "--wait", "--json", "--", "echo", "over tls",
                   BRIDGEHEAD_TOKEN=admin)
    assert by_flag.returncode == 0, by_flag.stderr
    assert '"state": "succeeded"' in by_flag.stdout
    by_env = _cli(home, "clusters", "--json", BRIDGEHEAD_URL=server.url,
                  BRIDGEHEAD_CA_BUNDLE=str(certs.ca), BRIDGEHEAD_TOKEN=admin)
    assert by_env.returncode == 0 and '"online": true' in by_env.stdout, by_env.stderr


def test_sdk_verify_takes_the_ca(tls_stack: tuple[TlsServer, str, Path], certs: Certs) -> None:
    server, admin, _ = tls_stack
    with Client(server.url, admin, verify=certs.ca) as bh:
        job = bh.submit(JobSpec(cluster="local", command=("true",)))
        assert bh.wait(job.id, until="terminal", timeout=60).state.value == "succeeded"


def test_slurm_event_posts_through_https_past_a_dead_replica(
        tls_stack: tuple[TlsServer, str, Path], certs: Certs, tmp_path: Path) -> None:
    server, admin, home = tls_stack
    token_file = tmp_path / "agent.token"
    token_file.write_text(make_token(f"sqlite:///{home / 'bh.db'}", "agent", "local"))
    token_file.chmod(0o600)
    dead = f"http://127.0.0.1:{free_port()}"
    hook = _cli(home, "slurm-event", "--server", f"{dead},{server.url}", "--token-file",
                str(token_file), "--ca-bundle", str(certs.ca), "--spool-dir",
                str(tmp_path / "spool"), SLURM_SCRIPT_CONTEXT="prolog_slurmctld",
                SLURM_JOB_ID="4242", SLURM_CLUSTER_NAME="local")
    assert hook.returncode == 0, hook.stderr
    events = httpx.get(f"{server.url}/v1/events", params={"limit": 1000},
                       headers={"Authorization": f"Bearer {admin}"},
                       verify=ssl.create_default_context(cafile=str(certs.ca))).json()
    assert [e["subject"] for e in events["events"] if e["type"] == "slurm.job.started"] \
        == ["4242"], (tmp_path / "spool" / "last-error").read_text()


def test_a_client_without_the_ca_refuses_with_one_line(
        tls_stack: tuple[TlsServer, str, Path], certs: Certs, tmp_path: Path) -> None:
    server, admin, home = tls_stack
    done = _cli(home, "--server", server.url, "list", BRIDGEHEAD_TOKEN=admin)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "certificate" in done.stderr and "--ca-bundle" in done.stderr, done.stderr
    agent = Agent(server.url, make_token(f"sqlite:///{home / 'bh.db'}", "agent", "local"),
                  tmp_path, args=("--state-dir", str(tmp_path / "s"))).start()
    assert agent.popen is not None and agent.popen.wait(60) == 2
    assert "not trusted" in agent.output(), agent.output()


def test_a_server_beyond_loopback_without_tls_warns(tmp_path: Path) -> None:
    server = Proc(["server", "--store", f"sqlite:///{tmp_path / 'bh.db'}", "--host", "0.0.0.0",
                   "--port", str(free_port())], tmp_path / "server.log", env_for(tmp_path))
    server.start()
    try:
        eventually(lambda: "without TLS" in server.output(), 30, what="the warning")
    finally:
        server.kill()
    [line] = [ln for ln in server.output().splitlines() if "without TLS" in ln]
    assert " WARNING " in line and "--tls-cert" in line


def test_client_flags_before_a_service_command_are_refused(tmp_path: Path, certs: Certs) -> None:
    done = _cli(tmp_path, "--ca-bundle", str(certs.ca), "agent", "--cluster", "local")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "not 'agent' (give them after 'agent')" in done.stderr
