"""Settings: the only place that reads environment variables and config files.

Precedence, highest first: explicit arguments (CLI flags), ``BRIDGEHEAD_*`` environment
variables, the ``[server]`` / ``[agent]`` / ``[client]`` / ``[airflow]`` table of
``$BRIDGEHEAD_HOME/config.toml`` (or the file named by ``BRIDGEHEAD_CONFIG``), then defaults;
client settings put ``client.toml`` (written by ``bridgehead up``) between the environment and
config.toml. ``BRIDGEHEAD_HOME`` defaults to ``~/.bridgehead``.

Each setting has one variable: ``BRIDGEHEAD_<NAME>`` for the fields of ``[server]``,
``[agent]`` and ``[client]`` (one name may serve several: ``BRIDGEHEAD_TOKEN``),
``BRIDGEHEAD_SLURM__<NAME>`` for ``[agent.slurm]``, ``BRIDGEHEAD_AIRFLOW__<NAME>`` for
``[airflow]``. A ``BRIDGEHEAD_*`` variable that nothing reads is not taken as another spelling
(not even ``BRIDGEHEAD_<TABLE>__<NAME>``): the first load warns about it on stderr, with the
name probably meant.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import stat
import sys
import tomllib
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, get_origin
from urllib.parse import unquote, urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bridgehead.domain.egress import parse_entry
from bridgehead.domain.pools import InvalidPool, Pool, pool_from_dict
from bridgehead.errors import ConfigError


def _existing_file(value: Path | None) -> Path | None:
    if value is not None and not value.is_file():
        raise ValueError(f"{str(value)!r} is not a file")
    return value


def server_urls(value: str) -> list[str]:
    """The server URLs of a comma-separated list (``URL1,URL2``: replicas, tried in order);
    ConfigError naming an entry that is not an http(s) URL."""
    urls = [u.strip().rstrip("/") for u in value.split(",") if u.strip()]
    if not urls:
        raise ConfigError("no server URL given")
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"server URL {url!r} is not http(s)://host[:port]")
    return urls


def home() -> Path:
    return Path(os.environ.get("BRIDGEHEAD_HOME") or Path.home() / ".bridgehead").expanduser()


def config_file() -> Path:
    return Path(os.environ.get("BRIDGEHEAD_CONFIG") or home() / "config.toml")


def client_file() -> Path:
    """Where ``bridgehead up`` writes the server URL and token for later CLI commands."""
    return home() / "client.toml"


@dataclass(frozen=True, slots=True)
class StoreDsn:
    """A parsed store DSN, as SQLAlchemy spells them: ``sqlite:////absolute/path.db``,
    ``sqlite:///relative/path.db`` (from the working directory), ``sqlite:///:memory:``,
    ``postgresql://user@host:port/db``."""

    kind: Literal["sqlite", "postgres"]
    target: str

    @classmethod
    def parse(cls, dsn: str) -> StoreDsn:
        parts = urlsplit(dsn)
        if parts.scheme == "sqlite":
            path = unquote(parts.path)[1:]
            if parts.netloc or not path:
                raise ConfigError(f"SQLite DSN must be sqlite:////absolute/path.db, not {dsn!r}")
            return cls("sqlite", path if path == ":memory:" else str(Path(path).absolute()))
        if parts.scheme in ("postgres", "postgresql"):
            if not parts.hostname and "host=" not in parts.query:
                raise ConfigError("PostgreSQL DSN needs a host: postgresql://user@host:port/db")
            return cls("postgres", dsn)
        raise ConfigError(
            f"unknown store DSN scheme {parts.scheme!r}: use sqlite:///path or postgresql://..."
        )


class _TomlTable(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], table: str) -> None:
        super().__init__(settings_cls)
        self.table = table

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = config_file()
        if not path.is_file():
            return {}
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        return dict(data.get(self.table, {}))


class _Settings(BaseSettings):
    _table: ClassVar[str]
    model_config = SettingsConfigDict(env_prefix="BRIDGEHEAD_", extra="ignore",
                                      env_nested_delimiter="__")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlTable(settings_cls, cls._table))

    @classmethod
    def load(cls, **overrides: Any) -> Any:
        warn_unknown_variables()
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"bad setting {where or 'combination'}: {first['msg']}") from exc


class PriceSettings(BaseModel):
    """``[server.prices.<cluster>]``: what a cluster costs (:class:`bridgehead.domain.costs.Price`)
    per core-hour, node-hour, gpu-hour and normalized instance-hour (EMR)."""

    model_config = ConfigDict(extra="forbid")
    core_hour: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    node_hour: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    gpu_hour: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    instance_hour: float = Field(default=0.0, ge=0, allow_inf_nan=False)


class ServerSettings(_Settings):
    _table = "server"
    store: str = Field(default_factory=lambda: f"sqlite:///{home() / 'bridgehead.db'}")
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    max_body_bytes: int = Field(default=8 << 20, ge=1024)
    lease_s: float = Field(default=60.0, gt=0)
    cluster_ttl_s: float = Field(default=30.0, gt=0)
    max_wait_s: float = Field(default=60.0, gt=0)
    max_requests_per_token: int = Field(default=16, ge=0)
    """How many requests of one token one server process serves at once; more are answered
    429 with Retry-After (the SDK waits and sends again), so a client flooding the server
    cannot starve the agents' claims and reports. Long-polls are not counted. 0: no limit.
    See :mod:`bridgehead.server.limits`."""
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    ui_session_s: float = Field(default=8 * 3600.0, gt=0)
    """How long a web UI session lasts after its login (it ends sooner at logout or when its
    token is revoked)."""
    workflows_dir: Path = Field(default_factory=lambda: home() / "workflows")
    """The workflow files the server keeps: the web UI's editor saves ``<name>.yaml`` here
    (admins only; the directory is made on the first save). Their ``schedule:`` blocks are
    the server's schedules (replicas should share the folder)."""
    schedule_pass_s: float = Field(default=5.0, gt=0)
    """How often the scheduler (the leader among replicas) looks for due ticks; a run that
    ends wakes it at once."""
    schedule_clock_file: Path | None = None
    """Testing only: the schedules' clock is read from this file (UNIX seconds) instead of
    the system's, to drive ticks. Never set it in production."""
    max_lost_attempts: int = Field(default=3, ge=0, le=100)
    """How many attempts of one job the infrastructure may lose (a dead node, worker or
    cluster, as the backend knows it) before the job ends ``lost``: each lost attempt gets one
    new attempt until then. These never use up a workflow step's ``retries``. 0: none."""
    prices: dict[str, PriceSettings] = Field(default_factory=dict)
    """Each cluster's price (``bridgehead cost``, ``GET /v1/costs``); a cluster without one is
    listed as unpriced, its attempts costing 0."""
    cost_anomaly_window_s: float = Field(default=7 * 86400.0, gt=0, le=366 * 86400.0)
    """How far back a workflow's earlier runs are priced for ``bridgehead.cost.anomaly`` (a run
    costing more than 1.5x the trailing p90 of up to 20 earlier runs in this window)."""
    webhook_allow: list[str] = Field(default_factory=list)
    """Rule webhooks reach public addresses only; these entries open exceptions: addresses,
    CIDRs or host names, each optionally with ``:port`` (``127.0.0.1:9000``, ``10.0.0.0/8``,
    ``hooks.internal``). See :mod:`bridgehead.domain.egress`."""

    pools: list[dict[str, Any]] = Field(default_factory=list)
    """``[[server.pools]]``: the elastic pools (:func:`bridgehead.domain.pools.pool_from_dict`
    reads each; :meth:`pool_list` refuses a bad one naming the field)."""
    scale_interval_s: float = Field(default=5.0, gt=0)
    """How often the scaler plans (the leader among replicas)."""
    orphan_grace_s: float = Field(default=60.0, ge=0)
    """A node its provider has and no pool asked for is terminated once seen this long."""

    tls_cert: Path | None = None
    """PEM certificate chain to serve HTTPS with (with ``tls_key``)."""
    tls_key: Path | None = None
    """The certificate's PEM private key (readable by the server's user only)."""

    @field_validator("webhook_allow")
    @classmethod
    def _egress_entries(cls, value: list[str]) -> list[str]:
        for entry in value:
            parse_entry(entry)  # ValueError names the entry
        return value

    @field_validator("tls_cert", "tls_key")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        return _existing_file(value)

    @model_validator(mode="after")
    def _cert_and_key(self) -> ServerSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("TLS needs both tls_cert and tls_key (--tls-cert, --tls-key)")
        return self

    @property
    def dsn(self) -> StoreDsn:
        return StoreDsn.parse(self.store)

    def pool_list(self) -> list[Pool]:
        """The configured pools; InvalidPool naming the field (``pools[1].max_nodes: ...``,
        ``pools[0].options.boot_s: ...``) for a bad one, or for two pools of one name."""
        from bridgehead.pools.providers import make  # the providers import backends

        out: list[Pool] = []
        for i, table in enumerate(self.pools):
            pool = pool_from_dict(table, ("pools", i))
            InvalidPool.located(("pools", i), make, pool)  # its provider checks its options
            if any(p.name == pool.name for p in out):
                raise InvalidPool(f"pool {pool.name!r} is defined twice", ("pools", i, "name"))
            out.append(pool)
        return out


class SlurmSettings(BaseModel):
    """``[agent.slurm]`` in config.toml, or ``BRIDGEHEAD_SLURM__<NAME>`` in the environment."""

    model_config = ConfigDict(extra="forbid")
    conf: Path | None = None
    """The cluster's slurm.conf (exported as SLURM_CONF to every Slurm command)."""
    bin_dir: Path | None = None
    """The directory holding sbatch, squeue, sacct, scancel and scontrol (an absolute path,
    e.g. a site's /opt/slurm/bin, or wrappers that run another Slurm release's tools); the
    backends run ``<bin_dir>/sbatch`` and so on. Default: each is found on PATH."""
    job_root: Path | None = None
    """A directory on the file system the head node shares with the compute nodes: each job's
    stdout/stderr go there and it is the default working dir (default: state_dir/slurm)."""
    max_cores: int | None = Field(default=None, ge=1)
    """Cluster-wide cap on one job's cores; a job's own ``max_cores`` may lower it."""
    max_nodes: int | None = Field(default=None, ge=1)
    command_timeout_s: float = Field(default=30.0, gt=0)
    accounting_grace_s: float = Field(default=60.0, gt=0)
    """How long a job that left the queue may stay missing from sacct (accounting lags)."""
    find_window_days: int = Field(default=14, ge=1)
    """How far back reconciliation looks in sacct for a job's tag."""
    rest_url: str | None = None
    """slurmrestd base URL: ``http://host:port`` (JWT) or ``unix:///path/to/socket``."""
    rest_user: str | None = None
    """The user the JWT speaks for (default: the agent's user)."""
    rest_token: SecretStr | None = None
    """A JWT; without one (or ``rest_token_file``) the agent makes its own with ``scontrol
    token`` and renews it."""
    rest_token_file: Path | None = None
    """A file holding the JWT (as ``token_file``: the agent's user's, mode 600), read again
    whenever it changes: for an agent on a host without Slurm, the site's tooling renews it."""
    rest_token_lifespan_s: int = Field(default=3600, ge=60)
    rest_version: str | None = None
    """OpenAPI version to speak (e.g. v0.0.38); default: the newest both sides know."""

    @field_validator("bin_dir")
    @classmethod
    def _existing_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError(f"must be an absolute path, not {str(value)!r}")
        if value is not None and not value.is_dir():
            raise ValueError(f"{str(value)!r} is not a directory")
        return value


class SparkSettings(BaseModel):
    """``[agent.spark]`` in config.toml, or ``BRIDGEHEAD_SPARK__<NAME>`` in the environment: a
    Spark standalone cluster driven by the ``spark_standalone`` backend."""

    model_config = ConfigDict(extra="forbid")
    master_url: str = "spark://127.0.0.1:7077"
    """The master's RPC URL (``spark.master`` of every application)."""
    rest_url: str = "http://127.0.0.1:6066"
    """The master's REST submission server (``spark.master.rest.enabled``; it has no
    authentication: bind it to loopback or put a ``spark.master.rest.filters`` filter on it)."""
    json_url: str = "http://127.0.0.1:8080/json/"
    """The master web UI's JSON (all drivers and apps in one answer: the batched poll)."""
    work_dir: Path | None = None
    """The workers' work dir, when this host sees it (``<work_dir>/<driver-id>/stdout``):
    logs are read there; without it, from each worker's web UI (``/log/``)."""
    python: str | None = None
    """``spark.pyspark.python`` for Python applications (default: Spark's, ``python3``)."""
    max_cores: int | None = Field(default=None, ge=1)
    """Cluster-wide cap on one application's cores (driver + executors): clamps executors."""
    request_timeout_s: float = Field(default=30.0, gt=0)
    client_version: str = "4.0.0"
    """``clientSparkVersion`` sent with each submission."""


class LivySettings(BaseModel):
    """``[agent.livy]`` in config.toml, or ``BRIDGEHEAD_LIVY__<NAME>`` in the environment: an
    Apache Livy server (and optionally the YARN ResourceManager behind it) driven by the
    ``livy`` backend (see deploy/livy/README.md)."""

    model_config = ConfigDict(extra="forbid")
    url: str = "http://127.0.0.1:8998"
    """Livy's REST API (``/batches``)."""
    yarn_url: str | None = None
    """The YARN ResourceManager's web services (``http://rm:8088``): with it, YARN confirms
    each end and gives exact usage (vcoreSeconds) in one extra query per poll cycle."""
    requested_by: str = "bridgehead"
    """The ``X-Requested-By`` header of every non-GET request (Livy's CSRF protection)."""
    verify: bool | str = True
    """TLS: verify Livy's and YARN's certificates (or the path of a CA bundle)."""
    request_timeout_s: float = Field(default=30.0, gt=0)
    page_size: int = Field(default=1000, ge=1, le=10000)
    """Batches per ``GET /batches`` page (one page per poll when Livy has fewer)."""
    log_interval_s: float = Field(default=10.0, ge=0)
    """Read a running batch's log at most this often (one request per batch: Livy has no
    bulk log call); an ended batch's log is read at once."""
    proxy_user: str | None = None
    """Livy's ``proxyUser`` for every batch (sent only when given)."""
    queue: str | None = None
    """The YARN queue of every batch (sent only when given)."""
    conf: dict[str, str] = Field(default_factory=dict)
    """Spark conf defaults under each job's own ``conf`` (the job's value wins)."""
    max_cores: int | None = Field(default=None, ge=1)
    """Cluster-wide cap on one application's cores (driver + executors): clamps executors."""


def _default_instance_groups() -> list[dict[str, Any]]:
    return [{"Name": "master", "InstanceRole": "MASTER", "Market": "ON_DEMAND",
             "InstanceType": "m5.xlarge", "InstanceCount": 1},
            {"Name": "core", "InstanceRole": "CORE", "Market": "ON_DEMAND",
             "InstanceType": "m5.xlarge", "InstanceCount": 2}]


class EmrSettings(BaseModel):
    """``[agent.emr]`` in config.toml, or ``BRIDGEHEAD_EMR__<NAME>`` in the environment: the
    POOL of EMR clusters the ``emr`` backend runs steps on (see deploy/emr/README.md)."""

    model_config = ConfigDict(extra="forbid")
    pool: str = ""
    """The pool's name in its clusters' names (``bh-<pool>-g<N>``) and tags (default: the
    agent's cluster name)."""
    region: str = "us-east-1"
    endpoint_url: str | None = None
    """Another EMR endpoint (a moto server in tests); default: the region's."""
    release_label: str = "emr-7.5.0"
    applications: list[str] = Field(default_factory=lambda: ["Spark"])
    instance_groups: list[dict[str, Any]] = Field(default_factory=_default_instance_groups)
    """RunJobFlow's ``Instances.InstanceGroups``, verbatim (e.g. a spot TASK group)."""
    instance_fleets: list[dict[str, Any]] = Field(default_factory=list)
    """RunJobFlow's ``Instances.InstanceFleets``, verbatim; given, it replaces the groups."""
    subnet_id: str | None = None
    step_concurrency: int = Field(default=8, ge=1, le=256)
    """Each cluster's StepConcurrencyLevel: the steps it runs at once."""
    min_clusters: int = Field(default=0, ge=0)
    max_clusters: int = Field(default=1, ge=1)
    idle_timeout_s: float = Field(default=600.0, gt=0)
    """A cluster with no active step for this long is terminated (down to ``min_clusters``)."""
    auto_termination_s: int = Field(default=3600, ge=60, le=604800)
    """EMR's own AutoTerminationPolicy IdleTimeout: the backstop while Bridgehead is down."""
    log_uri: str | None = None
    """``s3://bucket/prefix/``: EMR writes each step's stdout/stderr there (gzipped)."""
    service_role: str = "EMR_DefaultRole"
    job_flow_role: str = "EMR_EC2_DefaultRole"
    tags: dict[str, str] = Field(default_factory=dict)
    """More tags on every cluster (Bridgehead adds ``bridgehead:pool`` and
    ``bridgehead:generation``)."""
    request_timeout_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _sizes(self) -> EmrSettings:
        if self.min_clusters > self.max_clusters:
            raise ValueError(f"min_clusters ({self.min_clusters}) is above max_clusters "
                             f"({self.max_clusters})")
        return self


class AgentSettings(_Settings):
    _table = "agent"
    cluster: str = "local"
    server: str = "http://127.0.0.1:8765"
    token: str | None = None
    """The agent token itself: visible to every process of the agent's user (argv, environment);
    prefer ``token_file``."""
    token_file: Path | None = None
    """A file holding the agent token: owned by the agent's user, mode 600 (or 400)."""
    run_as: str | None = None
    """Run this cluster's jobs as this user (local backend; the agent needs root or
    CAP_SETUID/CAP_SETGID)."""
    run_as_tenants: dict[str, str] = Field(default_factory=dict)
    """Per tenant, the user its jobs run as (instead of ``run_as``)."""
    backend: Literal["local", "slurm_cli", "slurm_rest", "spark_standalone",
                     "emr", "livy"] = "local"
    state_dir: Path = Field(default_factory=lambda: home() / "agent")
    slots: int | None = Field(default=None, ge=1)
    allowed_roots: list[Path] = Field(default_factory=list)
    poll_interval_s: float = Field(default=1.0, gt=0)
    heartbeat_s: float = Field(default=5.0, gt=0)
    lost_after_s: float = Field(default=60.0, gt=0)
    log_chunk_bytes: int = Field(default=256 << 10, ge=1024)
    labels: dict[str, str] = Field(default_factory=dict)
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)
    spark: SparkSettings = Field(default_factory=SparkSettings)
    livy: LivySettings = Field(default_factory=LivySettings)
    emr: EmrSettings = Field(default_factory=EmrSettings)
    ca_bundle: Path | None = None
    """PEM CA certificates that sign the server's TLS certificate (default: certifi's)."""
    wake_dir: Path | None = None
    """Bind the wake socket in this directory (named after the agent) instead of the state
    dir: where a scheduler hook (``bridgehead slurm-event --wake-dir``) looks for agents."""
    failpoint: str = ""
    """Crash testing only (BRIDGEHEAD_FAILPOINT): ``before-backend-submit`` makes the agent
    SIGKILL itself once a job is ``submitting``, right before the scheduler is called;
    ``after-backend-submit`` right after the scheduler took a job, before its native id is
    recorded;
    on the emr backend ``emr-after-run-job-flow`` and ``emr-after-add-steps`` right after
    those calls, before the pool's record has their answer."""

    def with_token(self) -> AgentSettings:
        """These settings with ``token`` read from ``token_file`` when one is given (it wins
        over ``token``). ConfigError, naming the file, for a file others may read."""
        if self.token_file is None:
            return self
        return self.model_copy(update={"token": read_token_file(self.token_file)})

    def user_of(self, tenant: str) -> str | None:
        """The user a tenant's jobs run as (None: the agent's own)."""
        return self.run_as_tenants.get(tenant) or self.run_as

    @property
    def wake_socket(self) -> Path:
        """Where job supervisors and scheduler hooks wake this agent (``bridgehead.wake``)."""
        if self.wake_dir is not None:  # one name per state dir: stable across restarts
            digest = hashlib.sha1(os.fsencode(self.state_dir.absolute())).hexdigest()[:12]
            return self.wake_dir / f"{self.cluster}-{digest}.sock"
        return self.state_dir / "wake.sock"


class ClientSettings(_Settings):
    _table = "client"
    url: str = "http://127.0.0.1:8765"
    token: str | None = None
    timeout_s: float = Field(default=30.0, gt=0)
    ca_bundle: Path | None = None
    """PEM CA certificates that sign the server's TLS certificate (default: certifi's)."""

    @classmethod
    def load(cls, **overrides: Any) -> Any:
        """As other settings, with ``client.toml`` (written by ``bridgehead up``) under env."""
        saved = read_client_file()
        merged = {k: v for k, v in saved.items() if f"BRIDGEHEAD_{k.upper()}" not in os.environ}
        merged.update(_CLIENT_FLAGS)
        merged.update({k: v for k, v in overrides.items() if v is not None})
        return super().load(**merged)


_CLIENT_FLAGS: dict[str, Any] = {}


def set_client_flags(**flags: Any) -> None:
    """The ``bridgehead`` command's own options (``--server``, ``--ca-bundle``): they beat
    every other layer of :class:`ClientSettings` for the rest of this process."""
    _CLIENT_FLAGS.update({k: v for k, v in flags.items() if v is not None})


class AirflowSettings(_Settings):
    """Where ``bridgehead airflow`` finds Airflow's REST API: the ``[airflow]`` table of
    config.toml, or ``BRIDGEHEAD_AIRFLOW__<NAME>`` in the environment (``BRIDGEHEAD_AIRFLOW__URL``,
    ``BRIDGEHEAD_AIRFLOW__PASSWORD``, ...), like ``BRIDGEHEAD_SLURM__*`` for ``[agent.slurm]``."""

    _table = "airflow"
    model_config = SettingsConfigDict(env_prefix="BRIDGEHEAD_AIRFLOW__")
    url: str = "http://127.0.0.1:8080"
    """The API server's base URL (without ``/api/v2``)."""
    username: str | None = None
    password: SecretStr | None = None
    """With ``username``: exchanged for a JWT (Airflow 3) or sent as basic auth (Airflow 2)."""
    token: SecretStr | None = None
    """A ready bearer token (JWT), used instead of username and password."""
    api_version: Literal["auto", "v1", "v2"] = "auto"
    """``v2`` is Airflow 3's ``/api/v2``, ``v1`` Airflow 2's ``/api/v1``; ``auto`` asks."""
    timeout_s: float = Field(default=30.0, gt=0)
    poll_interval_s: float = Field(default=1.0, gt=0)
    """Seconds between looks at the run's task instances and its jobs' logs."""


SETTINGS: tuple[type[_Settings], ...] = (ServerSettings, AgentSettings, ClientSettings,
                                         AirflowSettings)
"""Every settings class, so every variable they read is known (and documented: the README's
table is checked against :func:`env_names` by ``tests/unit/test_config.py``)."""

OTHER_VARIABLES = (
    "BRIDGEHEAD_HOME",         # home(): config.toml, client.toml, the SQLite store, agent state
    "BRIDGEHEAD_CONFIG",       # config_file()
    "BRIDGEHEAD_JOB_ID",       # set by agents in every job's environment
    "BRIDGEHEAD_ARRAY_INDEX",  # set by the local backend in an array element's environment
    "BRIDGEHEAD_ARGC",         # set for a Slurm job's argv wrapper, unset before the command
    "BRIDGEHEAD_ARGV_*",
    "BRIDGEHEAD_TEST_PG_DSN",  # the test suite's and bench/broker.py's PostgreSQL
    "BRIDGEHEAD_TEST_CHROMIUM",  # the browser of the web UI's tests
    "BRIDGEHEAD_TEST_WORKERS",  # scripts/test: pytest-xdist workers of a whole-suite run
    "BRIDGEHEAD_UI_SCREENSHOT",  # where tests/ui also writes the README's screenshot
)
"""``BRIDGEHEAD_*`` names that are not settings fields but are read or set by Bridgehead; a
name ending in ``*`` is a family (``BRIDGEHEAD_ARGV_0``, ``BRIDGEHEAD_ARGV_1``, ...)."""


def env_names(cls: type[_Settings]) -> dict[str, str]:
    """Every environment variable ``cls`` reads, with the config.toml key it stands for:
    ``BRIDGEHEAD_SLURM__CONF``: ``agent.slurm.conf``. A nested model may also be given whole
    as JSON (``BRIDGEHEAD_SLURM``); a dict one entry per variable (``BRIDGEHEAD_LABELS__*``)."""
    out: dict[str, str] = {}
    for name, field in cls.model_fields.items():
        var, key = _prefix(cls) + name.upper(), f"{cls._table}.{name}"
        out[var] = key
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            out.update({f"{var}__{sub.upper()}": f"{key}.{sub}" for sub in kind.model_fields})
        elif get_origin(kind) is dict:
            out[f"{var}__*"] = key
    return out


def known_variables() -> set[str]:
    """Every ``BRIDGEHEAD_*`` name Bridgehead reads or sets (``*`` ends a family)."""
    return set(OTHER_VARIABLES).union(*(env_names(cls) for cls in SETTINGS))


def unknown_variables(environ: Mapping[str, str]) -> dict[str, str | None]:
    """The ``BRIDGEHEAD_*`` names in ``environ`` that nothing reads, each with the name most
    likely meant (None when none is close). Settings ignore case; the other names do not."""
    known = known_variables()
    fields = known - set(OTHER_VARIABLES)
    return {name: _likely(name.upper(), known) for name in sorted(environ)
            if name.upper().startswith("BRIDGEHEAD_")
            and not _among(name.upper(), fields) and not _among(name, set(OTHER_VARIABLES))}


def _among(name: str, names: set[str]) -> bool:
    return name in names or any(n.endswith("*") and name.startswith(n[:-1]) for n in names)


def _likely(name: str, known: set[str]) -> str | None:
    """``BRIDGEHEAD_<TABLE>__<NAME>`` (a table's name where none belongs) means NAME as that
    table spells it; anything else, the closest known name."""
    for cls in SETTINGS:
        qualified = f"BRIDGEHEAD_{cls._table.upper()}__"
        if name.startswith(qualified) and _prefix(cls) != qualified:
            own = _prefix(cls) + name.removeprefix(qualified)
            return _closest(own, set(env_names(cls))) or _closest(name, known)
    return _closest(name, known)


def _closest(name: str, names: set[str]) -> str | None:
    """``name`` if it is among ``names``, else the shortest one it begins (a name cut short),
    else the most similar one, compared without the prefix they share."""
    if _among(name, names):
        return name
    rest = name.removeprefix("BRIDGEHEAD_")
    plain = {n.removeprefix("BRIDGEHEAD_"): n for n in names if not n.endswith("*")}
    longer = sorted((n for n in plain if rest and n.startswith(rest)), key=lambda n: (len(n), n))
    close = longer[:1] or difflib.get_close_matches(rest, plain, n=1)
    return plain[close[0]] if close else None


def _prefix(cls: type[_Settings]) -> str:
    return (cls.model_config.get("env_prefix") or "").upper()


_warned: set[str] = set()


def warn_unknown_variables() -> None:
    """One line on stderr per ``BRIDGEHEAD_*`` variable that no setting reads, once per
    process: a misspelt name is never silently ignored (and stdout stays clean for --json)."""
    for name, likely in unknown_variables(os.environ).items():
        if name not in _warned:
            _warned.add(name)
            hint = f" (did you mean {likely}?)" if likely else ""
            print(f"bridgehead: warning: {name} is not a Bridgehead setting{hint}",
                  file=sys.stderr)


def read_token_file(path: Path) -> str:
    """The secret in ``path``, refused as ssh refuses a private key: unless it is a regular
    file owned by this process's user that neither group nor others may read or write."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY)
    except OSError as exc:
        raise ConfigError(f"cannot read token file {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"token file {path} is not a regular file")
        if info.st_uid != os.geteuid():
            raise ConfigError(f"token file {path} is owned by uid {info.st_uid}, not by the "
                              f"agent's user (uid {os.geteuid()})")
        if info.st_mode & 0o077:
            raise ConfigError(f"token file {path} is accessible by group or others (mode "
                              f"{stat.S_IMODE(info.st_mode):o}): chmod 600 {path}")
        secret = fh.read().decode(errors="replace").strip()
    if not secret:
        raise ConfigError(f"token file {path} is empty")
    return secret


SECRET_NAMES = frozenset({"token", "password", "rest_token"})
"""Settings fields that hold secrets: their variables are scrubbed by :func:`scrub_secrets`."""


def secret_variables() -> set[str]:
    """The ``BRIDGEHEAD_*`` variables that may hold a secret (a nested model given whole as
    JSON too: ``BRIDGEHEAD_SLURM`` may carry ``rest_token``)."""
    out = set()
    for cls in SETTINGS:
        for var, key in env_names(cls).items():
            parts = key.split(".")
            if parts[-1] in SECRET_NAMES:
                out.add(var)
                if len(parts) > 2:
                    out.add(var.rsplit("__", 1)[0])
    return out


def scrub_secrets(environ: MutableMapping[str, str] = os.environ) -> list[str]:
    """Remove every secret-holding ``BRIDGEHEAD_*`` variable from ``environ`` (once settings
    are read), so that nothing the process starts inherits it; return the names removed."""
    secret = secret_variables()
    names = [name for name in environ if name.upper() in secret]
    for name in names:
        del environ[name]
    return names


def read_client_file() -> dict[str, Any]:
    path = client_file()
    if not path.is_file():
        return {}
    try:
        return dict(tomllib.loads(path.read_text()).get("client", {}))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def write_client_file(url: str, token: str) -> Path:
    """Save the URL and token (mode 600) so that later CLI commands in any shell find them."""
    path = client_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f'[client]\nurl = "{_toml_str(url)}"\ntoken = "{_toml_str(token)}"\n')
    os.replace(tmp, path)
    return path


def _toml_str(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
