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

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bridgehead.errors import ConfigError


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
            raise ConfigError(f"bad setting {where}: {first['msg']}") from exc


class ServerSettings(_Settings):
    _table = "server"
    store: str = Field(default_factory=lambda: f"sqlite:///{home() / 'bridgehead.db'}")
    host: str = "127.0.0.1"
    port: int = Field(default=8765, ge=0, le=65535)
    max_body_bytes: int = Field(default=8 << 20, ge=1024)
    lease_s: float = Field(default=60.0, gt=0)
    cluster_ttl_s: float = Field(default=30.0, gt=0)
    max_wait_s: float = Field(default=60.0, gt=0)
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"

    @property
    def dsn(self) -> StoreDsn:
        return StoreDsn.parse(self.store)


class SlurmSettings(BaseModel):
    """``[agent.slurm]`` in config.toml, or ``BRIDGEHEAD_SLURM__<NAME>`` in the environment."""

    model_config = ConfigDict(extra="forbid")
    conf: Path | None = None
    """The cluster's slurm.conf (exported as SLURM_CONF to every Slurm command)."""
    bin_dir: Path | None = None
    """Where sbatch, squeue, sacct, scancel and scontrol are (default: PATH)."""
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
    """A JWT; without one the agent makes its own with ``scontrol token`` and renews it."""
    rest_token_lifespan_s: int = Field(default=3600, ge=60)
    rest_version: str | None = None
    """OpenAPI version to speak (e.g. v0.0.38); default: the newest both sides know."""


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
    backend: Literal["local", "slurm_cli", "slurm_rest"] = "local"
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
    wake_dir: Path | None = None
    """Bind the wake socket in this directory (named after the agent) instead of the state
    dir: where a scheduler hook (``bridgehead slurm-event --wake-dir``) looks for agents."""
    failpoint: str = ""
    """Crash testing only (BRIDGEHEAD_FAILPOINT): ``after-backend-submit`` makes the agent
    SIGKILL itself right after the scheduler took a job, before its native id is recorded."""

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

    @classmethod
    def load(cls, **overrides: Any) -> Any:
        """As other settings, with ``client.toml`` (written by ``bridgehead up``) under env."""
        saved = read_client_file()
        merged = {k: v for k, v in saved.items() if f"BRIDGEHEAD_{k.upper()}" not in os.environ}
        merged.update({k: v for k, v in overrides.items() if v is not None})
        return super().load(**merged)


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
    "BRIDGEHEAD_ARGC",         # set for a Slurm job's argv wrapper, unset before the command
    "BRIDGEHEAD_ARGV_*",
    "BRIDGEHEAD_TEST_PG_DSN",  # the test suite's and bench/broker.py's PostgreSQL
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
