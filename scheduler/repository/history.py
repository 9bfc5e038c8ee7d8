"""Reads of execution history (``task_executions``) and captured logs (``task_logs``)."""

from __future__ import annotations

from sqlalchemy import Connection, select

from scheduler.records import Execution, LogLine
from scheduler.repository.mapping import execution_from_row, log_from_row
from scheduler.repository.tables import executions, logs, storable_id


def find_execution(connection: Connection, execution_id: int) -> Execution | None:
    """The execution with this id, or None (also for a value no id can have)."""
    if not storable_id(execution_id):
        return None
    row = connection.execute(select(executions).where(executions.c.id == execution_id)).first()
    return None if row is None else execution_from_row(row)


def list_executions(
    connection: Connection, *, task_id: int | None = None, status: str | None = None, limit: int = 50
) -> list[Execution]:
    """Newest first (by id, i.e. creation order), optionally of one task and/or one status."""
    query = select(executions)
    if task_id is not None:
        query = query.where(executions.c.task_id == task_id)
    if status is not None:
        query = query.where(executions.c.status == status)
    query = query.order_by(executions.c.id.desc()).limit(limit)
    return [execution_from_row(row) for row in connection.execute(query)]


def list_logs(connection: Connection, execution_id: int) -> list[LogLine]:
    """Every log line of the execution, all attempts, in the order they were written."""
    query = select(logs).where(logs.c.execution_id == execution_id).order_by(logs.c.at, logs.c.id)
    return [log_from_row(row) for row in connection.execute(query)]
