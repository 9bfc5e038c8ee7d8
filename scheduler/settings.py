"""The one typed settings object, and the only place that reads the environment.

Precedence, highest first: ``SCHEDULER_*`` environment variables, the ``config:`` mapping of
``module.yaml`` (``$SCHEDULER_CONFIG_FILE``, else ``./module.yaml`` when present), then the defaults below
(the spec's). YAML keys are the spec's camelCase names (``maxConcurrentTasks``); environment variables are the
snake-case names with the prefix (``SCHEDULER_MAX_CONCURRENT_TASKS``). Durations named in the spec keep its
unit: milliseconds.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from scheduler.errors import ConfigError
from scheduler.settings_model import Field, SettingsModel, SettingsValidationError, field_validator, to_camel

ENV_PREFIX = "SCHEDULER_"
CONFIG_FILE_ENV = "SCHEDULER_CONFIG_FILE"
DEFAULT_CONFIG_FILE = Path("module.yaml")

# SCHEDULER_* variables read outside :class:`Settings` (cli.context, cli.render); SCHEDULER_TEST_* belong to
# the test suite. Any other SCHEDULER_* variable is a typo, warned about by every process (see load_settings).
OTHER_ENV = frozenset({CONFIG_FILE_ENV, "SCHEDULER_DEBUG", "SCHEDULER_TABLES"})
TEST_ENV_PREFIX = "SCHEDULER_TEST_"
JSON_FIELDS = frozenset({"commands", "alert_channels"})  # settings whose SCHEDULER_* variable is JSON

# Database URL schemes: backend -> the drivers installed for it ("" = the backend's default driver; a bare
# postgresql:// means psycopg2, see scheduler.storage.db.make_engine).
DATABASE_DRIVERS = {"sqlite": ("", "pysqlite"), "postgresql": ("", "psycopg2", "psycopg")}
DATABASE_ALIASES = {"postgres": "postgresql"}  # libpq's and Heroku's spelling; SQLAlchemy has no such name

OverlapPolicy = Literal["allow", "forbid", "replace"]
ChannelType = Literal["webhook", "slack", "email"]
MisfirePolicy = Literal["skip", "run_once", "run_all"]


class AlertChannel(SettingsModel):
    """Where alerts are sent (docs/alerts.md). Secrets are never values here: ``secretEnv``, ``urlEnv``,
    ``passwordEnv`` name the environment variables that hold them, read when a message is sent."""

    type: ChannelType = Field(description="webhook (signed JSON POST), slack (incoming webhook) or email.")
    url: str | None = Field(None, description="webhook/slack: the URL (or urlEnv).")
    url_env: str | None = Field(
        None, description="webhook/slack: variable holding the URL (a Slack URL is a secret)."
    )
    secret_env: str | None = Field(None, description="webhook: variable holding the HMAC-SHA256 key.")
    timeout: int = Field(
        3000, ge=100, le=120_000, description="One attempt's timeout (ms); keep it under 0.4 x leaseTtl."
    )
    smtp_host: str = Field("localhost", description="email: SMTP server.")
    smtp_port: int = Field(25, ge=1, le=65535, description="email: SMTP port.")
    starttls: bool = Field(False, description="email: STARTTLS before logging in.")
    username_env: str | None = Field(None, description="email: variable holding the SMTP user name.")
    password_env: str | None = Field(None, description="email: variable holding the SMTP password.")
    sender: str = Field("scheduler@localhost", description="email: From address.")
    to: list[str] = Field(default_factory=list, description="email: recipients.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("a channel url must start with http:// or https://")
        return value

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        if self.type in ("webhook", "slack") and not (self.url or self.url_env):
            raise SettingsValidationError((), f"Value error, a {self.type} channel needs url or urlEnv")
        if self.type == "email" and not self.to:
            raise SettingsValidationError(
                (), "Value error, an email channel needs 'to' (a list of addresses)"
            )


class Settings(SettingsModel):
    """Effective configuration of planners, workers and the CLI.

    Frozen; each value is checked when it is built (types, limits, the validators below; see
    :mod:`scheduler.settings_model`). :func:`load_settings` reads the environment and ``module.yaml`` itself,
    so it can tell where each value came from.
    """

    # The spec's keys.
    max_concurrent_tasks: int = Field(100, ge=1, description="Executions queued+running at once, fleet-wide.")
    default_retries: int = Field(3, ge=0, le=100, description="Retry attempts after a failed first attempt.")
    retry_delay: int = Field(5000, ge=0, description="Delay before the first retry (ms).")
    tick_interval: int = Field(1000, ge=10, description="Planner tick interval (ms).")
    task_timeout: int = Field(3_600_000, ge=1, description="Default task time limit (ms).")
    cleanup_interval: int = Field(3_600_000, ge=1000, description="Interval between history clean-ups (ms).")
    history_retention_days: int = Field(30, ge=0, description="Days finished executions are kept.")
    audit_retention_days: int = Field(
        0,
        ge=0,
        description="Days audit rows are kept; 0: for ever. Pruned by the clean-up, each batch after a "
        "checkpoint row that keeps the audit chain verifiable.",
    )

    # Where things live. Unset URLs mean the embedded default under `home`.
    home: Path = Field(Path(".scheduler"), description="Directory of the embedded database and broker.")
    database_url: str | None = Field(
        None, description="postgresql:// (or postgres://) or sqlite:/// URL; unset: SQLite under `home`."
    )
    broker_url: str | None = Field(
        None, description="Celery broker URL; unset: a filesystem transport under `home`."
    )
    events_prefix: str = Field(
        "systemprompt",
        min_length=1,
        pattern=r"^\S+$",
        description="Prefix of the Redis pub/sub channel of events, `<prefix>:events:<broker db number>`; "
        "deployments sharing one Redis database need different prefixes.",
    )

    # Task defaults beyond the spec's.
    retry_backoff: float = Field(
        2.0, ge=1.0, le=10.0, description="Multiplier applied to each further retry delay."
    )
    overlap_policy: OverlapPolicy = Field("allow", description="Default overlap policy of new tasks.")
    misfire_policy: MisfirePolicy = Field("run_once", description="Default misfire policy of new tasks.")
    default_queue: str = Field("default", min_length=1, description="Celery queue of tasks that name none.")

    # Planner and worker behaviour.
    lease_ttl: int = Field(
        10_000, ge=1000, description="Planner leadership lease (ms); standbys take over after it."
    )
    planner_batch_size: int = Field(1000, ge=1, description="Due tasks claimed per planner batch.")
    recovery_after: int = Field(
        60_000, ge=1000, description="Unclaimed queued executions are republished after (ms)."
    )
    heartbeat_interval: int = Field(5000, ge=100, description="Worker heartbeat on a running execution (ms).")
    max_log_bytes: int = Field(65_536, ge=1024, description="Log bytes kept per execution.")

    # Operations.
    actor: str | None = Field(None, description="Actor recorded in the audit log; unset: the OS user.")
    log_format: Literal["text", "json"] = Field("text", description="Log line format.")
    log_level: str = Field("INFO", description="Log level of planner, worker and CLI.")
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Prometheus /metrics port of a planner, a worker or serve (one for both); unset: off.",
    )
    flower_basic_auth: str | None = Field(None, description="user:password for Flower.")
    web_users: str | None = Field(
        None,
        description="Web console users: name:role:password-hash, comma-separated (role: viewer, operator, "
        "admin; hash from 'scheduler:web --hash-password').",
    )
    web_trusted_header: str | None = Field(
        None,
        description="Web console behind an authenticating proxy: the request header naming the user "
        "(e.g. X-Forwarded-User); that user's role comes from web_users. Unset: off.",
    )
    web_secret: str | None = Field(
        None,
        description="Web console key for CSRF tokens (set the same on every replica); unset: per process.",
    )

    # Alerts (docs/alerts.md): per-task rules default to these; 0 or unset turns a rule off.
    alert_on_failure: int = Field(
        1, ge=0, description="Alert after this many consecutive failed executions (0: never)."
    )
    alert_late: int | None = Field(
        None, ge=1, description="Alert when an execution has not started this long after its slot (ms)."
    )
    alert_missing: int | None = Field(
        None, ge=1, description="Alert when no run succeeded within this long after a due slot (ms)."
    )
    alert_long: int | None = Field(None, ge=1, description="Alert when an execution runs longer than (ms).")
    alert_recovered: bool = Field(True, description="Notify when an alert's condition is over.")
    alert_repeat_interval: int = Field(
        14_400_000, ge=0, description="Notify an open incident again after (ms); 0: never."
    )
    alert_check_interval: int = Field(
        5000, ge=100, description="How often the leading planner evaluates alert rules (ms)."
    )
    alert_delivery_attempts: int = Field(
        10, ge=1, le=1000, description="Attempts per alert and channel before it is marked failed."
    )
    alert_retry_delay: int = Field(
        1000, ge=10, description="Delay before a failed alert is sent again (ms); doubles, at most 5 min."
    )
    alert_no_leader_after: int = Field(
        60_000, ge=1000, description="scheduler:health alerts when no planner has led for this long (ms)."
    )
    alert_channels: dict[str, AlertChannel] = Field(
        default_factory=dict, description="Alert channels by name (JSON in SCHEDULER_ALERT_CHANNELS)."
    )

    # External commands: name -> argv list with {placeholders} filled from the task's data.
    commands: dict[str, list[str]] = Field(
        default_factory=dict, description="External commands (argv lists)."
    )

    @field_validator("commands")
    @classmethod
    def _argv_lists_are_not_empty(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, argv in value.items():
            if not argv:
                raise ValueError(f"command {name!r} has an empty argv list")
        return value

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str | None) -> str | None:
        return None if value is None else supported_database_url(value)

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'scheduler.db').as_posix()}"

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def is_embedded(self) -> bool:
        return self.effective_database_url.startswith("sqlite")


def supported_database_url(url: str) -> str:
    """``url``, ``postgres://`` spelt ``postgresql://``; ValueError unless SQLite or PostgreSQL (psycopg2 or
    psycopg 3)."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        raise ValueError(
            f"not a database URL: {url.split('@')[-1]!r} (expected postgresql://... or sqlite:///...)"
        )
    backend, _, driver = scheme.lower().partition("+")
    backend = DATABASE_ALIASES.get(backend, backend)
    if driver not in DATABASE_DRIVERS.get(backend, ()):
        raise ValueError(
            f"unsupported database {scheme!r}: use postgresql://user:password@host/db or sqlite:///path/file.db"
        )
    query = urllib.parse.parse_qs(rest.partition("?")[2], keep_blank_values=True)
    for value in query.get(PREPARE_THRESHOLD, []) if driver == "psycopg" else []:
        prepare_threshold(value)
    return f"{backend}{'+' + driver if driver else ''}://{rest}"


PREPARE_THRESHOLD = "prepare_threshold"  # psycopg 3's option, accepted in a postgresql+psycopg:// URL's query


def prepare_threshold(value: str) -> int | None:
    """psycopg 3's ``prepare_threshold`` as written in a URL: a whole number, or ``none`` (never prepare)."""
    value = value.strip().lower()
    if value == "none":
        return None
    if not value.isdigit():
        raise ValueError(
            f"{PREPARE_THRESHOLD} in the database URL must be a whole number or none, not {value!r}"
        )
    return int(value)


@dataclass(frozen=True)
class LoadedSettings:
    """Settings plus, per field, where its value came from (``default``, ``module.yaml``, or the env var)."""

    settings: Settings
    sources: dict[str, str]
    config_file: Path | None


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def unknown_variables(env: Mapping[str, str]) -> list[str]:
    """One warning per ``SCHEDULER_*`` variable that nothing reads, with the closest known name if any."""
    known = {env_name(name) for name in Settings.model_fields} | OTHER_ENV
    warnings = []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in known or name.startswith(TEST_ENV_PREFIX):
            continue
        from difflib import get_close_matches  # not imported by every CLI start

        close = get_close_matches(name, sorted(known), n=1, cutoff=0.8)
        hint = (
            f"did you mean {close[0]}?" if close else "see 'systemprompt scheduler:config' for the settings"
        )
        warnings.append(f"{name} is not a setting and is ignored ({hint})")
    return warnings


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    # Printed, not logged: it must reach a person before any process has configured its logging.
    if message not in _warned:
        _warned.add(message)
        print(f"warning: {message}", file=sys.stderr)


def _config_file(env: Mapping[str, str], explicit: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    if env.get(CONFIG_FILE_ENV):
        return Path(env[CONFIG_FILE_ENV])
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml  # only when there is a file to read

    try:
        # libyaml's parser when PyYAML was built with it (the wheels are): the same safe loading, ~6x faster.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=loader) or {}
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read {path}: {error}") from error
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    config = document.get("config") or {}
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: 'config' must be a mapping")
    values = {key: value for key, value in config.items() if value is not None}
    if document.get("commands"):
        values["commands"] = document["commands"]
    return values


def load_settings(env: Mapping[str, str] | None = None, config_file: Path | None = None) -> LoadedSettings:
    """Read ``module.yaml`` and ``SCHEDULER_*`` variables; raise :class:`ConfigError` naming the bad key."""
    env = os.environ if env is None else env
    path = _config_file(env, config_file)
    file_values = _read_yaml(path) if path is not None else {}
    by_alias = {info.alias or name: name for name, info in Settings.model_fields.items()}
    unknown = sorted(key for key in file_values if key not in by_alias and key not in Settings.model_fields)
    if unknown:
        raise ConfigError(f"{path}: unknown config key(s): {', '.join(unknown)}")
    file_values = {by_alias.get(key, key): value for key, value in file_values.items()}
    for warning in unknown_variables(env):
        _warn_once(warning)
    env_values: dict[str, Any] = {
        name: env[env_name(name)] for name in Settings.model_fields if env_name(name) in env
    }
    for name in JSON_FIELDS & env_values.keys():
        try:
            env_values[name] = json.loads(env_values[name])
        except json.JSONDecodeError as error:
            raise ConfigError(f"invalid setting {env_name(name)}: not JSON ({error.msg})") from None
    try:
        settings = Settings.model_validate({**file_values, **env_values})
    except SettingsValidationError as error:
        name = str(error.loc[0]) if error.loc else ""
        key = ".".join(str(part) for part in error.loc)
        if name in env_values:
            key += f" ({env_name(name)})"
        elif name in file_values:
            key += f" ({to_camel(name)} in {path})"
        message = error.msg.removeprefix("Value error, ")
        raise ConfigError(f"invalid setting {key}: {message}") from None
    sources: dict[str, str] = {}
    for name in Settings.model_fields:
        if name in env_values:
            sources[name] = f"env {env_name(name)}"
        elif name in file_values:
            sources[name] = str(path)
        else:
            sources[name] = "default"
    return LoadedSettings(settings=settings, sources=sources, config_file=path)
