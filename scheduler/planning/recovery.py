"""The recovery sweep the leader runs every few seconds: a lost broker or worker loses nothing (invariant 1
of docs/architecture.md).

- ``queued`` executions no worker claimed within ``recovery_after`` ms of their publish, and whose message is
  no longer on the broker, are published again (same id; claims are conditional, so if the first message was
  only slow, the second is a no-op). A message still waiting on its queue (no worker runs, or all are busy)
  is left alone: republishing it put a second copy of every id on Redis per ``recovery_after`` while nobody
  consumed, and moved ``enqueued_at`` a minute late. Each row looked at is stamped (``heartbeat_at``) and
  looked at again ``recovery_after`` later; ``enqueued_at`` keeps the first publish. A broker that cannot
  tell (not Redis) gets every unclaimed row republished, as before;
- ``retrying`` executions whose retry message should have arrived long ago (``recovery_after`` after twice
  their retry delay) are published again; the claim then starts their next attempt;
- ``running`` executions whose worker went silent are reaped: no heartbeat for 3 x ``heartbeat_interval``, or
  still running ``max(60 s, 3 x heartbeat_interval)`` past their time limit. With attempts left the row goes
  back to ``pending`` as the next attempt (the relay publishes it within the concurrency cap); on its last
  attempt it becomes ``lost`` and a ``task-event`` ``failed`` is emitted. ``lost`` counts as a failure of the
  task: at ``auto_pause_after`` consecutive failures the task is paused (audited, ``task-paused``).
- right after the sweeps were interrupted for longer than the heartbeat bound (the database was down, or
  this planner frozen or not leading) nothing is reaped for one more bound: heartbeats could not be written.
- Stale ``pending`` rows need nothing here: the planner's relay publishes every pending row.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine

from scheduler.errors import BrokerUnavailable
from scheduler.observability.events import TASK_EVENT, TASK_PAUSED, EventBus
from scheduler.planning.lease import Lease
from scheduler.planning.publisher import QueueInspector
from scheduler.records import Dispatch, OpenExecution, Task
from scheduler.settings import Settings
from scheduler.storage.clock import db_now
from scheduler.storage.recovery import (
    dispatches_by_id,
    executions_by_id,
    mark_lost,
    open_executions,
    refresh_enqueued,
    requeue_lost,
    stamp_seen,
    unclaimed_dispatches,
)
from scheduler.storage.task_outcomes import load_task, record_auto_pause
from scheduler.storage.transactions import write_transaction

logger = logging.getLogger("scheduler.planning.planner")

OPEN_LIMIT = 10_000  # running/retrying rows read per sweep; bounded by the concurrency cap in practice
OVERRUN_MARGIN = timedelta(seconds=60)  # beyond the worker's hard limit (timeout + at most 30 s of grace)
RETRY_DELAY_CAP = timedelta(minutes=15)  # the worker caps retry countdowns there (celeryconfig)

Publish = Callable[[list[Dispatch]], str | None]  # returns the error text, or None when published


@dataclass(frozen=True, slots=True)
class SweepReport:
    republished: int = 0
    requeued: int = 0
    lost: int = 0


def silent_reason(execution: OpenExecution, now: datetime, settings: Settings) -> str | None:
    """Why a ``running`` execution counts as lost at ``now``, or None while it looks alive."""
    stale_after = timedelta(milliseconds=3 * settings.heartbeat_interval)
    attempt = f"attempt {execution.attempt} lost"
    last_sign = execution.heartbeat_at or execution.started_at
    if last_sign is None or now - last_sign > stale_after:
        seconds = "ever" if last_sign is None else f"{(now - last_sign).total_seconds():.0f} s"
        return f"{attempt}: no heartbeat from worker {execution.worker or '?'} for {seconds}"
    limit = timedelta(milliseconds=execution.timeout_ms or settings.task_timeout)
    started = execution.started_at
    if started is not None and now - started > limit + max(OVERRUN_MARGIN, stale_after):
        return f"{attempt}: still running {(now - started).total_seconds():.0f} s, its time limit is {limit}"
    return None


def retry_overdue(execution: OpenExecution, now: datetime, settings: Settings) -> bool:
    """True when a ``retrying`` execution's retry message is overdue (probably lost with the broker)."""
    since = execution.enqueued_at or execution.heartbeat_at or execution.started_at
    if since is None:
        return True
    base_ms = settings.retry_delay if execution.retry_delay_ms is None else execution.retry_delay_ms
    backoff = execution.retry_backoff or settings.retry_backoff
    delay = min(timedelta(milliseconds=base_ms * backoff ** max(0, execution.attempt - 1)), RETRY_DELAY_CAP)
    return now - since > 2 * delay + timedelta(milliseconds=settings.recovery_after)


class Recovery:
    """Runs the sweep; ``lease`` (None: no leadership) fences its transaction like a dispatch, and its
    publishing: a sweep whose lease is no longer trusted publishes nothing."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        lease: Lease | None,
        events: EventBus | None,
        *,
        idle_timeout_ms: int | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.lease = lease
        self.events = events
        self.idle_timeout_ms = idle_timeout_ms
        self._last_sweep: float | None = None  # monotonic time of the last sweep that reached the database
        self._watching_since = -math.inf

    def _heartbeats_trusted(self) -> bool:
        """Whether a stale heartbeat now means a dead worker; called once per sweep that reached the database.

        False for one heartbeat bound after the sweeps were interrupted for longer than that bound (the
        database was unreachable, or this planner frozen or not leading): during a database outage no worker
        could write its heartbeat, so right after it every live execution would look dead. The workers get
        the bound to beat (or record their outcome) again before anything is reaped.
        """
        bound_s = 3 * self.settings.heartbeat_interval / 1000
        now = time.monotonic()
        if self._last_sweep is not None and now - self._last_sweep > bound_s:
            self._watching_since = now
        self._last_sweep = now
        return now - self._watching_since >= bound_s

    def sweep(self, publish: Publish, inspector: QueueInspector | None = None) -> SweepReport:
        """One sweep (see the module docstring). Database errors propagate; a failed publish leaves the rows
        as they are for the next sweep. ``inspector`` (the publisher, when it can tell) says which unclaimed
        ``queued`` executions still have their message on the broker: those are not published again."""
        timeout = self.settings.task_timeout
        with write_transaction(self.engine, idle_timeout_ms=self.idle_timeout_ms) as connection:
            now = db_now(connection)
            if self.lease is not None and not self.lease.holds(connection, now):
                return SweepReport()
            before = now - timedelta(milliseconds=self.settings.recovery_after)
            # With an inspector one read of the queue answers for many rows; without, each is republished.
            limit = OPEN_LIMIT if inspector is not None else self.settings.planner_batch_size
            queued = unclaimed_dispatches(connection, before, limit, default_timeout_ms=timeout)
            overdue = [
                e.id
                for e in open_executions(connection, "retrying", OPEN_LIMIT)
                if retry_overdue(e, now, self.settings)
            ]
            retrying = dispatches_by_id(connection, overdue, default_timeout_ms=timeout)
            trusted = self._heartbeats_trusted()
            requeued, lost, paused = self._reap(connection, now) if trusted else ({}, [], [])
        republished = self._recover_queued(queued, publish, inspector)
        if retrying and self._may_publish() and publish(retrying) is None:
            with write_transaction(self.engine, idle_timeout_ms=self.idle_timeout_ms) as connection:
                ids = [d.execution_id for d in retrying]
                refresh_enqueued(connection, ids, "retrying", now=db_now(connection))
            republished += len(retrying)
        self._emit_failed(requeued, lost)
        if self.events is not None:
            for task in paused:
                self.events.emit(TASK_PAUSED, {"task": task.to_json()})
        return SweepReport(republished=republished, requeued=len(requeued), lost=len(lost))

    def _may_publish(self) -> bool:
        """False once leadership is no longer trusted: the new leader's sweep republishes instead."""
        return self.lease is None or self.lease.locally_valid()

    def _recover_queued(
        self, queued: list[Dispatch], publish: Publish, inspector: QueueInspector | None
    ) -> int:
        """Republish the unclaimed ``queued`` executions whose message is not on the broker (all of them when
        the broker cannot tell), in batches; stamp every one looked at (:func:`stamp_seen`). Returns how many
        were republished.

        A message still waiting on its queue is not lost: no worker took it yet (none runs, or all are busy).
        Publishing it again would only add a second copy per sweep round for as long as nobody consumes.
        """
        if not queued or not self._may_publish():
            return 0
        waiting: set[int] = set()
        if inspector is not None:
            try:
                waiting = inspector.waiting(queued) or set()
            except BrokerUnavailable:
                return 0  # the broker is down: nothing to publish to; the next sweep looks again
        seen = [d.execution_id for d in queued if d.execution_id in waiting]
        missing = [d for d in queued if d.execution_id not in waiting]
        republished = 0
        batch = self.settings.planner_batch_size
        for first in range(0, len(missing), batch):
            chunk = missing[first : first + batch]
            if not self._may_publish() or publish(chunk) is not None:
                break
            seen += [d.execution_id for d in chunk]
            republished += len(chunk)
        if seen:
            with write_transaction(self.engine, idle_timeout_ms=self.idle_timeout_ms) as connection:
                stamp_seen(connection, seen, now=db_now(connection))
        if republished:
            logger.warning(
                "recovery: republished %d queued executions that no worker took within %.0f s and whose "
                "message %s",
                republished,
                self.settings.recovery_after / 1000,
                "was not on the broker" if inspector is not None else "the broker cannot account for",
            )
        return republished

    def _reap(self, connection: Connection, now: datetime) -> tuple[dict[int, int], list[int], list[Task]]:
        """Reap silent ``running`` rows: ({requeued id: the lost attempt}, [ids now lost], [tasks that the
        lost executions auto-paused, audited here])."""
        requeued: dict[int, int] = {}
        lost: list[int] = []
        paused: list[Task] = []
        for execution in open_executions(connection, "running", OPEN_LIMIT):
            reason = silent_reason(execution, now, self.settings)
            if reason is None:
                continue
            if execution.attempt < execution.max_attempts:
                if requeue_lost(connection, execution, now=now, error=reason):
                    requeued[execution.id] = execution.attempt
            elif (marked := mark_lost(connection, execution, now=now, error=reason)) is not None:
                lost.append(execution.id)
                if marked.task is not None and marked.task.task_paused and marked.task_id is not None:
                    task = load_task(connection, marked.task_id)
                    if task is not None:
                        record_auto_pause(connection, task, actor=self._actor, at=now)
                        paused.append(task)
        return requeued, lost, paused

    @property
    def _actor(self) -> str:
        return f"planner:{self.lease.holder}" if self.lease is not None else "planner"

    def _emit_failed(self, requeued: dict[int, int], lost: list[int]) -> None:
        """``task-event`` ``failed`` per lost attempt, shaped like the worker's (``final`` False: retried)."""
        if self.events is None or not (requeued or lost):
            return
        with self.engine.connect() as connection:
            records = executions_by_id(connection, [*requeued, *lost])
        for execution in records:
            payload = execution.to_json()
            if execution.id in requeued:  # the row already shows its next attempt: report the lost one
                payload.update(status="lost", attempt=requeued[execution.id])
            final = execution.id not in requeued
            self.events.emit(TASK_EVENT, {"type": "failed", "final": final, "execution": payload})
