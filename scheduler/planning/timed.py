"""The planner's timed work besides due slots: lifting timed pauses and releasing backfills' executions.

Run by the leader at the start of every tick (:meth:`Planner.tick
<scheduler.planning.planner.Planner.tick>`). A cheap read first (:func:`~scheduler.storage.backfills.
work_waiting`); only when a backfill runs or a pause ended does it open a write transaction, fenced by the
lease like a planning batch:

- a task whose ``paused_until`` has passed becomes active again, its next run the first slot at or after
  ``paused_until`` (:func:`scheduler.rules.backfills.resume_after_pause`: the paused span is never replayed,
  and a planner that comes late still runs the slot that ended the pause, by the misfire policy); audited
  ``resume`` by the actor ``planner``, and emitted as ``task-resumed``;
- each running backfill's ``waiting`` executions become ``pending`` within its ``max_parallel`` and the
  task's overlap policy (:func:`~scheduler.storage.backfills.release_waiting`); the relay then publishes them
  within the concurrency cap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine

from scheduler.observability import events as ev
from scheduler.observability.events import EventBus
from scheduler.planning.batch import PLANNER_ACTOR
from scheduler.records import AuditRecord, Task
from scheduler.redaction import public_task
from scheduler.rules.backfills import resume_after_pause, resumed_columns
from scheduler.storage import backfills as backfill_sql
from scheduler.storage import tasks as tasks_sql
from scheduler.storage.audit import insert_audit
from scheduler.storage.transactions import write_transaction

logger = logging.getLogger("scheduler.planning.planner")

PAUSES_PER_TICK = 500


@dataclass(frozen=True, slots=True)
class TimedReport:
    resumed: int = 0
    released: int = 0
    fenced: bool = False


def run_timed_work(
    engine: Engine,
    fence: Callable[[Connection], datetime | None],
    *,
    events: EventBus | None = None,
    idle_timeout_ms: int | None = None,
) -> TimedReport:
    """Lift ended pauses and release backfill executions (see the module docstring). ``fence`` returns the
    database clock when this planner may act (it holds the lease), else None: nothing is written."""
    with engine.connect() as connection:
        if not backfill_sql.work_waiting(connection):
            return TimedReport()
    resumed: list[Task] = []
    with write_transaction(engine, idle_timeout_ms=idle_timeout_ms) as connection:
        now = fence(connection)
        if now is None:
            return TimedReport(fenced=True)
        records: list[AuditRecord] = []
        for task in backfill_sql.ended_pauses(connection, now, PAUSES_PER_TICK):
            assert task.paused_until is not None  # the query's condition
            columns = resumed_columns(task, resume_after_pause(task, task.paused_until))
            after = tasks_sql.update_task(connection, task.id, columns, now=now)
            records.append(AuditRecord("resume", task.id, task.name, public_task(task), public_task(after)))
            resumed.append(after)
        insert_audit(connection, records, actor=PLANNER_ACTOR, at=now)
        released = backfill_sql.release_waiting(connection, now)
    for task in resumed:
        logger.info("planner: task %s (%s) resumed: its timed pause ended", task.id, task.name)
        if events is not None:
            try:
                events.emit(ev.TASK_RESUMED, {"task": public_task(task)})
            except Exception:
                logger.exception("a %s listener failed for task %s", ev.TASK_RESUMED, task.id)
    return TimedReport(resumed=len(resumed), released=released)
