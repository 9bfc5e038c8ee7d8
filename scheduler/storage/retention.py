"""SQL of history retention: which misfire graces the tasks use, and deleting a batch of expired executions
with their logs. :mod:`scheduler.planning.cleanup` decides the windows and the batches; callers own the
transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, or_, select

from scheduler.records import FINISHED_STATUSES
from scheduler.storage.tables import executions, logs, tasks


def graces_longer_than(connection: Connection, grace_ms: int) -> list[int]:
    """The distinct ``misfire_grace_ms`` of the tasks that are longer than ``grace_ms``, ascending (there
    are few distinct values)."""
    query = select(tasks.c.misfire_grace_ms).where(tasks.c.misfire_grace_ms > grace_ms).distinct()
    return sorted(int(grace) for grace in connection.execute(query).scalars())


def _tasks_of_window(grace_ms: int | None, default_grace_ms: int) -> Any:
    """Executions whose task has this grace (``grace_ms``), or (None) one of at most ``default_grace_ms``
    (executions of deleted tasks, ``task_id`` NULL, included)."""
    if grace_ms is not None:
        return executions.c.task_id.in_(select(tasks.c.id).where(tasks.c.misfire_grace_ms == grace_ms))
    longer = select(tasks.c.id).where(tasks.c.misfire_grace_ms > default_grace_ms)
    return or_(executions.c.task_id.is_(None), executions.c.task_id.not_in(longer))


def delete_expired_executions(
    connection: Connection,
    *,
    finished_before: datetime,
    slots_before: datetime,
    grace_ms: int | None,
    default_grace_ms: int,
    limit: int,
) -> int:
    """Delete up to ``limit`` finished executions (:data:`~scheduler.records.FINISHED_STATUSES`), oldest
    ``finished_at`` first, that finished before ``finished_before`` and whose slot is before
    ``slots_before``, of the tasks of one misfire grace (``grace_ms``; None: every task whose grace is at
    most ``default_grace_ms``, and deleted tasks); their ``task_logs`` go first. Returns how many."""
    query = (
        select(executions.c.id)
        .where(
            executions.c.finished_at < finished_before,
            executions.c.status.in_(FINISHED_STATUSES),
            executions.c.scheduled_for < slots_before,
            _tasks_of_window(grace_ms, default_grace_ms),
        )
        .order_by(executions.c.finished_at)
        .limit(limit)
    )
    ids = list(connection.execute(query).scalars())
    if ids:
        # Logs first: do not rely on ON DELETE CASCADE (SQLite enforces it only with foreign_keys=ON).
        connection.execute(delete(logs).where(logs.c.execution_id.in_(ids)))
        connection.execute(delete(executions).where(executions.c.id.in_(ids)))
    return len(ids)
