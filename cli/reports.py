"""Verbs that read what happened and what will: history, logs, stats, audit, next, validate."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click

from cli.cells import Column, human_ms, show_value
from cli.context import get_service
from cli.options import (
    format_option,
    parse_jitter,
    parse_time,
    schedule_value,
    task_ref,
    warn_about_timezone,
)
from cli.render import print_fields, print_json, print_note, print_table, render
from scheduler.records import EXECUTION_STATUSES, iso_utc

if TYPE_CHECKING:
    from scheduler.records import AuditEntry, Execution, TaskStats

TASK_OPTION_HELP = "Only this task (id or name)."


def _status_text(execution: Execution) -> str:
    return f"{execution.status} ({execution.reason})" if execution.reason else execution.status


# drop_order: what a narrow terminal gives up first (see cli.table_fit); JSON always has every field.
EXECUTION_COLUMNS = (
    Column("id"),
    Column("task_name", "task"),
    Column("status", get=_status_text),
    Column("trigger", drop_order=1),
    Column("attempt", get=lambda e: f"{e.attempt}/{e.max_attempts}", drop_order=2),
    Column("scheduled_for", "scheduled for"),
    Column("started_at", "started", drop_order=4),
    Column("duration_ms", "duration", show=human_ms, flow="line", drop_order=3),
    Column("error", max_width=60, flow="text"),
)


@click.command("history")
@click.option("--task", "ref", metavar="ID|NAME", help=TASK_OPTION_HELP)
@click.option("--status", type=click.Choice(EXECUTION_STATUSES), help="Only executions with this status.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, metavar="N")
@format_option
@click.pass_context
def history(ctx: click.Context, ref: str | None, status: str | None, limit: int, output_format: str) -> None:
    """Show executions, newest first.

    JSON: an array of execution objects.
    """
    executions = get_service(ctx).history(
        task=None if ref is None else task_ref(ref), status=status, limit=limit
    )
    render(executions, EXECUTION_COLUMNS, output_format, empty="no executions")


@click.command("logs")
@click.option(
    "--execution", "execution_id", type=int, required=True, metavar="ID", help="The execution's id."
)
@format_option
@click.pass_context
def logs(ctx: click.Context, execution_id: int, output_format: str) -> None:
    """Show the log lines of an execution.

    Every attempt's lines, oldest first. JSON: an array of log line objects.
    """
    service = get_service(ctx)
    service.get_execution(execution_id)  # an unknown id is "not found" (3), not an empty list
    lines = service.logs(execution_id)
    columns = (Column("at"), Column("attempt", drop_order=1), Column("level"), Column("message", flow="text"))
    render(lines, columns, output_format, empty=f"execution {execution_id} has no log lines")


def _stats_pairs(stats: TaskStats) -> list[tuple[str, str]]:
    rate = "-" if stats.success_rate is None else f"{stats.success_rate:.1%}"
    shown: dict[str, str] = {"success_rate": rate}
    for key in ("avg_duration_ms", "p95_duration_ms"):
        shown[key] = human_ms(getattr(stats, key))
    return [(key, shown.get(key, show_value(value))) for key, value in _record_items(stats)]


def _record_items(record: Any) -> list[tuple[str, Any]]:
    return [(key, getattr(record, key)) for key in record.to_json()]


@click.command("stats")
@click.option("--task", "ref", metavar="ID|NAME", help="Only this task [default: all tasks].")
@format_option
@click.pass_context
def stats(ctx: click.Context, ref: str | None, output_format: str) -> None:
    """Show execution statistics.

    Counts, success rate and durations of one task or all. JSON: a stats object.
    """
    result = get_service(ctx).get_task_stats(None if ref is None else task_ref(ref))
    if output_format == "json":
        print_json(result.to_json())
    else:
        title = "all tasks" if result.task_id is None else f"task {result.task_id}"
        print_fields(_stats_pairs(result), title=f"statistics of {title}")


def _changes(entry: AuditEntry) -> str:
    before, after = entry.before or {}, entry.after or {}
    if entry.action == "checkpoint":
        return f"pruned {after.get('pruned_rows')} rows through row {after.get('pruned_through_id')}"
    if entry.action in ("create", "delete"):
        return ""
    changed = sorted(key for key in set(before) | set(after) if before.get(key) != after.get(key))
    ignored = {"updated_at"}
    return ", ".join(
        f"{key}: {show_value(before.get(key))} -> {show_value(after.get(key))}"
        for key in changed
        if key not in ignored
    )


def _database_identity(entry: AuditEntry) -> str:
    """Who wrote the row as the database saw it: ``login``, ``login as role`` when they differ; ``-`` on rows
    from before the identity was recorded."""
    if entry.db_user is None:
        return "-"
    if entry.db_role is not None and entry.db_role != entry.db_user:
        return f"{entry.db_user} as {entry.db_role}"
    return entry.db_user


AUDIT_COLUMNS = (
    Column("id"),
    Column("at"),
    Column("actor", drop_order=2),
    Column("db_user", "db user", get=_database_identity, drop_order=3),
    Column("action"),
    Column("task_id", "task id", drop_order=1),
    Column("task_name", "task"),
    Column("changes", get=_changes, max_width=80, flow="text"),
)


@click.command("audit")
@click.option("--task", "ref", metavar="ID|NAME", help=TASK_OPTION_HELP)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, metavar="N")
@click.option(
    "--verify",
    is_flag=True,
    help="Check the hash chain of the whole audit trail instead: exit 0 intact, 1 with the first broken row.",
)
@format_option
@click.pass_context
def audit(ctx: click.Context, ref: str | None, limit: int, verify: bool, output_format: str) -> int:
    """Show who changed which task.

    Newest first: the actor each change declared and the database user that wrote it (the authoritative
    one). JSON: an array of audit entry objects. With --verify: one line, "intact" or the first row that was
    changed or after which rows were deleted (exit 1); JSON: a verdict object.
    """
    if verify:
        if ref is not None:
            raise click.UsageError("--verify checks the whole trail; it takes no --task")
        verdict = get_service(ctx).verify_audit()
        if output_format == "json":
            print_json(verdict.to_json())
        elif verdict.intact:
            head = "" if verdict.head_id is None else f", head row {verdict.head_id} hash {verdict.head_hash}"
            click.echo(f"audit chain intact: {verdict.rows} rows{head}")
        else:
            click.echo(f"audit chain broken at row {verdict.broken_at}: {verdict.problem}")
        return 0 if verdict.intact else 1
    entries = get_service(ctx).audit(task=None if ref is None else task_ref(ref), limit=limit)
    render(entries, AUDIT_COLUMNS, output_format, empty="no audit entries")
    return 0


@click.command("next")
@click.option("--count", type=click.IntRange(1, 1000), default=5, show_default=True, metavar="N")
@click.option("--task", "ref", metavar="ID|NAME", help=TASK_OPTION_HELP)
@click.option("--from", "start", metavar="T", help="Fire times after this ISO-8601 time [default: now].")
@format_option
@click.pass_context
def next_runs(ctx: click.Context, count: int, ref: str | None, start: str | None, output_format: str) -> None:
    """Show the next fire times of tasks.

    Soonest first. A task's jitter is applied: "at" is when the slot really runs. A slot a calendar leaves
    out is listed with the reason (it will be recorded skipped, reason "excluded"); so is a slot skipped ahead
    with scheduler:skip, with who skipped it and the note. JSON: an array of
    {task_id, task_name, at, slot, schedule, excluded, skipped}.
    """
    after = None if start is None else parse_time(start, "from")
    runs = get_service(ctx).next_runs(task=None if ref is None else task_ref(ref), count=count, after=after)
    columns = (
        Column("at"),
        Column("task_id", "task id", drop_order=1),
        Column("task_name", "task"),
        Column("schedule", drop_order=2),
        Column("excluded", get=lambda run: run.excluded or "", max_width=50, flow="text"),
        Column("skipped", get=lambda run: run.skipped or "", max_width=50, flow="text"),
    )
    render(runs, columns, output_format, empty="no upcoming runs")


@click.command("validate")
@click.option(
    "--schedule",
    "schedules",
    required=True,
    multiple=True,
    help="The schedule to check, as --schedule of scheduler:create (repeatable: several schedules).",
)
@click.option("--timezone", default="UTC", show_default=True, metavar="TZ", help="IANA time zone.")
@click.option("--count", type=click.IntRange(1, 1000), default=5, show_default=True, metavar="N")
@click.option(
    "--from",
    "start",
    metavar="T",
    help="Fire times after this ISO-8601 time [default: from the first run create would give].",
)
@click.option("--jitter", metavar="DURATION", help="Check a jitter against the schedule, as create would.")
@click.option("--exclude", multiple=True, metavar="CALENDAR", help="Mark the slots this calendar excludes.")
@click.option("--only-in", multiple=True, metavar="CALENDAR", help="Mark the slots outside this calendar.")
@format_option
@click.pass_context
def validate(
    ctx: click.Context,
    schedules: tuple[str, ...],
    timezone: str,
    count: int,
    start: str | None,
    jitter: str | None,
    exclude: tuple[str, ...],
    only_in: tuple[str, ...],
    output_format: str,
) -> None:
    """Check a schedule and show its fire times.

    The rules are create's (an instant more than 60 s in the past is refused; a jitter longer than the
    schedule's interval too). Needs no database, unless calendars are named: then the slots they leave out
    are shown with the reason. The times are the nominal slots (a task's jitter offsets depend on the task:
    scheduler:next shows them).

    JSON: {schedule, kind, timezone, from, fire_times: [ISO-8601 UTC, ...], slots: [{at, schedule,
    excluded}, ...]} ("schedule" is a list when several were given).
    """
    from datetime import timedelta

    from scheduler.rules.schedules import validate_timezone
    from scheduler.rules.timing import local_time_label, preview_schedule

    # What SchedulerService.validate_schedule does, without building a service (it would open the database):
    # the rules create applies, so whatever validate accepts, create accepts.
    now = datetime.now(UTC)
    after = None if start is None else parse_time(start, "from")
    jitter_ms = None if jitter is None else parse_jitter(jitter)
    schedule = schedule_value(schedules)
    timezone = validate_timezone(timezone.strip()).key
    preview = preview_schedule(
        schedule,
        timezone=timezone,
        now=now,
        count=count,
        after=after,
        jitter=timedelta(milliseconds=jitter_ms) if jitter_ms else None,
    )
    rule = None
    if exclude or only_in:
        rule = get_service(ctx).calendar_rule(
            timezone=timezone, exclude=list(exclude) or None, only_in=list(only_in) or None
        )
    warn_about_timezone(timezone)
    kind, times = preview.kind, preview.fire_times
    excluded = [None if rule is None else rule.reason(t) for t in times]
    if output_format == "json":
        print_json(
            {
                "schedule": schedule,
                "kind": kind,
                "timezone": timezone,
                "from": iso_utc(after or now),
                "fire_times": [iso_utc(t) for t in times],
                "slots": [
                    {"at": iso_utc(t), "schedule": source, "excluded": reason}
                    for t, source, reason in zip(times, preview.sources, excluded, strict=True)
                ],
            }
        )
        return
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(timezone)
    shown = schedule if isinstance(schedule, str) else " | ".join(schedule or ())
    since = f"from now ({show_value(now)})" if after is None else f"after {show_value(after)}"
    if not times:
        print_note(f"{shown!r} is valid ({kind}) and never fires {since}")
        return
    print_note(f"{shown!r} is valid ({kind}, {timezone}); next fire times {since}:")
    rows = [
        {
            "n": n,
            "utc": t,
            "local": local_time_label(t, zone),
            "schedule": source,
            "excluded": reason or "",
        }
        for n, (t, source, reason) in enumerate(zip(times, preview.sources, excluded, strict=True), 1)
    ]
    local = Column("local", f"local ({timezone})", flow="line")
    columns = [Column("n", "#", drop_order=1), Column("utc", "UTC"), local]
    if not isinstance(schedule, str):
        columns.append(Column("schedule", drop_order=2))
    if rule is not None:
        columns.append(Column("excluded", max_width=50, flow="text"))
    print_table(rows, columns)


REPORT_COMMANDS: tuple[click.Command, ...] = (history, logs, stats, audit, next_runs, validate)
