"""Verbs about the installation rather than tasks: commands, config, migrate."""

from __future__ import annotations

import os
import re
import shlex
from typing import TYPE_CHECKING, Any

import click

from cli.cells import Column
from cli.context import get_loaded_settings, get_settings
from cli.options import format_option
from cli.render import print_json, print_note, print_table, render

if TYPE_CHECKING:
    from scheduler.settings import AlertChannel

_URL_PASSWORD = re.compile(r"(?P<head>://[^/@:?#]*:)(?P<password>[^/@?#]*)@")
MASK = "***"


def mask_url(url: str | None) -> str | None:
    """The URL with its password replaced by ``***`` (``postgresql://user:***@host/db``)."""
    if url is None:
        return None
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{MASK}@", url)


def _shown_setting(name: str, value: Any) -> Any:
    if name in ("database_url", "broker_url"):
        return mask_url(value)
    if name == "flower_basic_auth" and isinstance(value, str):
        user, _, _password = value.partition(":")
        return f"{user}:{MASK}"
    if name == "alert_channels":
        return {channel: _shown_channel(config) for channel, config in value.items()}
    if name == "web_users" and isinstance(value, str):  # name:role:hash -> name:role:***
        return ",".join(entry.rpartition(":")[0] + f":{MASK}" for entry in value.split(","))
    if name == "web_secret" and value:
        return MASK
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _shown_channel(config: AlertChannel) -> dict[str, Any]:
    """A channel's settings as set; its URL without user info, a Slack URL without its path (its token).
    Secrets themselves are never settings: only the names of the variables holding them are."""
    fields = type(config).model_fields
    shown = {
        info.alias or name: getattr(config, name)
        for name, info in fields.items()
        if getattr(config, name) != info.default_value()
    }
    if config.url is not None:
        scheme, _, rest = (mask_url(config.url) or "").partition("://")
        shown["url"] = (
            f"{scheme}://{rest.partition('/')[0]}/{MASK}" if config.type == "slack" else mask_url(config.url)
        )
    return shown


@click.command("commands")
@format_option
@click.pass_context
def commands(ctx: click.Context, output_format: str) -> None:
    """List the commands a task may name.

    JSON: an array of {name, kind, description, argv, placeholders}.
    """
    from scheduler.commands.loading import load_registry
    from scheduler.commands.registry import placeholders
    from workers.runtime_commands import deferred_worker_runtime

    # As workers.wiring.commands builds it, without importing the wiring's database modules (a reading verb).
    settings = get_settings(ctx)
    specs = load_registry(settings, runtime=deferred_worker_runtime(settings)).specs()
    rows = [
        {
            "name": spec.name,
            "kind": spec.kind,
            "description": spec.description,
            "argv": None if spec.argv is None else list(spec.argv),
            "placeholders": sorted(placeholders(spec)),
        }
        for spec in specs
    ]
    columns = (
        Column("name"),
        Column("kind"),
        Column("description", max_width=70, flow="text"),
        Column("argv", get=lambda row: "-" if row["argv"] is None else shlex.join(row["argv"]), flow="text"),
    )
    render(rows, columns, output_format, empty="no commands registered")


@click.command("config")
@format_option
@click.pass_context
def config(ctx: click.Context, output_format: str) -> None:
    """Show the effective settings and their sources.

    Each value comes from its default, module.yaml, or a SCHEDULER_* variable.

    JSON: {config_file, database_url, broker_url, settings: [{name, key, env, value, source}]};
    passwords in URLs are shown as ***.
    """
    from scheduler.settings import Settings, env_name

    loaded = get_loaded_settings(ctx)
    settings = loaded.settings
    rows = [
        {
            "name": name,
            "key": info.alias or name,
            "env": env_name(name),
            "value": _shown_setting(name, getattr(settings, name)),
            "source": loaded.sources[name],
        }
        for name, info in Settings.model_fields.items()
    ]
    summary = {
        "config_file": None if loaded.config_file is None else loaded.config_file.as_posix(),
        "database_url": mask_url(settings.effective_database_url),
        "broker_url": mask_url(settings.effective_broker_url),
    }
    if output_format == "json":
        print_json({**summary, "settings": rows})
        return
    print_note(
        f"config file: {summary['config_file'] or '(none)'}\n"
        f"database:    {summary['database_url']}\nbroker:      {summary['broker_url']}"
    )
    columns = (
        Column("name", flow="line"),
        Column("env", flow="line", drop_order=1),
        Column("value", max_width=70),
        Column("source", flow="line"),
    )
    print_table(rows, columns)


@click.command("migrate")
@format_option
@click.pass_context
def migrate(ctx: click.Context, output_format: str) -> None:
    """Upgrade the database schema.

    Brings the configured database to this version's schema. JSON: {database, from, to, changed}.
    """
    from scheduler.storage.db import engine_from_settings
    from scheduler.storage.errors import translate_db_errors
    from scheduler.storage.schema import current_revision, upgrade

    settings = get_settings(ctx)
    engine = engine_from_settings(settings)
    try:
        with translate_db_errors():
            before = current_revision(engine)
            upgrade(engine)
            after = current_revision(engine)
    finally:
        engine.dispose()
    result = {
        "database": mask_url(settings.effective_database_url),
        "from": before,
        "to": after,
        "changed": before != after,
    }
    if output_format == "json":
        print_json(result)
        return
    if before is None:
        state = f"created the scheduler tables (schema revision {after})"
    elif result["changed"]:
        state = f"upgraded the schema from revision {before} to {after}"
    else:
        state = f"the schema is already at revision {after}, the newest: nothing to do"
    print_note(f"{result['database']}: {state}")


ADMIN_COMMANDS: tuple[click.Command, ...] = (commands, config, migrate)
