"""Engine verbs: run, planner, worker, serve, cleanup, events.

Heavy imports (Celery, SQLAlchemy, redis) happen inside the verbs. An unreachable broker is
``error: broker unreachable: ...`` with exit 69, like an unreachable database.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from cli.cells import human_ms
from cli.context import get_service, get_settings
from cli.options import format_option, parse_data, task_ref
from cli.render import print_json, print_note, render_one

if TYPE_CHECKING:
    from scheduler.records import TickReport
    from scheduler.settings import Settings


def _engine(settings: Settings) -> Any:
    """An engine on a usable schema: the embedded one is upgraded; an outdated server one is refused (69)."""
    from scheduler.storage.schema import open_database

    return open_database(settings)


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="[%(asctime)s: %(levelname)s/%(processName)s] %(message)s"
    )


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM while the block runs (the previous handlers come back after)."""
    stop = threading.Event()

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# ------------------------------------------------------------------------------------------------- run


@click.command("run")
@click.option("--id", "ref", required=True, metavar="ID|NAME", help="The task to run now.")
@click.option(
    "--wait", is_flag=True, help="Wait until the execution finishes; exit 1 if it did not complete."
)
@click.option("--follow", is_flag=True, help="Print its log lines while it runs (implies --wait).")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    metavar="S",
    help="Stop waiting after S seconds (exit 1; the execution goes on).",
)
@click.option(
    "--data",
    "data_json",
    metavar="JSON",
    help="This run's data: a JSON object merged over the task's data (its keys win).",
)
@format_option
@click.pass_context
def run(
    ctx: click.Context,
    ref: str,
    wait: bool,
    follow: bool,
    timeout_s: float | None,
    data_json: str | None,
    output_format: str,
) -> int:
    """Run a task now, outside its schedule.

    Publishes a manual execution to the task's queue. Without --wait, prints it (status queued) and exits 0.
    With --wait, exit 0 when it completed, 1 when it failed, timed out or was cancelled; prints its result or
    error. On a terminal it shows queued, running and the outcome as they happen (on stderr); it warns when
    no live worker consumes the queue or has the command, and keeps waiting. Ctrl-C stops waiting, not the
    execution (exit 130). JSON: the execution object (with --follow, log line objects first, one per line).

    --data gives this run its own data: the command sees the task's data with these keys set over it
    (top-level keys; the run's value wins). History shows it with secret-looking values hidden.
    """
    from cli.waiting import wait_and_report

    data = None if data_json is None else parse_data(data_json)  # bad data: exit 2 before anything else
    service = get_service(ctx)  # the database first: unreachable is exit 69
    settings = get_settings(ctx)
    from workers.wiring import celery_publisher

    service.publisher = celery_publisher(settings, check=True)
    execution = service.run_task_now(task_ref(ref), data=data)
    if not (wait or follow):
        render_one(execution, output_format)
        return 0
    return wait_and_report(
        service, settings, execution, timeout_s=timeout_s, follow=follow, output_format=output_format
    )


# -------------------------------------------------------------------------------- planner, worker, serve


def tick_summary(report: TickReport) -> str:
    """One tick in words, for ``planner --once``: what it found and did, and what is left."""
    took = human_ms(report.duration_s * 1000)
    if not report.leader:
        return f"standby: another planner holds the lease, so this tick did nothing ({took})"
    counts = (
        (report.due, "due task(s)"), (report.created, "execution(s) created"),
        (report.dispatched, "published to the broker"), (report.skipped, "skipped or cancelled"),
        (report.misfired, "missed slot(s) beyond their grace"), (report.requeued, "requeued"),
        (report.lost, "marked lost"), (report.cleaned, "cleaned up"),
        (report.resumed, "resumed after a timed pause"), (report.released, "backfill execution(s) released"),
    )  # fmt: skip
    done = ", ".join(f"{count} {what}" for count, what in counts if count) or "nothing was due"
    lines = [f"one tick as the leader ({took}): {done}"]
    if report.more:
        lines.append("more tasks are due: the next tick goes on with them")
    if report.broker_error:
        lines.append(f"publishing failed: {report.broker_error} (the executions wait for the next tick)")
    return "\n".join(lines)


@click.command("planner")
@click.option("--once", is_flag=True, help="Run one tick, print what it did, and exit.")
@format_option
@click.pass_context
def planner(ctx: click.Context, once: bool, output_format: str) -> int:
    """Run the planner: due slots become executions on the broker.

    Planners elect one leader by lease; start several for a standby. Stops cleanly on Ctrl-C or SIGTERM
    (the lease is released so a standby takes over at once). JSON (--once): the tick report.
    """
    from dataclasses import asdict

    from scheduler.observability.metrics import start_metrics_server
    from workers import wiring

    settings = get_settings(ctx)
    # The planner runs no command, but it refuses a registry the workers refuse (a command defined twice):
    # planning for a fleet that cannot start would only pile executions up on the broker.
    wiring.commands(settings)
    engine = _engine(settings)
    _configure_logging(settings)  # after the schema check: Alembic's own INFO lines are noise here
    try:
        loop = wiring.planner(settings, engine)
        if once:
            from scheduler.storage.errors import translate_db_errors

            with translate_db_errors():  # a refused role is exit 77, an unreachable database 69
                report = loop.tick()
                loop.lease.release()
            if output_format == "json":
                print_json(asdict(report))
            else:
                print_note(tick_summary(report))
            return 0
        start_metrics_server(settings)  # on SCHEDULER_METRICS_PORT when set; a daemon thread
        log = logging.getLogger("scheduler.planning.planner")
        with _stop_on_signals() as stop:
            log.info("planner %s started; Ctrl-C or SIGTERM stops it", loop.holder)
            loop.run_forever(stop)  # logs that it stopped, and whether its lease was released
        return 0
    finally:
        engine.dispose()


def _has_option(args: Sequence[str], *names: str) -> bool:
    return any(arg in names or arg.startswith(tuple(f"{name}=" for name in names)) for arg in args)


@click.command("worker", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def worker(ctx: click.Context, celery_args: tuple[str, ...]) -> int:
    """Run a Celery worker; arguments go to 'celery worker' as they are.

    Example: systemprompt scheduler:worker -P prefork -c 4 -Q default,reports. Without -Q it consumes the
    default queue (SCHEDULER_DEFAULT_QUEUE). Time limits are enforced by the prefork pool (the default).
    """
    from workers.app import create_app
    from workers.wiring import commands

    settings = get_settings(ctx)
    # Commands, then the schema, checked with a one-line error before Celery starts (commands first: a worker
    # that cannot start creates no database).
    commands(settings)
    _engine(settings).dispose()
    argv = ["worker", *celery_args]
    if not _has_option(celery_args, "-Q", "--queues"):
        argv += ["-Q", settings.default_queue]
    if not _has_option(celery_args, "-l", "--loglevel"):
        argv += ["--loglevel", settings.log_level]
    try:
        create_app(settings).worker_main(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 0
    return 0


@click.command("serve")
@click.option("--flower", is_flag=True, help="Also start Flower (the Celery monitor) for the same broker.")
@click.option("--web", is_flag=True, help="Also start the operator web console (docs/web.md) on loopback.")
@click.option(
    "--web-port", type=click.IntRange(1, 65535), default=8470, show_default=True, metavar="PORT",
    help="The web console's port (with --web).",
)  # fmt: skip
@click.option("--demo", is_flag=True, help="Create the task 'demo-echo-2s' (test:echo every 2 s) if absent.")
@click.option("--concurrency", type=click.IntRange(min=1), default=2, show_default=True, metavar="N")
@click.option("--queue", "queues", multiple=True, metavar="Q", help="Also consume Q (repeatable).")
@click.pass_context
def serve(
    ctx: click.Context,
    flower: bool,
    web: bool,
    web_port: int,
    demo: bool,
    concurrency: int,
    queues: tuple[str, ...],
) -> int:
    """Run planner and worker in one foreground process.

    Made for the embedded default (SQLite and a local broker under ./.scheduler, no servers). The worker
    uses the prefork pool with N processes, so time limits are enforced. Ctrl-C stops it: running executions
    finish first (a second Ctrl-C kills them; the planner's recovery sweep then retries them).
    """
    from scheduler.storage.errors import translate_db_errors
    from workers.serve import serve as serve_forever
    from workers.wiring import commands

    settings = get_settings(ctx)
    commands(settings)  # a command defined twice is one line before anything starts
    with translate_db_errors():
        return serve_forever(
            settings,
            flower=flower,
            web_port=web_port if web else None,
            demo=demo,
            concurrency=concurrency,
            queues=queues,
            loglevel=settings.log_level,
        )


# ----------------------------------------------------------------------------------------- cleanup, events


@click.command("cleanup")
@format_option
@click.pass_context
def cleanup(ctx: click.Context, output_format: str) -> int:
    """Delete finished executions older than historyRetentionDays, with their logs, and audit rows older
    than auditRetentionDays (0: none).

    In bounded batches; running and pending executions are never deleted; pruned audit rows leave a
    checkpoint row, so `scheduler:audit --verify` still holds. JSON: {deleted, retention_days, audit_pruned,
    audit_retention_days}.
    """
    from scheduler.planning.cleanup import cleanup_step
    from scheduler.storage.errors import translate_db_errors

    settings = get_settings(ctx)
    engine = _engine(settings)
    try:
        with translate_db_errors():
            result = cleanup_step(engine, settings)
    finally:
        engine.dispose()
    days, audit_days = settings.history_retention_days, settings.audit_retention_days
    if output_format == "json":
        print_json(
            {
                "deleted": result.deleted,
                "retention_days": days,
                "audit_pruned": result.audit_pruned,
                "audit_retention_days": audit_days,
            }
        )
    else:
        print_note(f"deleted {result.deleted} finished executions older than {days} days")
        if audit_days:
            print_note(f"pruned {result.audit_pruned} audit rows older than {audit_days} days")
    return 0


@click.command("events")
@click.option("--follow", is_flag=True, help="Keep printing new events until Ctrl-C.")
@click.option(
    "--recent",
    type=click.IntRange(0, 1000),
    default=20,
    show_default=True,
    metavar="N",
    help="Print the N latest events first.",
)
@click.pass_context
def events(ctx: click.Context, follow: bool, recent: int) -> int:
    """Print task events, one JSON object per line.

    Events of every process of this deployment (service, planner, workers) travel on the Redis pub/sub
    channel '<eventsPrefix>:events:<broker database number>'; this needs a Redis broker. Each line:
    {"event", "at", ...payload}.
    """
    import redis

    from scheduler.errors import BrokerUnavailable, ConfigError
    from workers.remote_events import events_channel, is_redis_url, listen

    settings = get_settings(ctx)
    url = settings.effective_broker_url
    if not is_redis_url(url):
        raise ConfigError("events travel on Redis pub/sub: set SCHEDULER_BROKER_URL to a redis:// URL")
    try:
        with _stop_on_signals() as stop:
            for event in listen(url, events_channel(settings), recent=recent, follow=follow, stop=stop):
                click.echo(json.dumps(event, ensure_ascii=False, separators=(",", ":")))
                sys.stdout.flush()
    except (redis.ConnectionError, redis.TimeoutError) as error:
        raise BrokerUnavailable(str(error).splitlines()[0]) from None
    return 0


ENGINE_COMMANDS: list[click.Command] = [run, planner, worker, serve, cleanup, events]
