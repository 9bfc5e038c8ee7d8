"""Execution writes of the API: manual runs (``run_task_now``), cancelling a deleted task's open runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, update

from scheduler.records import Execution, Task
from scheduler.storage.mapping import execution_from_row
from scheduler.storage.tables import executions

# Not yet running, so safe to cancel: a worker's claim is conditional on these statuses and becomes a no-op.
OPEN_STATUSES = ("waiting", "pending", "queued", "retrying")


def insert_manual_execution(
    connection: Connection, task: Task, *, scheduled_for: datetime, data: dict[str, Any] | None = None
) -> Execution:
    """A ``pending`` execution of ``task`` with trigger ``manual`` for slot ``scheduled_for``, with its own
    ``data`` (None: the task's alone).

    Raises ``IntegrityError`` if the (task, slot) pair exists already (the caller picks another instant).
    """
    values = {
        "task_id": task.id,
        "task_name": task.name,
        "command": task.command,
        "scheduled_for": scheduled_for,
        "trigger": "manual",
        "status": "pending",
        "attempt": 1,
        "max_attempts": task.retries + 1,
        "queue": task.queue,
        "created_at": scheduled_for,
        "data": data,
    }
    row = connection.execute(insert(executions).values(values).returning(*executions.c)).one()
    return execution_from_row(row)


def mark_queued(connection: Connection, execution_id: int, *, now: datetime) -> bool:
    """``pending`` -> ``queued`` (enqueued at ``now``) after a publish; False if a worker got there first."""
    statement = (
        update(executions)
        .where(executions.c.id == execution_id, executions.c.status == "pending")
        .values(status="queued", enqueued_at=now)
    )
    return connection.execute(statement).rowcount == 1


def cancel_open_executions(connection: Connection, task_id: int, *, now: datetime, reason: str) -> int:
    """Cancel the task's executions that have not started (pending, queued, retrying); return how many."""
    statement = (
        update(executions)
        .where(executions.c.task_id == task_id, executions.c.status.in_(OPEN_STATUSES))
        .values(status="cancelled", reason=reason, finished_at=now)
    )
    return connection.execute(statement).rowcount
