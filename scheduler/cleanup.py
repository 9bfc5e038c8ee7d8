"""History retention: delete old finished executions and their logs, in bounded batches.

Contract of :func:`run_cleanup`:

- deletes executions whose status is finished (:data:`scheduler.records.FINISHED_STATUSES`) and whose
  ``finished_at`` is before ``now - history_retention_days``, with their ``task_logs``;
- never touches ``pending``, ``queued``, ``running`` or ``retrying`` rows;
- keeps every row whose slot (``scheduled_for``) lies within :data:`SLOT_WINDOW` of now, whatever its status,
  so the unique (task, slot) constraint still guards the slots a planner could plan again (misfire window);
- works in transactions of at most ``batch_size`` executions (never one long transaction holding locks).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, select

from scheduler.records import FINISHED_STATUSES
from scheduler.repository.clock import db_now
from scheduler.repository.dispatch import write_transaction
from scheduler.repository.tables import executions, logs
from scheduler.settings import Settings

BATCH_SIZE = 5000
SLOT_WINDOW = timedelta(hours=1)  # the longest default misfire grace


@dataclass(frozen=True, slots=True)
class CleanupResult:
    """``deleted`` executions; ``done`` False when the time budget ran out with expired rows left."""

    deleted: int
    done: bool


def run_cleanup(
    engine: Engine, settings: Settings, *, now: datetime | None = None, batch_size: int = BATCH_SIZE
) -> int:
    """Delete all expired history (see the module docstring); return how many executions were deleted.

    ``now`` defaults to the database clock (tests pass one to age rows without waiting).
    """
    return cleanup_step(engine, settings, now=now, batch_size=batch_size).deleted


def cleanup_step(
    engine: Engine,
    settings: Settings,
    *,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
    time_budget_s: float | None = None,
) -> CleanupResult:
    """Like :func:`run_cleanup`, but stop starting batches after ``time_budget_s`` (the planner's way: a large
    backlog is worked off over several ticks instead of stalling one)."""
    started = time.monotonic()
    if now is None:
        with engine.connect() as connection:
            now = db_now(connection)
    finished_before = now - timedelta(days=settings.history_retention_days)
    slots_before = now - SLOT_WINDOW
    deleted = 0
    while True:
        with write_transaction(engine) as connection:
            query = (
                select(executions.c.id)
                .where(
                    executions.c.finished_at < finished_before,
                    executions.c.status.in_(FINISHED_STATUSES),
                    executions.c.scheduled_for < slots_before,
                )
                .order_by(executions.c.finished_at)
                .limit(batch_size)
            )
            ids = list(connection.execute(query).scalars())
            if ids:
                # Logs first: do not rely on ON DELETE CASCADE (SQLite enforces it only with foreign_keys=ON).
                connection.execute(delete(logs).where(logs.c.execution_id.in_(ids)))
                connection.execute(delete(executions).where(executions.c.id.in_(ids)))
        deleted += len(ids)
        if len(ids) < batch_size:
            return CleanupResult(deleted, True)
        if time_budget_s is not None and time.monotonic() - started >= time_budget_s:
            return CleanupResult(deleted, False)
