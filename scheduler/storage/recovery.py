"""The planner's recovery sweep SQL: executions the broker or a worker lost. Callers own the transaction.

Invariant 1: the broker carries only ids, so whatever it loses is found again here from the database:

- ``queued`` rows that no worker claimed in time and whose message is no longer on the broker are published
  again under the same id (claims are conditional, so a duplicate message is a no-op); ``heartbeat_at``
  records when the sweep last looked (:func:`stamp_seen`), ``enqueued_at`` keeps the first publish;
- ``retrying`` rows whose retry message is overdue are published again and their ``enqueued_at`` refreshed;
- ``running`` rows whose worker stopped heart-beating are reaped: back to ``pending`` as the next attempt when
  attempts remain (the relay publishes them under the concurrency cap), else ``lost``: a failure of its
  task, counted toward the auto-pause like ``failed``.

Every update is conditional on the state that was read (status, attempt), so a worker that claims, heartbeats
or finishes meanwhile wins and the sweep's update is a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, or_, select, update

from scheduler.records import Dispatch, Execution, LostExecution, OpenExecution, as_utc
from scheduler.storage.dispatch import dispatch_query, read_dispatches
from scheduler.storage.mapping import execution_from_row
from scheduler.storage.tables import executions, logs, tasks
from scheduler.storage.task_outcomes import count_failure


def unclaimed_dispatches(
    connection: Connection, before: datetime, limit: int, *, default_timeout_ms: int
) -> list[Dispatch]:
    """Up to ``limit`` ``queued`` rows last looked at before ``before`` (or never), oldest first.

    Looked at: published (``enqueued_at``), or since then found waiting on the broker or republished by the
    sweep (``heartbeat_at``, see :func:`stamp_seen`).
    """
    seen = func.coalesce(executions.c.heartbeat_at, executions.c.enqueued_at)
    query = dispatch_query(default_timeout_ms).where(
        executions.c.status == "queued", or_(seen < before, seen.is_(None))
    )
    return read_dispatches(connection, query.order_by(executions.c.created_at, executions.c.id).limit(limit))


def stamp_seen(connection: Connection, ids: Sequence[int], *, now: datetime) -> int:
    """``heartbeat_at = now`` on those of ``ids`` still ``queued``: the sweep found their message waiting on
    the broker, or published it again. Their ``enqueued_at`` (the first publish) stays; a claim overwrites
    ``heartbeat_at`` with the running attempt's."""
    if not ids:
        return 0
    statement = (
        update(executions)
        .where(executions.c.id.in_(ids), executions.c.status == "queued")
        .values(heartbeat_at=now)
    )
    return int(connection.execute(statement).rowcount)


def refresh_enqueued(connection: Connection, ids: Sequence[int], status: str, *, now: datetime) -> int:
    """Set ``enqueued_at = now`` on those of ``ids`` still in ``status`` (``retrying``: after publishing them
    again; :func:`retry_overdue <scheduler.planning.recovery.retry_overdue>` counts from it)."""
    if not ids:
        return 0
    statement = (
        update(executions)
        .where(executions.c.id.in_(ids), executions.c.status == status)
        .values(enqueued_at=now)
    )
    return int(connection.execute(statement).rowcount)


def open_executions(connection: Connection, status: str, limit: int) -> list[OpenExecution]:
    """Up to ``limit`` executions of ``status`` (``running`` or ``retrying``), oldest first.

    Their number is bounded by the concurrency cap, so reading them all is cheap (status index).
    """
    query = (
        select(
            executions.c.id,
            executions.c.status,
            executions.c.attempt,
            executions.c.max_attempts,
            executions.c.worker,
            executions.c.started_at,
            executions.c.heartbeat_at,
            executions.c.enqueued_at,
            tasks.c.timeout_ms,
            tasks.c.retry_delay_ms,
            tasks.c.retry_backoff,
            executions.c.task_id,
        )
        .select_from(executions.outerjoin(tasks, tasks.c.id == executions.c.task_id))
        .where(executions.c.status == status)
        .order_by(executions.c.created_at, executions.c.id)
        .limit(limit)
    )
    return [
        OpenExecution(
            id=int(r.id),
            status=r.status,
            attempt=int(r.attempt),
            max_attempts=int(r.max_attempts),
            worker=r.worker,
            started_at=as_utc(r.started_at),
            heartbeat_at=as_utc(r.heartbeat_at),
            enqueued_at=as_utc(r.enqueued_at),
            timeout_ms=None if r.timeout_ms is None else int(r.timeout_ms),
            retry_delay_ms=None if r.retry_delay_ms is None else int(r.retry_delay_ms),
            retry_backoff=None if r.retry_backoff is None else float(r.retry_backoff),
            task_id=None if r.task_id is None else int(r.task_id),
        )
        for r in connection.execute(query)
    ]


def _running(execution: OpenExecution) -> Any:
    return (
        (executions.c.id == execution.id)
        & (executions.c.status == "running")
        & (executions.c.attempt == execution.attempt)
    )


def _log(connection: Connection, execution: OpenExecution, now: datetime, message: str) -> None:
    values = {"execution_id": execution.id, "attempt": execution.attempt, "at": now, "level": "ERROR"}
    connection.execute(insert(logs).values(message=message, **values))


def requeue_lost(connection: Connection, execution: OpenExecution, *, now: datetime, error: str) -> bool:
    """A silent ``running`` attempt is lost: make the row ``pending`` as attempt + 1 (the relay publishes it).

    The lost attempt's error goes into ``error`` and a log line of that attempt; False if the row moved on.
    """
    statement = (
        update(executions)
        .where(_running(execution))
        .values(
            status="pending",
            attempt=executions.c.attempt + 1,
            worker=None,
            started_at=None,
            heartbeat_at=None,
            enqueued_at=None,
            error=error,
        )
    )
    if connection.execute(statement).rowcount != 1:
        return False
    _log(connection, execution, now, error)
    return True


def mark_lost(
    connection: Connection, execution: OpenExecution, *, now: datetime, error: str
) -> LostExecution | None:
    """A silent ``running`` execution on its last attempt is ``lost`` (finished now); None if it moved on.

    ``lost`` is a failed execution: its task counts it like the worker counts ``failed`` (and may auto-pause,
    or fail a once task).
    """
    started = execution.started_at
    duration = None if started is None else max(0, int((now - started).total_seconds() * 1000))
    statement = (
        update(executions)
        .where(_running(execution))
        .values(status="lost", finished_at=now, duration_ms=duration, error=error, reason=None)
    )
    if connection.execute(statement).rowcount != 1:
        return None
    _log(connection, execution, now, error)
    task = (
        None
        if execution.task_id is None
        else count_failure(connection, execution.task_id, execution_id=execution.id, status="lost", now=now)
    )
    return LostExecution(id=execution.id, task_id=execution.task_id, task=task)


def count_by_status(connection: Connection, status: str) -> int:
    """How many executions have ``status`` (status index)."""
    query = select(func.count()).select_from(executions).where(executions.c.status == status)
    return int(connection.execute(query).scalar_one())


def dispatches_by_id(
    connection: Connection, ids: Sequence[int], *, default_timeout_ms: int
) -> list[Dispatch]:
    """Dispatches of the executions ``ids`` (any status), in id order."""
    if not ids:
        return []
    query = dispatch_query(default_timeout_ms).where(executions.c.id.in_(ids)).order_by(executions.c.id)
    return read_dispatches(connection, query)


def executions_by_id(connection: Connection, ids: Sequence[int]) -> list[Execution]:
    """The executions ``ids`` as records, in id order (for events)."""
    if not ids:
        return []
    query = select(executions).where(executions.c.id.in_(ids)).order_by(executions.c.id)
    return [execution_from_row(row) for row in connection.execute(query)]
