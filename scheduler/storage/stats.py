"""Execution statistics computed by SQL aggregates, identical on SQLite and PostgreSQL.

- ``success_rate`` = completed / (completed + failed + timed_out + lost); None when none of those exist;
- ``avg_duration_ms`` / ``p95_duration_ms`` over executions that recorded a duration. The p95 is the nearest
  lower rank: the value at offset ``floor(0.95 * (n - 1))`` in ascending order (no interpolation, the same
  figure on both databases);
- ``runs_today`` / ``runs_this_week`` / ``runs_this_month`` count executions by ``scheduled_for`` (the slot
  they ran for; a manual run's slot is the moment it was asked for) since midnight UTC, Monday 00:00 UTC (ISO
  week) and the 1st 00:00 UTC. Skipped executions (decisions, not runs) are not counted as runs;
- ``last_run_at`` is the latest ``started_at``.

:func:`last_outcome` is the status of a task's latest finished run, for ``scheduler:list``.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Connection, ScalarSelect, and_, case, func, select, true

from scheduler.records import FAILURE_STATUSES, OUTCOME_STATUSES, as_utc
from scheduler.storage.tables import executions

# Records of scheduler.records.DEFERRED: imported where they are built, so importing this module does not
# define them (the read verbs never do).
if TYPE_CHECKING:
    from scheduler.records import TaskStats

e = executions.c


def window_starts(now: datetime) -> tuple[datetime, datetime, datetime]:
    """(start of today, of this ISO week, of this month), all UTC, for ``now`` (aware)."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day, day - timedelta(days=day.weekday()), day.replace(day=1)


def last_outcome(task_id: ColumnElement[Any]) -> ScalarSelect[Any]:
    """The status of the latest (highest id) finished run of the task ``task_id``, NULL before its first.

    A correlated subquery walking the ``(task_id, id)`` index backwards: it stops at the first finished row,
    so its cost does not grow with the task's history.
    """
    return (
        select(e.status)
        .where(e.task_id == task_id, e.status.in_(OUTCOME_STATUSES))
        .order_by(e.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def _count(condition: ColumnElement[bool]) -> Any:
    return func.count(case((condition, 1)))


def task_stats(connection: Connection, *, task_id: int | None, now: datetime) -> TaskStats:
    """Statistics of one task's executions (``task_id``) or of all executions (None, deleted tasks' too)."""
    from scheduler.records import TaskStats

    scope = e.task_id == task_id if task_id is not None else true()
    day, week, month = window_starts(now)
    ran = e.status != "skipped"
    query = select(
        func.count().label("total"),
        _count(e.status == "completed").label("completed"),
        _count(e.status == "failed").label("failed"),
        _count(e.status == "timed_out").label("timed_out"),
        _count(e.status == "skipped").label("skipped"),
        _count(e.status == "running").label("running"),
        _count(e.status.in_(FAILURE_STATUSES)).label("failures"),
        func.count(e.duration_ms).label("timed"),
        func.avg(e.duration_ms).label("avg_duration"),
        _count(and_(ran, e.scheduled_for >= day)).label("today"),
        _count(and_(ran, e.scheduled_for >= week)).label("week"),
        _count(and_(ran, e.scheduled_for >= month)).label("month"),
        func.max(e.started_at).label("last_run_at"),
    ).where(scope)
    row = connection.execute(query).one()
    finished = row.completed + row.failures
    p95 = None
    if row.timed:
        offset = math.floor(0.95 * (row.timed - 1))
        p95_query = (
            select(e.duration_ms)
            .where(scope, e.duration_ms.is_not(None))
            .order_by(e.duration_ms)
            .limit(1)
            .offset(offset)
        )
        p95 = float(connection.execute(p95_query).scalar_one())
    last = row.last_run_at
    if isinstance(last, str):  # SQLite's max() over a DATETIME column returns the stored text
        last = datetime.fromisoformat(last)
    return TaskStats(
        task_id=task_id,
        total=row.total,
        completed=row.completed,
        failed=row.failed,
        timed_out=row.timed_out,
        skipped=row.skipped,
        running=row.running,
        success_rate=row.completed / finished if finished else None,
        avg_duration_ms=None if row.avg_duration is None else float(row.avg_duration),
        p95_duration_ms=p95,
        runs_today=row.today,
        runs_this_week=row.week,
        runs_this_month=row.month,
        last_run_at=as_utc(last) if isinstance(last, datetime) else None,
    )
