"""Verbs for operators: health (a probe that answers with its exit code), flower (the Celery monitor) and web
(the operator console, docs/web.md)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import click

from cli.cells import Column
from cli.context import get_settings
from cli.options import format_option
from cli.render import print_json, print_table
from scheduler.errors import ConfigError
from web.server import DEFAULT_ADDRESS as DEFAULT_WEB_ADDRESS
from web.server import DEFAULT_PORT as DEFAULT_WEB_PORT
from web.server import is_loopback

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from scheduler.settings import Settings
    from web.live import EventSource
    from workers.health import CheckResult

CHECK_NAMES = (
    "database",
    "broker",
    "planner",
    "workers",
)  # workers.health.CHECKS, without importing it
DEFAULT_FLOWER_ADDRESS = "127.0.0.1"
DEFAULT_FLOWER_PORT = 5555


# ------------------------------------------------------------------------------------------------ health


def _parse_check_option(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[str, ...]:
    from workers.health import parse_checks

    if value is None:
        return CHECK_NAMES
    try:
        return parse_checks(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _complete_checks(_ctx: click.Context, _param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Shell completion of ``--check a,b,<TAB>``: the names not given yet."""
    from click.shell_completion import CompletionItem

    done, _, last = incomplete.rpartition(",")
    given = {name.strip() for name in done.split(",")}
    prefix = f"{done}," if done else ""
    return [
        CompletionItem(prefix + name) for name in CHECK_NAMES if name.startswith(last) and name not in given
    ]


@click.command("health")
@click.option(
    "--check",
    "checks",
    metavar="NAMES",
    callback=_parse_check_option,
    shell_complete=_complete_checks,
    help=f"Comma-separated subset of: {', '.join(CHECK_NAMES)} [default: all].",
)
@click.option(
    "--alert",
    is_flag=True,
    help="Also alert (once, to every alert channel) when no planner has led for alertNoLeaderAfter.",
)
@format_option
@click.pass_context
def health(ctx: click.Context, checks: tuple[str, ...], alert: bool, output_format: str) -> int:
    """Check the database, the broker, a leading planner and a worker; exit 0 if all answer, 1 if not.

    For container and Kubernetes probes: each check is bounded (a few seconds to connect, a 1 s worker
    ping), and a failure is named on stderr ('error: unhealthy: broker (...)'). 'planner' passes when any
    planner holds an unexpired lease, so a standby planner is healthy too. A process that needs only some
    services checks those: --check database,broker.

    'workers' also warns (on stderr, exit code unchanged) about active tasks that no live worker will run:
    no worker consumes their queue, or none on it has their command (a worker started before the command was
    installed: restart it).

    --alert: when no planner has held the lease for longer than alertNoLeaderAfter, open the 'no_leader'
    incident and send it to the alert channels (once: later runs see it open); the next leading planner
    resolves it. Run it from a timer or a CronJob on another host (docs/alerts.md).

    JSON: {ok, checks: [{name, ok, detail, warnings}]}.
    """
    from workers.health import run_checks

    settings = get_settings(ctx)
    results = run_checks(settings, checks)
    if alert:
        _alert_without_leader(settings)
    healthy = all(result.ok for result in results)
    if output_format == "json":
        print_json(
            {"ok": healthy, "checks": [{**r._asdict(), "warnings": list(r.warnings)} for r in results]}
        )
    else:
        columns = (Column("name", "check"), Column("ok", "status", show=_status), Column("detail"))
        print_table(results, columns)
    for warning in (warning for result in results for warning in result.warnings):
        click.echo(f"warning: {warning}", err=True)
    if healthy:
        return 0
    click.echo(f"error: unhealthy: {_failures(results)}", err=True)
    return 1


def _alert_without_leader(settings: Settings) -> None:
    from scheduler.alerting.no_leader import alert_no_leader
    from workers import wiring

    engine = wiring.open_database(settings)
    try:
        incident = alert_no_leader(
            engine, settings, wiring.alert_senders(settings), events=wiring.event_bus(settings)
        )
    finally:
        engine.dispose()
    if incident is not None:
        click.echo(f"warning: alert {incident.id} open: {incident.detail}", err=True)


def _status(ok: bool) -> str:
    return "ok" if ok else "FAILED"


def _failures(results: Sequence[CheckResult]) -> str:
    return "; ".join(f"{result.name} ({result.detail})" for result in results if not result.ok)


# ------------------------------------------------------------------------------------------------ flower


def basic_auth_value(settings: Settings) -> str | None:
    """``settings.flower_basic_auth`` checked as ``user:password[,user:password...]``; ConfigError if not."""
    value = settings.flower_basic_auth
    if value is None or not value.strip():
        return None
    for entry in value.split(","):
        user, colon, password = entry.partition(":")
        if not (colon and user.strip() and password):
            raise ConfigError(
                "invalid setting flower_basic_auth (SCHEDULER_FLOWER_BASIC_AUTH): expected user:password "
                "(several separated by commas)"
            )
    return value


def _option_name(arg: str) -> str:
    return arg.lstrip("-").partition("=")[0].replace("-", "_")


def _check_flower_args(args: Sequence[str]) -> None:
    """Unknown Flower options are an error here (Flower itself would drop them silently)."""
    from flower.command import is_flower_option

    for arg in args:
        if not arg.startswith("--"):
            raise click.UsageError(f"Flower options take the form --name=value; got {arg!r}")
        if not is_flower_option(arg):
            raise click.UsageError(f"unknown Flower option {arg.partition('=')[0]}")


def flower_argv(settings: Settings, address: str, port: int, flower_args: Sequence[str]) -> list[str]:
    """The ``celery`` command line (without the program) that runs Flower with these options.

    Raises :class:`ConfigError` (exit 2) when ``address`` is not loopback and no authentication is set.
    """
    auth = basic_auth_value(settings)
    passed = {_option_name(arg) for arg in flower_args}
    authenticated = auth is not None or bool(passed & {"basic_auth", "auth"})
    if not is_loopback(address) and not authenticated:
        shown = address or "every interface"
        raise ConfigError(
            f"refusing to serve Flower on {shown} without authentication: set "
            "SCHEDULER_FLOWER_BASIC_AUTH=user:password, or listen on --address=127.0.0.1"
        )
    argv = ["flower", f"--address={address}", f"--port={port}"]
    if auth is not None and "basic_auth" not in passed:
        argv.append(f"--basic-auth={auth}")
    if "logging" not in passed:
        argv.append(f"--logging={settings.log_level.strip().lower()}")
    return [*argv, *flower_args]


@click.command("flower", context_settings={"ignore_unknown_options": True})
@click.option(
    "--address",
    default=DEFAULT_FLOWER_ADDRESS,
    show_default=True,
    help="Interface to listen on. Anything but loopback requires SCHEDULER_FLOWER_BASIC_AUTH.",
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=DEFAULT_FLOWER_PORT, show_default=True, metavar="PORT"
)
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def flower(ctx: click.Context, address: str, port: int, flower_args: tuple[str, ...]) -> int:
    """Run Flower, the Celery monitor, on this scheduler's broker.

    Flower shows each execution as '<command> [<task name>]' with the execution id as its argument. Basic
    auth comes from SCHEDULER_FLOWER_BASIC_AUTH (user:password); without it Flower may listen on loopback
    only. Further arguments go to Flower as --name=value (e.g. --max-tasks=50000 --url-prefix=flower; see
    'celery flower --help'). Stops on Ctrl-C or SIGTERM.
    """
    settings = get_settings(ctx)
    argv = flower_argv(settings, address, port, flower_args)
    _check_flower_args(flower_args)
    from workers.app import create_app

    app = create_app(settings)
    try:
        code = app.start(argv)
    except OSError as error:  # the port is taken, the address is not ours, ...
        detail = error.strerror or str(error)
        raise click.ClickException(f"Flower cannot listen on {address}:{port}: {detail}") from None
    return code if isinstance(code, int) else 0


# --------------------------------------------------------------------------------------------------- web


@click.command("web")
@click.option(
    "--address",
    default=DEFAULT_WEB_ADDRESS,
    show_default=True,
    help="Interface to listen on. Anything but loopback requires SCHEDULER_WEB_USERS.",
)
@click.option(
    "--port", type=click.IntRange(1, 65535), default=DEFAULT_WEB_PORT, show_default=True, metavar="PORT"
)
@click.option(
    "--hash-password",
    "hash_only",
    is_flag=True,
    help="Read a password on standard input, print its hash for SCHEDULER_WEB_USERS, and exit.",
)
@click.pass_context
def web_console(ctx: click.Context, address: str, port: int, hash_only: bool) -> int:
    """Run the operator web console: tasks, their past and next slots, executions with live logs, and
    run now / pause / resume / create / edit / delete by role (docs/web.md).

    Users and roles come from SCHEDULER_WEB_USERS (name:role:hash; roles viewer, operator, admin); without
    it the console serves on loopback only, where everyone is an admin. Stops on Ctrl-C or SIGTERM.
    """
    if hash_only:
        from web.auth import hash_password

        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise click.UsageError("no password on standard input")
        click.echo(hash_password(password))
        return 0
    from web.auth import parse_users
    from web.server import check_bind, run
    from workers.remote_events import events_channel, is_redis_url, listen
    from workers.wiring import celery_publisher, open_service

    settings = get_settings(ctx)
    parse_users(settings.web_users)  # a malformed setting is one line, before anything starts
    check_bind(settings, address)
    service = open_service(settings, publisher=celery_publisher(settings, check=False))
    events: EventSource | None = None
    if is_redis_url(settings.effective_broker_url):  # the deployment's events wake the live tails at once
        url, channel = settings.effective_broker_url, events_channel(settings)

        def follow(stop: threading.Event) -> Iterator[dict[str, Any]]:
            return listen(url, channel, stop=stop)

        events = follow
    try:
        run(service, address, port, log_level=settings.log_level.strip().lower(), events=events)
    except OSError as error:
        detail = error.strerror or str(error)
        raise click.ClickException(f"the web console cannot listen on {address}:{port}: {detail}") from None
    return 0


OPERATIONS_COMMANDS: tuple[click.Command, ...] = (health, flower, web_console)
