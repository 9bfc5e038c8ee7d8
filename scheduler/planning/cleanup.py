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

This module decides the windows and the batches; the SQL is :mod:`scheduler.storage.retention`'s.

Audit rows older than ``audit_retention_days`` (0, the default: kept for ever) go too, a prefix of the hash
chain at a time, each batch after a ``checkpoint`` row that keeps the chain verifiable
(:func:`scheduler.storage.audit_chain.prune`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine

from scheduler.settings import Settings
from scheduler.storage import audit_chain
from scheduler.storage.clock import db_now
from scheduler.storage.retention import delete_expired_executions, graces_longer_than
from scheduler.storage.transactions import write_transaction

BATCH_SIZE = 5000
SLOT_WINDOW = timedelta(hours=1)  # the longest default misfire grace
_SLOT_WINDOW_MS = int(SLOT_WINDOW.total_seconds() * 1000)
CLEANUP_ACTOR = "cleanup"  # the actor of the checkpoint rows audit pruning appends


@dataclass(frozen=True, slots=True)
class CleanupResult:
    """``deleted`` executions and ``audit_pruned`` audit rows; ``done`` False when the time budget ran out
    with expired rows left."""

    deleted: int
    done: bool
    audit_pruned: int = 0


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
    deadline = None if time_budget_s is None else started + time_budget_s
    audit_pruned, audit_done = prune_audit(engine, settings, batch_size=batch_size, deadline=deadline)
    if not audit_done:
        return CleanupResult(0, False, audit_pruned)
    if now is None:
        with engine.connect() as connection:
            now = db_now(connection)
    finished_before = now - timedelta(days=settings.history_retention_days)
    with engine.connect() as connection:
        windows = slot_windows(graces_longer_than(connection, _SLOT_WINDOW_MS), now)
    deleted = 0
    for index, (grace_ms, slots_before) in enumerate(windows):
        while True:
            with write_transaction(engine) as connection:
                batch = delete_expired_executions(
                    connection,
                    finished_before=finished_before,
                    slots_before=slots_before,
                    grace_ms=grace_ms,
                    default_grace_ms=_SLOT_WINDOW_MS,
                    limit=batch_size,
                )
            deleted += batch
            window_done = batch < batch_size
            if time_budget_s is not None and time.monotonic() - started >= time_budget_s:
                return CleanupResult(deleted, window_done and index == len(windows) - 1, audit_pruned)
            if window_done:
                break
    return CleanupResult(deleted, True, audit_pruned)


def prune_audit(
    engine: Engine, settings: Settings, *, batch_size: int = BATCH_SIZE, deadline: float | None = None
) -> tuple[int, bool]:
    """Prune audit rows older than ``audit_retention_days`` (0: none), ``batch_size`` per transaction, until
    none is left (True) or ``deadline`` (``time.monotonic()``) passed (False). Returns (pruned, done)."""
    if settings.audit_retention_days == 0:
        return 0, True
    pruned = 0
    while True:
        with write_transaction(engine) as connection:
            count = audit_chain.prune(
                connection,
                retention_days=settings.audit_retention_days,
                limit=batch_size,
                actor=CLEANUP_ACTOR,
            )
        pruned += count
        if count < batch_size:
            return pruned, True
        if deadline is not None and time.monotonic() >= deadline:
            return pruned, False


def slot_windows(longer_graces: list[int], now: datetime) -> list[tuple[int | None, datetime]]:
    """(misfire grace in ms, slots before this instant may go) pairs that cover every execution once.

    Most tasks share :data:`SLOT_WINDOW` (grace None: every task whose grace is at most that, and executions
    of deleted tasks); each longer ``misfire_grace_ms`` among the tasks (``longer_graces``) gets its own pair.
    """
    pairs: list[tuple[int | None, datetime]] = [(None, now - SLOT_WINDOW)]
    pairs += [(grace, now - timedelta(milliseconds=grace)) for grace in longer_graces]
    return pairs
