"""History retention: delete old finished executions and their logs, in bounded batches.

Contract of :func:`run_cleanup`:

- deletes executions whose status is finished (:data:`scheduler.records.FINISHED_STATUSES`) and whose
  ``finished_at`` is before ``now - history_retention_days``, with their ``task_logs``;
- never touches ``pending``, ``queued``, ``running`` or ``retrying`` rows;
- keeps every row whose slot (``scheduled_for``) lies within its task's misfire window of now, whatever its
  status: :data:`SLOT_WINDOW`, or the task's ``misfire_grace_ms`` when that is longer. So the unique (task,
  slot) constraint still guards every slot a planner could plan again and still run (a lagging planner
  replaying a stale view of the task finds the row and inserts nothing);
- works in transactions of at most ``batch_size`` executions (never one long transaction holding locks).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, or_, select

from scheduler.records import FINISHED_STATUSES
from scheduler.settings import Settings
from scheduler.storage.clock import db_now
from scheduler.storage.dispatch import write_transaction
from scheduler.storage.table_names import executions, logs, tasks

BATCH_SIZE = 5000
SLOT_WINDOW = timedelta(hours=1)  # the longest default misfire grace
_SLOT_WINDOW_MS = int(SLOT_WINDOW.total_seconds() * 1000)


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
    with engine.connect() as connection:
        windows = slot_windows(connection, now)
    deleted = 0
    for index, (tasks_of_window, slots_before) in enumerate(windows):
        while True:
            with write_transaction(engine) as connection:
                query = (
                    select(executions.c.id)
                    .where(
                        executions.c.finished_at < finished_before,
                        executions.c.status.in_(FINISHED_STATUSES),
                        executions.c.scheduled_for < slots_before,
                        tasks_of_window,
                    )
                    .order_by(executions.c.finished_at)
                    .limit(batch_size)
                )
                ids = list(connection.execute(query).scalars())
                if ids:
                    # Logs first: do not rely on ON DELETE CASCADE (SQLite enforces it only with
                    # foreign_keys=ON).
                    connection.execute(delete(logs).where(logs.c.execution_id.in_(ids)))
                    connection.execute(delete(executions).where(executions.c.id.in_(ids)))
            deleted += len(ids)
            window_done = len(ids) < batch_size
            if time_budget_s is not None and time.monotonic() - started >= time_budget_s:
                return CleanupResult(deleted, window_done and index == len(windows) - 1)
            if window_done:
                break
    return CleanupResult(deleted, True)


def slot_windows(connection: Connection, now: datetime) -> list[tuple[Any, datetime]]:
    """(condition on executions, slots before this instant may go) pairs that cover every execution once.

    Most tasks share :data:`SLOT_WINDOW`; each longer ``misfire_grace_ms`` among the tasks gets its own pair
    (there are few distinct values). Executions of deleted tasks (``task_id`` NULL) use the default window.
    """
    longer = tasks.c.misfire_grace_ms > _SLOT_WINDOW_MS
    graces = sorted(connection.execute(select(tasks.c.misfire_grace_ms).where(longer).distinct()).scalars())
    pairs: list[tuple[Any, datetime]] = [
        (
            or_(
                executions.c.task_id.is_(None), executions.c.task_id.not_in(select(tasks.c.id).where(longer))
            ),
            now - SLOT_WINDOW,
        )
    ]
    for grace in graces:
        same = select(tasks.c.id).where(tasks.c.misfire_grace_ms == grace)
        pairs.append((executions.c.task_id.in_(same), now - timedelta(milliseconds=int(grace))))
    return pairs
