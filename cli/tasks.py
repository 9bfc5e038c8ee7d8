"""Verbs that define tasks: list, create, update, delete, pause, resume.

Input is parsed before the service is built, so a bad option never opens the database; the service validates
every field and raises a typed error the root group turns into one line and an exit code.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from cli.cells import Column, human_ms, show_value
from cli.context import get_service
from cli.options import (
    actor_option,
    format_option,
    parse_time,
    task_definition_options,
    task_fields,
    task_ref,
    warn_about_timezone,
)
from cli.render import print_note, render, render_one
from scheduler.errors import InvalidInput, SchedulerError
from scheduler.records import FAILURE_STATUSES, TASK_STATUSES

if TYPE_CHECKING:
    from datetime import datetime

    from scheduler.records import ListedTask, Task


def _schedule_text(task: Task) -> str:
    text = " | ".join(task.schedules) if task.schedules else task.schedule
    if task.jitter_ms:
        text += f" ~{human_ms(task.jitter_ms)}"
    return text if task.timezone == "UTC" else f"{text} ({task.timezone})"


def _status_text(task: Task) -> str:
    status = task.status
    if task.status == "paused" and task.paused_until is not None:
        status += f" until {show_value(task.paused_until)}"
    return f"{status} ({task.status_reason})" if task.status_reason else status


def _next_run(task: Task) -> datetime | None:
    # Only an active task fires (scheduler:next); a paused one keeps its stored slot but shows none.
    return task.next_run_at if task.status == "active" else None


def _outcome_text(task: ListedTask) -> str:
    """``completed``, ``failed``; a failure streak of two or more says how long: ``failed (45 in a row)``."""
    if task.last_outcome is None:
        return "-"
    streak = task.consecutive_failures
    if task.last_outcome in FAILURE_STATUSES and streak > 1:
        return f"{task.last_outcome} ({streak} in a row)"
    return task.last_outcome


DEFAULT_LIST_LIMIT = 100  # tasks a `list` table shows unless --limit or --all says otherwise

TASK_COLUMNS = (
    Column("id"),
    Column("name"),
    Column("command", drop_order=3),
    Column("schedule", get=_schedule_text),
    Column("status", get=_status_text, max_width=64),
    Column("next_run_at", "next run", get=_next_run),
    Column("last_run_at", "last run", drop_order=2),
    Column("run_count", "sched. runs", drop_order=1),
)
# drop_order: what a narrow terminal gives up first (see cli.table_fit). list: also how the last run ended.
# "sched. runs" is run_count: slots the planner dispatched (what --max-runs limits); manual runs don't count.
LIST_COLUMNS = (
    *TASK_COLUMNS[:-1],
    Column("last_outcome", "last outcome", get=_outcome_text, flow="line"),
    TASK_COLUMNS[-1],
)


def render_tasks(tasks: list[Task], output_format: str, *, title: str | None = None, empty: str) -> None:
    render(tasks, TASK_COLUMNS, output_format, title=title, empty=empty)


def _task_title(verb: str, task: Task) -> str:
    return f"{verb} task {task.id} ({task.name})"


@click.command("list")
@click.option("--status", type=click.Choice(TASK_STATUSES), help="Only tasks with this status.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    metavar="N",
    help=f"At most N tasks (by id). Default: {DEFAULT_LIST_LIMIT} in a table, all in JSON.",
)
@click.option("--all", "show_all", is_flag=True, help="Every task, also in a table.")
@format_option
@click.pass_context
def list_tasks(
    ctx: click.Context, status: str | None, limit: int | None, show_all: bool, output_format: str
) -> None:
    """List tasks, with how each one's last run ended.

    A table shows the first tasks by id and how many more there are. 'last outcome' is the status of the
    latest finished run, with the failure streak when two or more failed in a row; 'sched. runs' counts the
    runs the planner dispatched (not manual ones). A paused task has no next run. JSON: an array of task
    objects with last_outcome.
    """
    if limit is None and not show_all and output_format == "table":
        limit = DEFAULT_LIST_LIMIT
    service = get_service(ctx)
    tasks = service.list_tasks(status=status, limit=limit)
    empty = "no tasks" + (f" with status {status}" if status else "")
    render(tasks, LIST_COLUMNS, output_format, empty=empty)
    if output_format == "table" and limit is not None and len(tasks) == limit:
        more = service.count_tasks(status=status) - len(tasks)
        if more > 0:
            print_note(f"... and {more} more (--limit N or --all to show them, --format json for scripts)")


@click.command("create")
@task_definition_options(creating=True)
@actor_option
@format_option
@click.pass_context
def create(ctx: click.Context, /, output_format: str, **options: Any) -> None:
    """Create a task.

    Prints the task (JSON: the task object).
    """
    fields = task_fields(options)
    task = get_service(ctx).create_task(**fields)
    warn_about_timezone(options["timezone"])
    render_one(task, output_format, title=_task_title("created", task))


@click.command("update")
@click.option("--id", "ref", required=True, metavar="ID|NAME", help="The task's id or name.")
@task_definition_options(creating=False)
@actor_option
@format_option
@click.pass_context
def update(ctx: click.Context, /, ref: str, output_format: str, **options: Any) -> None:
    """Change a task.

    Options not given stay as they are; --clear unsets optional fields. Prints the task (JSON: the task
    object).
    """
    changes = task_fields(options)
    if not changes:
        raise InvalidInput("nothing to update: give at least one option to change (see --help)")
    task = get_service(ctx).update_task(task_ref(ref), **changes)
    warn_about_timezone(options["timezone"])
    render_one(task, output_format, title=_task_title("updated", task))


@click.command("delete")
@click.option("--id", "ref", required=True, metavar="ID|NAME", help="The task's id or name.")
@click.option(
    "--confirm", is_flag=True, help="Delete without asking (required when stdin is not a terminal)."
)
@actor_option
@format_option
@click.pass_context
def delete(ctx: click.Context, ref: str, confirm: bool, output_format: str) -> None:
    """Delete a task (asks unless --confirm).

    Its pending and queued executions are cancelled; its history is kept. Prints the deleted task (JSON: the
    task object).
    """
    service = get_service(ctx)
    task = service.get_task(task_ref(ref))
    if not confirm:
        if not sys.stdin.isatty():
            raise InvalidInput(
                f"refusing to delete task {task.id} ({task.name}) without --confirm: stdin is not a terminal"
            )
        if not click.confirm(f"Delete task {task.id} ({task.name})?", default=False, err=True):
            raise SchedulerError(f"task {task.id} ({task.name}) not deleted")
    deleted = service.delete_task(task.id)
    render_one(deleted, output_format, title=_task_title("deleted", deleted))


@click.command("pause")
@click.option("--id", "ref", metavar="ID|NAME", help="The task's id or name [default: every active task].")
@click.option("--reason", "--note", "reason", help="Why, shown in the task's status and the audit log.")
@click.option(
    "--until",
    "until_text",
    metavar="T",
    help="Resume by itself at this future ISO-8601 time (the planner does).",
)
@actor_option
@format_option
@click.pass_context
def pause(
    ctx: click.Context, ref: str | None, reason: str | None, until_text: str | None, output_format: str
) -> None:
    """Pause one task, or every active task.

    A paused task accrues no missed runs. With --until the planner resumes it at that time (audited as the
    actor planner); it then runs from its first slot at or after that time, never the paused span. --until on
    a task paused already sets when it resumes. Prints the paused tasks (JSON: an array of task objects).
    """
    until = None if until_text is None else parse_time(until_text, "until")
    tasks = get_service(ctx).pause(None if ref is None else task_ref(ref), reason=reason, until=until)
    render_tasks(tasks, output_format, title=f"paused {len(tasks)} task(s)", empty="no task to pause")


@click.command("resume")
@click.option("--id", "ref", metavar="ID|NAME", help="The task's id or name [default: every paused task].")
@actor_option
@format_option
@click.pass_context
def resume(ctx: click.Context, ref: str | None, output_format: str) -> None:
    """Resume one task, or every paused task.

    The next run is computed from now: the paused period is not replayed. Prints the resumed tasks (JSON: an
    array of task objects).
    """
    tasks = get_service(ctx).resume(None if ref is None else task_ref(ref))
    render_tasks(tasks, output_format, title=f"resumed {len(tasks)} task(s)", empty="no task to resume")


TASK_COMMANDS: tuple[click.Command, ...] = (list_tasks, create, update, delete, pause, resume)
