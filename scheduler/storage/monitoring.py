"""Reads for the planner's metrics: executions per active status, and when a relayed batch was enqueued.

Each opens its own connection from the engine, outside any planning transaction, so a metric read can
neither hold a planner's locks longer nor fail its transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Engine, func, select, text

from scheduler.records import as_utc
from scheduler.storage.dispatch import ACTIVE_STATUSES
from scheduler.storage.tables import executions

_STATUS_COUNTS = (
    select(executions.c.status, func.count())
    .where(executions.c.status.in_(ACTIVE_STATUSES))
    .group_by(executions.c.status)
)


def active_status_counts(engine: Engine, *, timeout_ms: int) -> dict[str, int]:
    """Executions per active status (:data:`~scheduler.storage.dispatch.ACTIVE_STATUSES`; a status with none
    is absent): one ``GROUP BY status`` over the ``(status, created_at)`` index. PostgreSQL cancels it after
    ``timeout_ms`` (``SET LOCAL statement_timeout``, undone by the rollback that ends the read)."""
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"SET LOCAL statement_timeout = {int(timeout_ms)}"))
        counts = {str(status): int(count) for status, count in connection.execute(_STATUS_COUNTS)}
        connection.rollback()
    return counts


def first_attempt_enqueue_times(engine: Engine, ids: Sequence[int]) -> list[tuple[str, datetime, datetime]]:
    """(trigger, ``scheduled_for``, ``enqueued_at``) of the first attempts among executions ``ids`` (by
    primary key), times aware in UTC; ``started_at`` stands in for ``enqueued_at`` when a worker claimed the
    row before it was marked queued, and a row with neither is left out."""
    if not ids:
        return []
    query = select(
        executions.c.trigger, executions.c.scheduled_for, executions.c.enqueued_at, executions.c.started_at
    ).where(executions.c.id.in_(ids), executions.c.attempt == 1)
    found = []
    with engine.connect() as connection:
        for row in connection.execute(query):
            scheduled = as_utc(row.scheduled_for)
            enqueued = as_utc(row.enqueued_at or row.started_at)
            if scheduled is not None and enqueued is not None:
                found.append((str(row.trigger), scheduled, enqueued))
    return found
