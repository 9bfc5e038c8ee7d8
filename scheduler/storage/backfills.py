"""SQL of backfills (``task_backfills``), their executions, timed pauses and user skips. Callers own the
transaction.

A backfill inserts its executions ``waiting`` (``ON CONFLICT DO NOTHING``: a slot that has an execution is
left alone, so a repeated backfill is a no-op); :func:`release_waiting` turns at most ``max_parallel`` minus
those already in flight into ``pending`` for the relay, oldest slot first.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, func, insert, or_, select, update

from scheduler.errors import BackfillNotFound
from scheduler.records import Execution, Task, as_utc
from scheduler.storage.mapping import execution_from_row, record_from_row, tasks_from_rows
from scheduler.storage.tables import backfills, executions, storable_id, tasks

# Records of scheduler.records.DEFERRED: imported where they are built, so importing this module does not
# define them (the read verbs never do).
if TYPE_CHECKING:
    from scheduler.records import Backfill

RUNNING = "running"
# A backfill's executions not yet released, or released and not yet started: what cancelling stops.
UNSTARTED = ("waiting", "pending")


def insert_backfill(connection: Connection, values: dict[str, Any]) -> int:
    """A new ``task_backfills`` row; its id."""
    return int(connection.execute(insert(backfills).values(values).returning(backfills.c.id)).scalar_one())


def insert_backfill_executions(
    connection: Connection,
    task: Task,
    backfill_id: int,
    slots: Sequence[tuple[datetime, str | None]],
    *,
    data: Any,
    now: datetime,
) -> int:
    """One ``waiting`` execution (trigger ``backfill``) per (slot, producing schedule) that has none; how
    many were inserted."""
    from scheduler.storage.dispatch import insert_executions

    rows = [
        {
            "task_id": task.id,
            "task_name": task.name,
            "command": task.command,
            "scheduled_for": slot,
            "trigger": "backfill",
            "status": "waiting",
            "attempt": 1,
            "max_attempts": task.retries + 1,
            "queue": task.queue,
            "created_at": now,
            "data": data,
            "backfill_id": backfill_id,
            "schedule": source,
        }
        for slot, source in slots
    ]
    return len(insert_executions(connection, rows))


def slot_executions(
    connection: Connection, task_id: int, start: datetime, end: datetime
) -> dict[datetime, tuple[int, str]]:
    """slot -> (execution id, status) of the task's executions in ``[start, end]``."""
    query = select(executions.c.scheduled_for, executions.c.id, executions.c.status).where(
        executions.c.task_id == task_id,
        executions.c.scheduled_for >= start,
        executions.c.scheduled_for <= end,
    )
    return {_utc(at): (int(eid), str(status)) for at, eid, status in connection.execute(query)}


def set_backfill(connection: Connection, backfill_id: int, **values: Any) -> None:
    connection.execute(update(backfills).where(backfills.c.id == backfill_id).values(**values))


def _backfill(row: Any, progress: dict[str, int] | None) -> Backfill:
    from scheduler.records import Backfill

    return record_from_row(Backfill, {**row._mapping, "progress": progress})


def progress(connection: Connection, backfill_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """backfill id -> {execution status: count}."""
    if not backfill_ids:
        return {}
    query = (
        select(executions.c.backfill_id, executions.c.status, func.count())
        .where(executions.c.backfill_id.in_(list(backfill_ids)))
        .group_by(executions.c.backfill_id, executions.c.status)
    )
    found: dict[int, dict[str, int]] = {int(b): {} for b in backfill_ids}
    for backfill_id, status, count in connection.execute(query):
        found[int(backfill_id)][str(status)] = int(count)
    return found


def get_backfill(connection: Connection, backfill_id: int, *, lock: bool = False) -> Backfill:
    """The backfill with its progress; :class:`BackfillNotFound` otherwise."""
    row = None
    if storable_id(backfill_id):
        query = select(backfills).where(backfills.c.id == backfill_id)
        row = connection.execute(query.with_for_update() if lock else query).first()
    if row is None:
        raise BackfillNotFound(backfill_id)
    return _backfill(row, progress(connection, [backfill_id])[backfill_id])


def list_backfills(
    connection: Connection, *, task_id: int | None = None, status: str | None = None, limit: int = 50
) -> list[Backfill]:
    """Backfills newest first, with their progress."""
    query = select(backfills).order_by(backfills.c.id.desc()).limit(limit)
    if task_id is not None:
        query = query.where(backfills.c.task_id == task_id)
    if status is not None:
        query = query.where(backfills.c.status == status)
    rows = connection.execute(query).all()
    counts = progress(connection, [int(row.id) for row in rows])
    return [_backfill(row, counts[int(row.id)]) for row in rows]


def cancel_unstarted(connection: Connection, backfill_id: int, *, now: datetime) -> int:
    """Cancel the backfill's executions that have not started; how many."""
    statement = (
        update(executions)
        .where(executions.c.backfill_id == backfill_id, executions.c.status.in_(UNSTARTED))
        .values(status="cancelled", reason="backfill cancelled", finished_at=now)
    )
    return connection.execute(statement).rowcount


# ------------------------------------------------------------------------------------------- the planner


def work_waiting(connection: Connection) -> bool:
    """Whether a backfill runs or a timed pause has ended: the planner's check before a write, one statement
    on two indexes (each tick pays it). "Ended" is by the database clock (SQLite: to the millisecond; the
    write that follows decides by :func:`~scheduler.storage.clock.db_now`)."""
    if connection.dialect.name == "postgresql":
        now: Any = func.clock_timestamp()
    else:  # SQLite stores naive UTC text of this form, so text order is time order
        now = func.strftime("%Y-%m-%d %H:%M:%f", "now")
    running = select(backfills.c.id).where(backfills.c.status == RUNNING).exists()
    ended = select(tasks.c.id).where(tasks.c.paused_until <= now, tasks.c.status == "paused").exists()
    return bool(connection.execute(select(or_(running, ended))).scalar_one())


def ended_pauses(connection: Connection, now: datetime, limit: int) -> list[Task]:
    """Paused tasks whose timed pause ended by ``now`` (locked, SKIP LOCKED on PostgreSQL)."""
    query = (
        select(tasks)
        .where(tasks.c.paused_until <= now, tasks.c.status == "paused")
        .order_by(tasks.c.paused_until)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    result = connection.execute(query)
    return tasks_from_rows(list(result.keys()), result)


def release_waiting(connection: Connection, now: datetime) -> int:
    """Release ``waiting`` executions of running backfills; mark finished backfills ``completed``.

    Per backfill: room = ``max_parallel`` minus its executions pending, queued, running or retrying; a task
    whose overlap policy is not ``allow`` gets one at a time, and only when it has no active execution at
    all; a paused task's backfill waits. Returns how many executions became ``pending``.
    """
    from scheduler.storage.dispatch import ACTIVE_STATUSES

    rows = connection.execute(
        select(backfills.c.id, backfills.c.max_parallel, tasks.c.id, tasks.c.status, tasks.c.overlap_policy)
        .select_from(backfills.outerjoin(tasks, tasks.c.id == backfills.c.task_id))
        .where(backfills.c.status == RUNNING)
    ).all()
    counts = progress(connection, [int(row[0]) for row in rows])
    released = 0
    for backfill_id, max_parallel, task_id, task_status, overlap in rows:
        mine = counts[int(backfill_id)]
        active = sum(mine.get(status, 0) for status in ACTIVE_STATUSES)
        waiting = mine.get("waiting", 0)
        if not waiting and not active:
            set_backfill(connection, backfill_id, status="completed", finished_at=now)
            continue
        if task_id is None or task_status == "paused" or not waiting:
            continue
        room = int(max_parallel) - active
        if overlap != "allow":
            room = 1 if room > 0 and not _task_active(connection, task_id) else 0
        if room > 0:
            released += _release(connection, backfill_id, min(room, waiting))
    return released


def _task_active(connection: Connection, task_id: int) -> bool:
    from scheduler.storage.dispatch import ACTIVE_STATUSES

    query = select(executions.c.id).where(
        executions.c.task_id == task_id, executions.c.status.in_(ACTIVE_STATUSES)
    )
    return connection.execute(query.limit(1)).first() is not None


def _release(connection: Connection, backfill_id: int, count: int) -> int:
    chosen = (
        select(executions.c.id)
        .where(executions.c.backfill_id == backfill_id, executions.c.status == "waiting")
        .order_by(executions.c.scheduled_for)
        .limit(count)
        .scalar_subquery()
    )
    statement = (
        update(executions)
        .where(executions.c.id.in_(chosen), executions.c.status == "waiting")
        .values(status="pending")
    )
    return connection.execute(statement).rowcount


# ------------------------------------------------------------------------------------------------ skips


def skip_slots(
    connection: Connection,
    task: Task,
    slots: Sequence[tuple[datetime, str | None]],
    *,
    error: str,
    now: datetime,
) -> list[Execution]:
    """Record ``slots`` of ``task`` as skipped (reason ``skipped_by_user``) ahead of time: the planner's
    insert for them then does nothing (the unique slot), and the task moves on past them."""
    from scheduler.storage.dispatch import insert_executions

    rows = [
        {
            "task_id": task.id,
            "task_name": task.name,
            "command": task.command,
            "scheduled_for": slot,
            "trigger": "schedule",
            "status": "skipped",
            "reason": "skipped_by_user",
            "attempt": 1,
            "max_attempts": task.retries + 1,
            "queue": task.queue,
            "created_at": now,
            "finished_at": now,
            "error": error,
            "schedule": source,
        }
        for slot, source in slots
    ]
    ids = [execution_id for execution_id, _, _ in insert_executions(connection, rows)]
    if not ids:
        return []
    query = select(executions).where(executions.c.id.in_(ids)).order_by(executions.c.scheduled_for)
    return [execution_from_row(row) for row in connection.execute(query)]


def future_slots(connection: Connection, task_id: int, since: datetime) -> set[datetime]:
    """The task's slots at or after ``since`` that have an execution already (earlier skips)."""
    query = select(executions.c.scheduled_for).where(
        executions.c.task_id == task_id, executions.c.scheduled_for >= since
    )
    return {_utc(at) for (at,) in connection.execute(query)}


def user_skips(
    connection: Connection, task_ids: Sequence[int], since: datetime
) -> dict[tuple[int, datetime], str]:
    """(task id, slot) -> who skipped it and why, for the slots at or after ``since`` a user skipped ahead."""
    query = select(executions.c.task_id, executions.c.scheduled_for, executions.c.error).where(
        executions.c.task_id.in_(task_ids),
        executions.c.reason == "skipped_by_user",
        executions.c.scheduled_for >= since,
    )
    return {(task_id, _utc(at)): error or "skipped" for task_id, at, error in connection.execute(query)}


def _utc(value: datetime) -> datetime:
    result = as_utc(value)
    assert result is not None
    return result
