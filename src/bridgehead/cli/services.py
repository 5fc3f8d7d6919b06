"""Long-running commands: ``server``, ``agent`` and ``up`` (both in one process, embedded)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType

import uvicorn

from bridgehead.agent.loop import Agent
from bridgehead.backends.base import Backend
from bridgehead.backends.local import LocalBackend, LocalBackendSettings
from bridgehead.config import (
    AgentSettings,
    ServerSettings,
    home,
    read_client_file,
    scrub_secrets,
    write_client_file,
)
from bridgehead.domain.clusters import Role
from bridgehead.errors import AuthError, ConfigError
from bridgehead.store import ChangeHub, JobStore, create_store

logger = logging.getLogger(__name__)


def make_backend(settings: AgentSettings) -> Backend:
    """The backend an agent drives, from its settings. ConfigError for ``run_as`` on a Slurm
    backend: Slurm runs a job as the user who submits it (the agent's, or the JWT's), and
    Bridgehead does not yet submit as another one (see the README's "Security and isolation")."""
    if settings.backend == "local":
        local = LocalBackendSettings(
            state_dir=settings.state_dir / "local",
            allowed_roots=tuple(settings.allowed_roots),
            wake_socket=settings.wake_socket,
            run_as=settings.run_as,
            run_as_tenants=dict(settings.run_as_tenants),
        )
        if settings.slots:
            local = replace(local, slots=settings.slots)
        return LocalBackend(local)
    if settings.run_as or settings.run_as_tenants:
        why = ("a Spark worker launches every driver as the worker's own user"
               if settings.backend == "spark_standalone"
               else "an EMR step runs as the cluster's hadoop user"
               if settings.backend == "emr"
               else "Livy runs a batch as its proxyUser ([agent.livy] proxy_user)"
               if settings.backend == "livy"
               else "Slurm runs a job as the user who submits it; run one agent as each user "
                    "instead")
        raise ConfigError(f"run_as is not supported on the {settings.backend} backend: {why}")
    if settings.backend == "slurm_cli":
        from bridgehead.backends.slurm_cli import SlurmCliBackend, SlurmCliConfig

        return SlurmCliBackend(settings.slurm, SlurmCliConfig(
            state_dir=settings.state_dir, allowed_roots=tuple(settings.allowed_roots)))
    if settings.backend == "slurm_rest":
        from bridgehead.backends.slurm_rest import SlurmRestBackend

        return SlurmRestBackend(settings.slurm, state_dir=settings.state_dir,
                                allowed_roots=tuple(settings.allowed_roots))
    if settings.backend == "spark_standalone":
        from bridgehead.backends.spark_standalone import SparkStandaloneBackend

        return SparkStandaloneBackend(settings.spark, state_dir=settings.state_dir)
    if settings.backend == "emr":
        from bridgehead.backends.emr import EmrBackend

        emr = settings.emr
        if not emr.pool:
            emr = emr.model_copy(update={"pool": settings.cluster})
        return EmrBackend(emr, state_dir=settings.state_dir, failpoint=settings.failpoint)
    if settings.backend == "livy":
        from bridgehead.backends.livy import LivyBackend

        return LivyBackend(settings.livy)
    raise ConfigError(f"unknown backend {settings.backend!r}")


GRACEFUL_S = 5
"""Open long-polls get this long to finish when the server stops; clients retry them."""


class _Server(uvicorn.Server):
    """uvicorn's server; with ``on_exit`` set, a stop signal goes to its owner, which stops
    what it runs beside the server first and then sets ``should_exit``."""

    on_exit: Callable[[], None] | None = None
    hub: ChangeHub | None = None
    loop: asyncio.AbstractEventLoop | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.on_exit is not None:
            self.on_exit()
        else:
            self.end_long_polls()
            super().handle_exit(sig, frame)

    def end_long_polls(self) -> None:
        if self.hub is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(self.hub.close)

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)


def _uvicorn(settings: ServerSettings, *, access_log: bool) -> _Server:
    from bridgehead.server.app import create_app

    app = create_app(settings)
    tls = settings.tls_cert is not None
    config = uvicorn.Config(app, host=settings.host, port=settings.port,
                            access_log=access_log, log_config=None, lifespan="on",
                            timeout_graceful_shutdown=GRACEFUL_S,
                            ssl_certfile=settings.tls_cert if tls else None,
                            ssl_keyfile=settings.tls_key if tls else None)
    if not tls and not is_loopback(settings.host):
        logger.warning("listening on %s without TLS: tokens and job specs cross the network "
                       "in clear; give --tls-cert and --tls-key (or put a TLS proxy in front)",
                       settings.host)
    server = _Server(config)
    server.hub = app.state.store.hub
    return server


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name to listen on) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port_free(host: str, port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} on {host} is already in use (choose --port)") from exc
            raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from exc


def run_server(settings: ServerSettings, *, access_log: bool) -> None:
    check_port_free(settings.host, settings.port)
    _uvicorn(settings, access_log=access_log).run()


def run_agent(settings: AgentSettings) -> None:
    asyncio.run(Agent(settings, make_backend(settings)).run())


async def bootstrap_tokens(dsn: str, url: str) -> tuple[str, str]:
    """(admin token, agent token) for the embedded set-up: reuse the saved admin token if the
    store still knows it, else make one and save it with the URL in client.toml."""
    store = create_store(dsn)
    await store.open()
    agent_file = home() / "agent.token"
    try:
        saved_agent = agent_file.read_text().strip() if agent_file.is_file() else None
        admin = await _known_or_new(store, read_client_file().get("token"), "up-admin",
                                    Role.ADMIN, None)
        agent = await _known_or_new(store, saved_agent, "up-agent", Role.AGENT, "local")
    finally:
        await store.close()
    if agent != saved_agent:
        _write_secret(agent_file, agent)
    write_client_file(url, admin)
    return admin, agent


async def _known_or_new(store: JobStore, secret: str | None, name: str, role: Role,
                        cluster: str | None) -> str:
    """``secret`` if the store still knows it, else a new token's secret."""
    if secret:
        try:
            await store.authenticate(secret)
            return secret
        except AuthError:
            pass
    _, secret = await store.create_token(name=name, role=role, cluster=cluster, tenant=None)
    return secret


def _write_secret(path: Path, secret: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(secret + "\n")


async def run_up(server_settings: ServerSettings, agent_overrides: dict[str, object],
                 on_ready: object = None) -> None:
    """Serve on SQLite and run a local agent in this process until SIGINT/SIGTERM. The agent
    token lives in this process's memory and in ``$BRIDGEHEAD_HOME/agent.token`` (mode 600),
    never in an environment or argv; secret ``BRIDGEHEAD_*`` variables are removed from the
    environment once read, so jobs (started by supervisors with an environment of their own)
    inherit none. Jobs run as this user, so they can still read the files of
    ``$BRIDGEHEAD_HOME``: ``up`` is for one user's own machine (README, "Security and
    isolation")."""
    url = f"http://{server_settings.host}:{server_settings.port}"
    check_port_free(server_settings.host, server_settings.port)
    _, agent_token = await bootstrap_tokens(server_settings.store, url)
    agent_settings = AgentSettings.load(cluster="local", server=url, token=agent_token,
                                        **agent_overrides)
    agent_settings = agent_settings.model_copy(update={"token": agent_token, "token_file": None})
    scrub_secrets()
    server = _uvicorn(server_settings, access_log=False)
    agent = Agent(agent_settings, make_backend(agent_settings), handle_signals=False)
    loop = asyncio.get_running_loop()

    def stop_agent() -> None:
        loop.call_soon_threadsafe(agent.stop)

    server.on_exit = stop_agent
    for sig in (signal.SIGINT, signal.SIGTERM):  # uvicorn re-raises the signal on return
        signal.signal(sig, lambda *_: None)
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.05)
    if serving.done():
        await serving
        return
    if callable(on_ready):
        on_ready(url)
    agent_task = asyncio.create_task(agent.run())
    await asyncio.wait([serving, agent_task], return_when=asyncio.FIRST_COMPLETED)
    agent.stop()
    with contextlib.suppress(asyncio.CancelledError):
        await agent_task
    server.end_long_polls()
    server.should_exit = True
    await serving
