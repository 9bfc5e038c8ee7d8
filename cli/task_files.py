"""Tasks as code: plan, apply, export; and a task's versions: versions, diff, rollback.

See docs/tasks-as-code.md. ``plan`` exits 0 when applying would change nothing and :data:`CHANGES_EXIT` (10)
when it would change something; invalid input exits 2 as everywhere, so a script can tell them apart.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from cli.cells import Column
from cli.context import get_service
from cli.options import actor_option, format_option, task_ref
from cli.render import print_json, print_note, render, render_one
from scheduler.errors import InvalidInput
from scheduler.records import TASK_STATUSES

if TYPE_CHECKING:
    from scheduler.rules.taskplan import PlannedTask, TaskPlan
    from scheduler.rules.versions import FieldChange

CHANGES_EXIT = 10
PRUNE_MODE_ENV = "SCHEDULER_PRUNE_MODE"
SYMBOLS = {"create": "+", "update": "~", "delete": "-", "pause": "!", "unchanged": "="}


def read_file(path: str) -> bytes:
    """The bytes of ``path`` (``-``: stdin), at most the size limit plus one (the parser names the limit)."""
    from scheduler.rules.taskfile import MAX_FILE_BYTES

    try:
        if path == "-":
            return sys.stdin.buffer.read(MAX_FILE_BYTES + 1)
        with open(path, "rb") as handle:
            return handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise InvalidInput(f"cannot read {path}: {error.strerror or error}") from None


def file_options(func: Any) -> Any:
    for option in reversed(
        (
            click.option(
                "-f", "--file", "path", required=True, metavar="FILE", help="The tasks file (- for stdin)."
            ),
            click.option(
                "--source",
                metavar="NAME",
                help="Who owns the file's tasks [default: the file's 'source:', else its path as given].",
            ),
            click.option(
                "--prune", is_flag=True, help="Also remove the source's tasks the file no longer lists."
            ),
            click.option(
                "--prune-mode",
                type=click.Choice(("delete", "pause")),
                default="delete",
                show_default=True,
                envvar=PRUNE_MODE_ENV,
                show_envvar=True,
                help="What --prune does to a task the file no longer lists.",
            ),
        )
    ):
        func = option(func)
    return func


def _value(value: Any) -> str:
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)


def _change_lines(changes: tuple[FieldChange, ...] | list[FieldChange], indent: str) -> list[str]:
    return [f"{indent}{c.field}: {_value(c.before)} -> {_value(c.after)}" for c in changes]


def _task_lines(item: PlannedTask) -> list[str]:
    where = f"  (line {item.line})" if item.line else ""
    task_id = f" [task {item.task.id}]" if item.task is not None else ""
    lines = [f"  {SYMBOLS[item.action]} {item.action:<9} {item.name} (key {item.key}){task_id}{where}"]
    lines += _change_lines(item.changes, "      ")
    lines += [
        f"      drift: {d.action} by {d.actor} at {d.to_json()['at']} since the last apply"
        for d in item.drift
    ]
    return lines


def print_plan(plan: TaskPlan, *, verb: str) -> None:
    lines = [f"{verb} {plan.path} (source {plan.source}):"]
    for item in plan.tasks:
        if item.action != "unchanged" or item.drift:
            lines += _task_lines(item)
    counts = plan.summary()
    done = verb == "applied"
    parts = [
        f"{counts[action]} {action + 'd' if done else 'to ' + action}"
        for action in ("create", "update", "delete", "pause")
    ]
    lines.append(", ".join([*parts, f"{counts['unchanged']} unchanged."]))
    if plan.drifted:
        lines.append(f"{len(plan.drifted)} task(s) changed since the last apply by someone else (drift).")
    click.echo("\n".join(lines))


@click.command("plan")
@file_options
@format_option
@click.pass_context
def plan(
    ctx: click.Context, path: str, source: str | None, prune: bool, prune_mode: str, output_format: str
) -> None:
    """Show what applying a tasks file would change, per task (writes nothing).

    create, update (each field: before -> after, secrets redacted), delete or pause (only with --prune),
    unchanged; and drift: tasks of the source changed since the last apply by someone else, who and when.
    Exit codes: 0 no changes, 10 changes, 2 invalid file or option. JSON: the plan object.
    """
    result = get_service(ctx).plan_tasks_file(
        read_file(path), path=path, source=source, prune=prune, prune_mode=prune_mode
    )
    if output_format == "json":
        print_json(result.to_json())
    else:
        print_plan(result, verb="plan for")
    ctx.exit(CHANGES_EXIT if result.has_changes else 0)


@click.command("apply")
@file_options
@click.option("--dry-run", is_flag=True, help="Show the plan and change nothing.")
@actor_option
@format_option
@click.pass_context
def apply(
    ctx: click.Context,
    path: str,
    source: str | None,
    prune: bool,
    prune_mode: str,
    dry_run: bool,
    output_format: str,
) -> None:
    """Make the source's tasks match a tasks file, in one transaction (all or nothing).

    A second apply of the same file changes nothing and writes no audit row. Each changed task gets one audit
    row with the actor (apply:create, apply:update, apply:delete, apply:pause); tasks changed by hand since
    the last apply are overwritten and listed. --prune touches only tasks this source created. JSON: the plan
    object (with "applied": true unless --dry-run).
    """
    result = get_service(ctx).apply_tasks_file(
        read_file(path), path=path, source=source, prune=prune, prune_mode=prune_mode, dry_run=dry_run
    )
    if output_format == "json":
        print_json(result.to_json() | {"applied": not dry_run})
        return
    print_plan(result, verb="dry run of" if dry_run else "applied")
    if result.drifted and not dry_run:
        names = ", ".join(item.name for item in result.drifted if item.action != "unchanged")
        if names:
            print_note(f"overwrote changes made since the last apply: {names}")


@click.command("export")
@click.option("--source", metavar="NAME", help="Only the tasks this source owns (a file's source, cli, api).")
@click.option("--status", type=click.Choice(TASK_STATUSES), help="Only tasks with this status.")
@click.option(
    "--format",
    "file_format",
    type=click.Choice(("yaml", "json")),
    default="yaml",
    show_default=True,
    help="The file's format.",
)
@click.pass_context
def export(ctx: click.Context, source: str | None, status: str | None, file_format: str) -> None:
    """Print the tasks as a tasks file that apply accepts.

    'export --source S | apply -f - --source S' changes nothing. The file holds the tasks' data unredacted.
    """
    from scheduler.rules.taskfile import dump_document

    document = get_service(ctx).export_tasks(source=source, status=status)
    click.echo(dump_document(document, file_format), nl=False)


VERSION_COLUMNS = (
    Column("version"),
    Column("at"),
    Column("actor"),
    Column("action"),
    Column("changed", flow="line"),
)


@click.command("versions")
@click.option("--id", "ref", required=True, metavar="ID|NAME", help="The task's id or name.")
@format_option
@click.pass_context
def versions(ctx: click.Context, ref: str, output_format: str) -> None:
    """List a task's versions: one per change (from the audit log), numbered from 1 (its creation).

    JSON: an array of {version, audit_id, at, actor, action, task}.
    """
    from scheduler.rules.versions import diff_tasks

    found = get_service(ctx).task_versions(task_ref(ref))
    if output_format == "json":
        print_json([version.to_json() for version in found])
        return
    rows = []
    previous: dict[str, Any] = {}
    for version in found:
        changed = [change.field for change in diff_tasks(previous, version.task)] if previous else ["created"]
        rows.append(version.to_json() | {"changed": ", ".join(changed) or "-"})
        previous = version.task
    render(rows, VERSION_COLUMNS, output_format, empty="no versions")


@click.command("diff")
@click.option("--id", "ref", required=True, metavar="ID|NAME", help="The task's id or name.")
@click.option(
    "--from", "from_version", type=int, metavar="N", help="From version N [default: the one before --to]."
)
@click.option("--to", "to_version", type=int, metavar="M", help="To version M [default: the latest].")
@format_option
@click.pass_context
def diff(
    ctx: click.Context, ref: str, from_version: int | None, to_version: int | None, output_format: str
) -> None:
    """Show what changed in a task between two versions (secrets redacted).

    JSON: {from, to, changes: [{field, before, after}]}.
    """
    before, after, changes = get_service(ctx).diff_task_versions(
        task_ref(ref), from_version=from_version, to_version=to_version
    )
    if output_format == "json":
        print_json(
            {"from": before.number, "to": after.number, "changes": [change.to_json() for change in changes]}
        )
        return
    lines = [f"version {before.number} -> {after.number}:"]
    lines += _change_lines(changes, "  ") or ["  no differences"]
    click.echo("\n".join(lines))


@click.command("rollback")
@click.option("--id", "ref", required=True, metavar="ID|NAME", help="The task's id or name.")
@click.option("--to", "to_version", required=True, type=int, metavar="N", help="The version to go back to.")
@actor_option
@format_option
@click.pass_context
def rollback(ctx: click.Context, ref: str, to_version: int, output_format: str) -> None:
    """Make a task's definition equal to version N again, as a new version (audited as rollback).

    A changed schedule's next run is computed from now: no missed slot is replayed. The status (paused,
    active) is not rolled back. Prints the task (JSON: the task object).
    """
    task = get_service(ctx).rollback_task(task_ref(ref), to=to_version)
    render_one(task, output_format, title=f"task {task.id} ({task.name}) as of version {to_version}")


TASK_FILE_COMMANDS: tuple[click.Command, ...] = (plan, apply, export, versions, diff, rollback)
