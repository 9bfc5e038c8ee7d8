"""Verbs that change which slots run: backfill (with its dry run), backfills (list, follow, cancel), skip.

Input is parsed before the service is built, so a bad option never opens the database; the service checks the
range, the slot count and the data and raises a typed error (one line, exit 2, nothing stored).
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

import click

from cli.cells import Column
from cli.context import get_service
from cli.options import actor_option, format_option, parse_data, parse_time, task_ref
from cli.render import print_json, print_note, render, render_one
from scheduler.records import BACKFILL_STATUSES
from scheduler.rules.fields import validate_data

if TYPE_CHECKING:
    from scheduler.records import Backfill, BackfillSlot
    from scheduler.service import SchedulerService

FOLLOW_POLL_S = 0.5
# How a backfill's executions ended badly: following one exits 1 when any did.
UNSUCCESSFUL = ("failed", "timed_out", "lost", "cancelled")


def progress_text(backfill: Backfill) -> str:
    """``3/10 done (2 completed, 1 failed), 2 running, 5 waiting``: its executions by status."""
    counts = dict(backfill.progress or {})
    done = {s: n for s, n in counts.items() if s in ("completed", *UNSUCCESSFUL, "skipped")}
    parts = [f"{sum(done.values())}/{backfill.created} done"]
    if done:
        parts[0] += " (" + ", ".join(f"{n} {s}" for s, n in sorted(done.items())) + ")"
    for status in ("running", "retrying", "queued", "pending", "waiting"):
        if counts.get(status):
            parts.append(f"{counts[status]} {status}")
    return ", ".join(parts)


BACKFILL_COLUMNS = (
    Column("id"),
    Column("task_name", "task"),
    Column("status"),
    Column("range_from", "from", drop_order=3),
    Column("range_to", "to", drop_order=3),
    Column("max_parallel", "parallel", drop_order=2),
    Column("slots", drop_order=1),
    Column("progress", get=progress_text, flow="text"),
)


def _existing_text(slot: BackfillSlot) -> str:
    if slot.execution_id is not None:
        return f"{slot.execution_id} ({slot.execution_status})"
    return f"- ({slot.excluded})" if slot.excluded else "-"


SLOT_COLUMNS = (
    Column("at", "slot (UTC)"),
    Column("local", "local time", flow="line"),
    Column("existing", get=_existing_text),
    Column("dst_note", "DST", flow="text", drop_order=1),
)


@click.command("backfill")
@click.option("--id", "ref", required=True, metavar="ID|NAME", help="The task to backfill.")
@click.option(
    "--from", "start", required=True, metavar="T", help="First instant of the range (ISO-8601, inclusive)."
)
@click.option(
    "--to", "end", required=True, metavar="T", help="Last instant of the range (ISO-8601, inclusive)."
)
@click.option("--dry-run", is_flag=True, help="List the slots and which have an execution; store nothing.")
@click.option(
    "--max-parallel",
    type=int,
    default=1,
    show_default=True,
    metavar="N",
    help="Release at most N of its executions at a time (1..1000).",
)
@click.option(
    "--data", "data_json", metavar="JSON", help="Data merged over the task's for each run (its keys win)."
)
@click.option("--force", is_flag=True, help="Allow more than 10,000 slots (at most 100,000).")
@click.option("--follow", is_flag=True, help="After starting it, print its progress until it ends.")
@actor_option
@format_option
@click.pass_context
def backfill(
    ctx: click.Context,
    ref: str,
    start: str,
    end: str,
    dry_run: bool,
    max_parallel: int,
    data_json: str | None,
    force: bool,
    follow: bool,
    output_format: str,
) -> int:
    """Run a task's past slots that have no execution.

    The slots are the task's fire times from --from to --to (both inclusive; the range must be in the past),
    computed as scheduler:next computes them, in the task's time zone (DST: a repeated wall time runs once
    unless the hour field is *). --dry-run lists them with their wall time, a DST note and the execution a
    slot has already. Otherwise one execution per slot without one is created (trigger backfill; running the
    same backfill again creates nothing) and the planner releases at most --max-parallel at a time (one at a
    time unless the task's overlap policy is allow; none while the task is paused), within
    maxConcurrentTasks. Prints the backfill (JSON: the backfill object; --dry-run: an array of slot objects).
    Follow or cancel it with scheduler:backfills.
    """
    range_from, range_to = parse_time(start, "from"), parse_time(end, "to")
    data = None if data_json is None else validate_data(parse_data(data_json))
    service = get_service(ctx)
    if dry_run:
        slots = service.preview_backfill(task_ref(ref), start=range_from, end=range_to, force=force)
        render(slots, SLOT_COLUMNS, output_format, empty="no slot in this range")
        if output_format == "table" and slots:
            new = sum(1 for slot in slots if slot.execution_id is None and slot.excluded is None)
            taken = sum(1 for slot in slots if slot.execution_id is not None)
            excluded = (
                f", {len(slots) - new - taken} excluded by a calendar" if len(slots) - new - taken else ""
            )
            print_note(f"{len(slots)} slot(s): {new} would run, {taken} have an execution already{excluded}")
        return 0
    created = service.backfill(
        task_ref(ref), start=range_from, end=range_to, max_parallel=max_parallel, data=data, force=force
    )
    if follow:
        return follow_backfill(service, created, output_format)
    render_one(created, output_format, title=f"backfill {created.id} of task {created.task_name}")
    return 0


@click.command("backfills")
@click.option("--task", "ref", metavar="ID|NAME", help="Only this task's backfills.")
@click.option("--status", type=click.Choice(BACKFILL_STATUSES), help="Only backfills with this status.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, metavar="N")
@click.option(
    "--follow", "follow_id", type=int, metavar="ID", help="Print this backfill's progress until it ends."
)
@click.option("--cancel", "cancel_id", type=int, metavar="ID", help="Cancel this backfill.")
@actor_option
@format_option
@click.pass_context
def backfills(
    ctx: click.Context,
    ref: str | None,
    status: str | None,
    limit: int,
    follow_id: int | None,
    cancel_id: int | None,
    output_format: str,
) -> int:
    """List backfills newest first, follow one, or cancel one.

    'progress' counts a backfill's executions by status. --follow ID prints its progress whenever it changes
    until it ends (exit 0 when every execution completed, 1 when one failed, timed out, was lost or
    cancelled; JSON: one backfill object per change). --cancel ID cancels the executions it has not started
    (those running finish) and prints it. JSON: an array of backfill objects.
    """
    if follow_id is not None and cancel_id is not None:
        raise click.UsageError("--follow and --cancel cannot be combined")
    service = get_service(ctx)
    if cancel_id is not None:
        cancelled = service.cancel_backfill(cancel_id)
        render_one(cancelled, output_format, title=f"backfill {cancelled.id}: {cancelled.status}")
        return 0
    if follow_id is not None:
        return follow_backfill(service, service.get_backfill(follow_id), output_format)
    found = service.backfills(task=None if ref is None else task_ref(ref), status=status, limit=limit)
    render(found, BACKFILL_COLUMNS, output_format, empty="no backfills")
    return 0


def follow_backfill(service: SchedulerService, backfill: Backfill, output_format: str) -> int:
    """Print the backfill's progress whenever it changes until it is no longer running; exit 1 if any of its
    executions did not complete (or it was cancelled)."""
    shown: tuple[str, dict[str, int]] | None = None
    while True:
        state = (backfill.status, dict(backfill.progress or {}))
        if state != shown:
            shown = state
            if output_format == "json":
                print_json(backfill.to_json())
            else:
                name, status = backfill.task_name, backfill.status
                click.echo(f"backfill {backfill.id} ({name}): {status}, {progress_text(backfill)}")
            sys.stdout.flush()
        if backfill.status != "running":
            break
        time.sleep(FOLLOW_POLL_S)
        backfill = service.get_backfill(backfill.id)
    bad = backfill.status == "cancelled" or any((backfill.progress or {}).get(s) for s in UNSUCCESSFUL)
    return 1 if bad else 0


@click.command("skip")
@click.option("--id", "ref", required=True, metavar="ID|NAME", help="The task's id or name.")
@click.option(
    "--count", type=int, default=1, show_default=True, metavar="N", help="How many slots (1..1000)."
)
@click.option("--note", help="Why, shown in history and the audit log.")
@actor_option
@format_option
@click.pass_context
def skip(ctx: click.Context, ref: str, count: int, note: str | None, output_format: str) -> None:
    """Skip a task's next N slots.

    Each of the next N slots without an execution is recorded now as skipped (reason skipped_by_user, the
    error naming who skipped it and the note); when its time comes the planner moves past it. Only an active
    task can skip. Prints the skipped executions (JSON: an array of execution objects).
    """
    from cli.reports import EXECUTION_COLUMNS

    skipped = get_service(ctx).skip(task_ref(ref), count=count, note=note)
    title = f"skipped {len(skipped)} slot(s) of task {skipped[0].task_name}" if skipped else None
    render(skipped, EXECUTION_COLUMNS, output_format, title=title, empty="no slot skipped")


SCHEDULE_COMMANDS: tuple[click.Command, ...] = (backfill, backfills, skip)
