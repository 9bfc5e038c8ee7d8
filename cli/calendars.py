"""The calendar verb: named sets of days that tasks exclude (``--exclude``) or run only in (``--only-in``).

``scheduler:calendar create|list|show|delete``: one verb with an action, so its whole usage is one ``--help``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.cells import Column
from cli.context import get_service
from cli.options import actor_option, format_option
from cli.render import render, render_one
from scheduler.errors import InvalidField

if TYPE_CHECKING:
    from scheduler.records import Calendar

ACTIONS = ("create", "list", "show", "delete")
MAX_ICS_BYTES = 4 * 1024 * 1024


def _days_text(calendar: Calendar) -> str:
    days = calendar.days
    parts = [
        *days.get("dates", ()),
        *(f"{a}..{b}" for a, b in days.get("ranges", ())),
        *days.get("weekdays", ()),
    ]
    shown = ", ".join(parts[:8])
    return shown + (f" (+{len(parts) - 8} more)" if len(parts) > 8 else "")


def _read_ics(path: str) -> str:
    """The text of an ICS file; a missing, oversized or undecodable file is bad input (exit 2)."""
    file = Path(path)
    try:
        if file.stat().st_size > MAX_ICS_BYTES:
            raise InvalidField("ics", f"{path}: larger than {MAX_ICS_BYTES // (1024 * 1024)} MiB")
        return file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidField("ics", f"{path}: not an iCalendar file (not UTF-8 text)") from None
    except OSError as error:
        raise InvalidField("ics", f"{path}: {error.strerror or error}") from None


COLUMNS = (
    Column("name"),
    Column("days", get=_days_text, max_width=60, flow="text"),
    Column("tasks", get=lambda c: ", ".join(c.tasks or ()) or "-", drop_order=1),
)


@click.command("calendar")
@click.argument("action", type=click.Choice(ACTIONS))
@click.argument("name", required=False)
@click.argument("entries", nargs=-1, metavar="[ENTRY]...")
@click.option(
    "--ics", "ics_path", metavar="FILE", help="create: add the all-day events of an iCalendar file."
)
@actor_option
@format_option
@click.pass_context
def calendar(
    ctx: click.Context,
    action: str,
    name: str | None,
    entries: tuple[str, ...],
    ics_path: str | None,
    output_format: str,
) -> None:
    """Manage exclusion calendars: create, list, show, delete.

    \b
    scheduler:calendar create NAME [ENTRY]... [--ics FILE]
        ENTRY: a date 2026-12-25, a range 2026-12-24..2026-12-31 (inclusive) or a weekday (sat, sunday)
    scheduler:calendar list
    scheduler:calendar show NAME
    scheduler:calendar delete NAME      (refused while a task uses it)

    Tasks name calendars with --exclude (their days do not run) and --only-in (only their days run); a day is
    the slot's date in the task's time zone. Creating and deleting are audited. JSON: a calendar object
    {id, name, days: {dates, ranges, weekdays}, tasks, created_at, updated_at}, or an array of them (list).
    """
    if action == "list":
        if name is not None or entries or ics_path:
            raise click.UsageError("list takes no NAME, ENTRY or --ics")
        render(get_service(ctx).list_calendars(), COLUMNS, output_format, empty="no calendars")
        return
    if name is None:
        raise click.UsageError(f"{action} needs the calendar's NAME")
    if action != "create" and (entries or ics_path):
        raise click.UsageError(f"{action} takes only the calendar's NAME")
    service = get_service(ctx)
    if action == "create":
        ics = None if ics_path is None else _read_ics(ics_path)
        created = service.create_calendar(name, list(entries), ics=ics)
        render_one(created, output_format, title=f"created calendar {created.name}")
    elif action == "show":
        render_one(service.get_calendar(name), output_format, title=f"calendar {name}")
    else:
        deleted = service.delete_calendar(name)
        render_one(deleted, output_format, title=f"deleted calendar {deleted.name}")


CALENDAR_COMMANDS: tuple[click.Command, ...] = (calendar,)
