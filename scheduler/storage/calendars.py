"""SQL of exclusion calendars (``scheduler_calendars``) and of the tasks that name them. Callers own the
transaction. A task names its calendars in two JSON lists (``exclude``, ``only_in``); the few tasks that have
any are found with ``IS NOT NULL`` and filtered here, so the lists need no join table."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, insert, or_, select

from scheduler.storage.mapping import record_from_row
from scheduler.storage.tables import calendars, tasks

# Records of scheduler.records.DEFERRED: imported where they are built, so importing this module does not
# define them (the read verbs never do).
if TYPE_CHECKING:
    from scheduler.records import Calendar


def _calendar(row: Any) -> Calendar:
    from scheduler.records import Calendar

    return record_from_row(Calendar, {**row._mapping, "tasks": None})  # ``tasks`` is no column


def find_calendar(connection: Connection, name: str, *, lock: bool = False) -> Calendar | None:
    """The calendar called ``name``, or None; ``lock`` takes a row lock (``FOR UPDATE`` on PostgreSQL: a
    delete first waits for the transactions attaching it to a task, then sees their tasks)."""
    query = select(calendars).where(calendars.c.name == name)
    row = connection.execute(query.with_for_update() if lock else query).first()
    return None if row is None else _calendar(row)


def insert_calendar(connection: Connection, name: str, days: Mapping[str, Any], *, now: datetime) -> Calendar:
    """A new calendar (the caller checked the name is free)."""
    values = {"name": name, "days": dict(days), "created_at": now, "updated_at": now}
    row = connection.execute(insert(calendars).values(values).returning(*calendars.c)).one()
    return _calendar(row)


def list_calendars(connection: Connection) -> list[Calendar]:
    """Every calendar, by name."""
    rows = connection.execute(select(calendars).order_by(calendars.c.name))
    return [_calendar(row) for row in rows]


def delete_calendar(connection: Connection, calendar_id: int) -> None:
    connection.execute(delete(calendars).where(calendars.c.id == calendar_id))


def calendar_days(
    connection: Connection, names: Iterable[str], *, lock: bool = False
) -> dict[str, dict[str, Any]]:
    """name -> stored days of the calendars among ``names`` that exist (one query). ``lock``: a share lock
    on them (``FOR SHARE`` on PostgreSQL), so a calendar a task is being attached to cannot be deleted by a
    concurrent transaction before this one commits."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    query = select(calendars.c.name, calendars.c.days).where(calendars.c.name.in_(wanted))
    if lock:
        query = query.with_for_update(read=True)
    return {name: dict(days) for name, days in connection.execute(query)}


def tasks_using(connection: Connection, name: str) -> list[str]:
    """The names of the tasks whose ``exclude`` or ``only_in`` list holds ``name``, sorted."""
    query = select(tasks.c.name, tasks.c.exclude, tasks.c.only_in).where(
        or_(tasks.c.exclude.is_not(None), tasks.c.only_in.is_not(None))
    )
    return sorted(
        task
        for task, exclude, only_in in connection.execute(query)
        if name in (exclude or []) + (only_in or [])
    )
