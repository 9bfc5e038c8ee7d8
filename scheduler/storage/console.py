"""Reads of the operator web console (``web/``): a filtered, sorted page of tasks by keyset, who paused which
task, duration percentiles, and log lines after a position (for a live tail). Callers own the connection.

Keyset pagination: a page starts strictly after the ``(sort value, id)`` of the previous page's last row, so a
page costs the same wherever it is, and rows inserted meanwhile neither repeat nor vanish.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, func, literal, or_, select

from scheduler.records import LogLine, Task
from scheduler.storage.mapping import log_from_row, task_from_row
from scheduler.storage.stats import last_outcome
from scheduler.storage.tables import audit, executions, logs, tasks

# A stand-in for "no next run" that sorts after every real instant (keyset needs a total order).
_NEVER = datetime(9999, 12, 31, tzinfo=UTC)
SORT_KEYS = ("id", "name", "next_run_at", "updated_at", "queue", "status")


@dataclass(frozen=True)
class TaskFilter:
    """What the tasks page shows: ``text`` matches name or command (case-insensitive substring); ``source``
    is the owner that created the task (a tasks file's source name, ``cli``, ``api``, ``web``)."""

    status: str | None = None
    queue: str | None = None
    text: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class PageRow:
    task: Task
    last_outcome: str | None
    last_finished_at: datetime | None


def _sort_column(key: str) -> ColumnElement[Any]:
    if key == "next_run_at":
        return func.coalesce(tasks.c.next_run_at, literal(_NEVER, tasks.c.next_run_at.type))
    column: ColumnElement[Any] = tasks.c[key]
    return column


def sort_value(task: Task, key: str) -> Any:
    """The value of ``task`` that a keyset cursor carries for ``key`` (what :func:`task_page` orders by)."""
    value = getattr(task, key)
    if key == "next_run_at" and value is None:
        return _NEVER
    return value


def _last_finished_at(task_id: ColumnElement[Any]) -> Any:
    e = executions.c
    return (
        select(e.finished_at)
        .where(e.task_id == task_id, e.finished_at.is_not(None))
        .order_by(e.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def task_page(
    connection: Connection,
    where: TaskFilter,
    *,
    sort: str = "id",
    descending: bool = False,
    after: tuple[Any, int] | None = None,
    limit: int = 50,
) -> list[PageRow]:
    """Up to ``limit`` tasks matching ``where``, ordered by ``sort`` then id, strictly after ``after``."""
    if sort not in SORT_KEYS:
        raise ValueError(f"unknown sort key {sort!r}")
    column = _sort_column(sort)
    query = select(
        tasks,
        last_outcome(tasks.c.id).label("last_outcome"),
        _last_finished_at(tasks.c.id).label("last_finished_at"),
    )
    if where.status is not None:
        query = query.where(tasks.c.status == where.status)
    if where.queue is not None:
        query = query.where(tasks.c.queue == where.queue)
    if where.source is not None:
        query = query.where(tasks.c.source == where.source)
    if where.text:
        pattern = "%" + where.text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(
            or_(
                func.lower(tasks.c.name).like(pattern, escape="\\"),
                func.lower(tasks.c.command).like(pattern, escape="\\"),
            )
        )
    if after is not None:
        value, last_id = after
        if sort == "id":
            query = query.where(tasks.c.id < last_id if descending else tasks.c.id > last_id)
        elif descending:
            query = query.where(or_(column < value, and_(column == value, tasks.c.id < last_id)))
        else:
            query = query.where(or_(column > value, and_(column == value, tasks.c.id > last_id)))
    order = (column.desc(), tasks.c.id.desc()) if descending else (column, tasks.c.id)
    query = query.order_by(*order).limit(limit) if sort != "id" else query.order_by(order[1]).limit(limit)
    rows = connection.execute(query).all()
    return [PageRow(task_from_row(row), row.last_outcome, _utc(row.last_finished_at)) for row in rows]


def _utc(value: Any) -> datetime | None:
    if isinstance(value, str):  # SQLite returns a scalar subquery's DATETIME as its stored text
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return None


def task_sources(connection: Connection) -> list[str]:
    """The distinct sources of existing tasks, sorted (the tasks page's source filter)."""
    return sorted(str(source) for source in connection.execute(select(tasks.c.source).distinct()).scalars())


def paused_by(connection: Connection, task_ids: Collection[int]) -> dict[int, tuple[str, datetime]]:
    """task id -> (actor, at) of its latest ``pause`` audit row, for the given tasks (those that have one)."""
    if not task_ids:
        return {}
    latest = (
        select(audit.c.task_id, func.max(audit.c.id).label("id"))
        .where(audit.c.action == "pause", audit.c.task_id.in_(list(task_ids)))
        .group_by(audit.c.task_id)
        .subquery()
    )
    query = select(audit.c.task_id, audit.c.actor, audit.c.at).join(latest, audit.c.id == latest.c.id)
    found: dict[int, tuple[str, datetime]] = {}
    for task_id, actor, at in connection.execute(query):
        when = _utc(at)
        if when is not None:
            found[int(task_id)] = (str(actor), when)
    return found


def duration_percentiles(
    connection: Connection, task_id: int, quantiles: Sequence[float]
) -> dict[float, float | None]:
    """The nearest-lower-rank percentile of recorded durations (ms) for each quantile, as
    :mod:`scheduler.storage.stats` computes its p95 (the same figure on both databases)."""
    e = executions.c
    scope = and_(e.task_id == task_id, e.duration_ms.is_not(None))
    timed = int(connection.execute(select(func.count()).where(scope)).scalar_one())
    out: dict[float, float | None] = {}
    for q in quantiles:
        if not timed:
            out[q] = None
            continue
        offset = math.floor(q * (timed - 1))
        query = select(e.duration_ms).where(scope).order_by(e.duration_ms).limit(1).offset(offset)
        out[q] = float(connection.execute(query).scalar_one())
    return out


def runs_since(connection: Connection, task_id: int, since: datetime) -> int:
    """How many runs (executions that were not skipped) the task had for slots at or after ``since``."""
    e = executions.c
    scope = and_(e.task_id == task_id, e.status != "skipped", e.scheduled_for >= since)
    return int(connection.execute(select(func.count()).where(scope)).scalar_one())


def logs_after(
    connection: Connection, execution_id: int, position: int, *, limit: int = 500
) -> list[LogLine]:
    """The execution's log lines after the first ``position`` ones, in order (at most ``limit``)."""
    query = (
        select(logs)
        .where(logs.c.execution_id == execution_id)
        .order_by(logs.c.at, logs.c.id)
        .offset(position)
        .limit(limit)
    )
    return [log_from_row(row) for row in connection.execute(query)]
