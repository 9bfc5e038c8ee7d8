"""Reads of execution history (``task_executions``) and captured logs (``task_logs``)."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Connection, select

from scheduler.records import Execution, LogLine
from scheduler.storage.mapping import execution_from_row, log_from_row
from scheduler.storage.tables import audit, executions, logs, storable_id


def find_execution(connection: Connection, execution_id: int) -> Execution | None:
    """The execution with this id, or None (also for a value no id can have)."""
    if not storable_id(execution_id):
        return None
    row = connection.execute(select(executions).where(executions.c.id == execution_id)).first()
    return None if row is None else execution_from_row(row)


def list_executions(
    connection: Connection,
    *,
    task_id: int | None = None,
    deleted_task_names: Collection[str] | None = None,
    status: str | None = None,
    limit: int = 50,
) -> list[Execution]:
    """Newest first (by id, i.e. creation order), optionally of one task and/or one status.

    ``deleted_task_names``: only executions whose task is gone (``task_id`` NULL) and that bear one of these
    names (an execution keeps the task's name of when it was created).
    """
    query = select(executions)
    if task_id is not None:
        query = query.where(executions.c.task_id == task_id)
    if deleted_task_names is not None:
        query = query.where(executions.c.task_id.is_(None), executions.c.task_name.in_(deleted_task_names))
    if status is not None:
        query = query.where(executions.c.status == status)
    query = query.order_by(executions.c.id.desc()).limit(limit)
    return [execution_from_row(row) for row in connection.execute(query)]


def list_logs(connection: Connection, execution_id: int) -> list[LogLine]:
    """Every log line of the execution, all attempts, in the order they were written."""
    query = select(logs).where(logs.c.execution_id == execution_id).order_by(logs.c.at, logs.c.id)
    return [log_from_row(row) for row in connection.execute(query)]


def audited_task_names(
    connection: Connection, *, task_id: int | None = None, name: str | None = None
) -> set[str]:
    """The names the audit trail records for task ``task_id``, or ``{name}`` if some task ever had ``name``;
    empty when the trail knows no such task. The trail outlives a deleted task."""
    if task_id is not None:
        query = select(audit.c.task_name).where(audit.c.task_id == task_id).distinct()
    else:
        query = select(audit.c.task_name).where(audit.c.task_name == name).limit(1)
    return {found for found in connection.execute(query).scalars() if found is not None}
