"""SQL of task definitions (``scheduled_tasks``). Callers own the transaction.

A task reference is an ``int`` (its id) or a ``str``: its name (stripped), else, when all digits, its id
(names cannot be all digits, see :mod:`scheduler.rules.validation`).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Select, delete, func, insert, select, update

from scheduler.errors import TaskNotFound
from scheduler.records import Task
from scheduler.storage.mapping import task_from_row
from scheduler.storage.stats import last_outcome
from scheduler.storage.tables import MAX_ID, storable_id, tasks

TaskRef = int | str
MAX_NAME_CHARS = 200  # the column's length, and what validation allows
MAX_ID_DIGITS = len(str(MAX_ID))


def _lookup(ref: TaskRef) -> Select[Any] | None:
    if isinstance(ref, bool):
        return None
    if isinstance(ref, int):
        return select(tasks).where(tasks.c.id == ref) if storable_id(ref) else None
    if isinstance(ref, str):
        name = stored_name(ref)
        return None if name is None else select(tasks).where(tasks.c.name == name)
    return None


def stored_name(ref: str) -> str | None:
    """The name as stored (stripped, NFC), or None when no stored name can look like ``ref``: names are
    validated when stored (1..200 characters, no NUL or lone surrogate, which drivers could not even send)."""
    name = unicodedata.normalize("NFC", ref.strip())
    if not 0 < len(name) <= MAX_NAME_CHARS or any(ch == "\x00" or "\ud800" <= ch <= "\udfff" for ch in name):
        return None
    return name


def find_task(connection: Connection, ref: TaskRef, *, lock: bool = False) -> Task | None:
    """The task ``ref`` names, or None; ``lock`` takes a row lock (``FOR UPDATE`` on PostgreSQL)."""
    query = _lookup(ref)
    row = None
    if query is not None:
        row = connection.execute(query.with_for_update() if lock else query).first()
    digits = ref.strip() if isinstance(ref, str) else ""
    if row is None and digits.isascii() and digits.isdigit() and len(digits) <= MAX_ID_DIGITS:
        return find_task(connection, int(digits), lock=lock)
    return None if row is None else task_from_row(row)


def get_task(connection: Connection, ref: TaskRef, *, lock: bool = False) -> Task:
    """The task ``ref`` names; :class:`TaskNotFound` if there is none."""
    task = find_task(connection, ref, lock=lock)
    if task is None:
        raise TaskNotFound(ref if isinstance(ref, int | str) else repr(ref))
    return task


def name_taken(connection: Connection, name: str, *, except_id: int | None = None) -> bool:
    """True when another task (not ``except_id``) has exactly this name."""
    query = select(tasks.c.id).where(tasks.c.name == name)
    if except_id is not None:
        query = query.where(tasks.c.id != except_id)
    return connection.execute(query.limit(1)).first() is not None


def insert_task(connection: Connection, columns: Mapping[str, Any], *, now: datetime) -> Task:
    """Insert a validated definition (see ``TaskDefinition.columns``); created/updated at ``now``."""
    values = {**columns, "run_count": 0, "consecutive_failures": 0, "created_at": now, "updated_at": now}
    row = connection.execute(insert(tasks).values(values).returning(*tasks.c)).one()
    return task_from_row(row)


def update_task(connection: Connection, task_id: int, columns: Mapping[str, Any], *, now: datetime) -> Task:
    """Set ``columns`` (only those) and ``updated_at``; :class:`TaskNotFound` if the row is gone."""
    statement = update(tasks).where(tasks.c.id == task_id).values({**columns, "updated_at": now})
    row = connection.execute(statement.returning(*tasks.c)).first()
    if row is None:
        raise TaskNotFound(task_id)
    return task_from_row(row)


def stamp_last_run(connection: Connection, task_id: int, *, at: datetime) -> None:
    """``last_run_at`` = ``at``: a run of the task was dispatched then (the planner stamps its slots in its
    batch update; this is for manual runs). Outcomes do not move it."""
    connection.execute(update(tasks).where(tasks.c.id == task_id).values(last_run_at=at))


def delete_task(connection: Connection, task_id: int) -> None:
    """Delete the row; its executions keep their history with ``task_id`` set to NULL (foreign key)."""
    connection.execute(delete(tasks).where(tasks.c.id == task_id))


def list_tasks(
    connection: Connection, *, status: str | None = None, limit: int | None = None
) -> list[tuple[Task, str | None]]:
    """Tasks ordered by id, optionally of one status and at most ``limit``, each with its last outcome
    (:func:`scheduler.storage.stats.last_outcome`)."""
    query = select(tasks, last_outcome(tasks.c.id).label("last_outcome")).order_by(tasks.c.id)
    if status is not None:
        query = query.where(tasks.c.status == status)
    if limit is not None:
        query = query.limit(limit)
    return [(task_from_row(row), row.last_outcome) for row in connection.execute(query)]


def count_tasks(connection: Connection, *, status: str | None = None) -> int:
    """How many tasks there are, optionally of one status."""
    query = select(func.count()).select_from(tasks)
    if status is not None:
        query = query.where(tasks.c.status == status)
    return int(connection.execute(query).scalar_one())


def tasks_with_status(connection: Connection, status: str, *, lock: bool = False) -> list[Task]:
    """Every task of ``status`` by id (for pause/resume of all), row-locked when ``lock``."""
    query = select(tasks).where(tasks.c.status == status).order_by(tasks.c.id)
    return [task_from_row(row) for row in connection.execute(query.with_for_update() if lock else query)]


def soonest_tasks(connection: Connection, limit: int, *, after: datetime | None = None) -> list[Task]:
    """The ``limit`` active tasks with the smallest ``next_run_at`` (strictly after ``after`` when given).

    A range scan of the ``(status, next_run_at)`` index: cost O(limit), not O(tasks).
    """
    query = select(tasks).where(tasks.c.status == "active", tasks.c.next_run_at.is_not(None))
    if after is not None:
        query = query.where(tasks.c.next_run_at > after)
    query = query.order_by(tasks.c.next_run_at, tasks.c.id).limit(limit)
    return [task_from_row(row) for row in connection.execute(query)]


def tasks_due_by(connection: Connection, moment: datetime) -> list[Task]:
    """Active tasks whose ``next_run_at`` is at or before ``moment`` (index range; only overdue ones)."""
    query = select(tasks).where(tasks.c.status == "active", tasks.c.next_run_at <= moment)
    return [task_from_row(row) for row in connection.execute(query.order_by(tasks.c.next_run_at, tasks.c.id))]


def task_names(connection: Connection) -> list[str]:
    """Every task's name (for "did you mean" when a name is not found)."""
    return list(connection.execute(select(tasks.c.name)).scalars())


def commands_by_queue(connection: Connection) -> dict[tuple[str, str], tuple[str, int]]:
    """(queue, command) -> (the first name, how many) of the active tasks that need a worker of that queue
    with that command. One group per pair, so its size does not grow with the number of tasks."""
    query = (
        select(tasks.c.queue, tasks.c.command, func.min(tasks.c.name), func.count())
        .where(tasks.c.status == "active")
        .group_by(tasks.c.queue, tasks.c.command)
        .order_by(tasks.c.queue, tasks.c.command)
    )
    return {(queue, command): (name, count) for queue, command, name, count in connection.execute(query)}


def task_queues(connection: Connection) -> list[str]:
    """The distinct queues of existing tasks, sorted."""
    return sorted(str(queue) for queue in connection.execute(select(tasks.c.queue).distinct()).scalars())
