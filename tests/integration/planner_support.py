"""Helpers of the planner, lease and cleanup tests: a recording publisher, task set-up, row reads.

Time is controlled through the database, never by mocking clocks: a test moves a task's ``next_run_at`` (or an
execution's timestamps) into the past relative to the database clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, select, update

from scheduler.commands.loading import load_registry
from scheduler.errors import BrokerUnavailable
from scheduler.records import Dispatch, Execution, Task
from scheduler.service import SchedulerService
from scheduler.settings import Settings
from scheduler.storage.clock import db_now
from scheduler.storage.mapping import execution_from_row, task_from_row
from scheduler.storage.tables import executions, logs, tasks


class RecordingPublisher:
    """Remembers every dispatch; ``fail = True`` makes it raise like an unreachable broker."""

    def __init__(self) -> None:
        self.dispatches: list[Dispatch] = []
        self.fail = False
        self._lock = threading.Lock()

    def publish(self, dispatches: Sequence[Dispatch]) -> None:
        if self.fail:
            raise BrokerUnavailable("the test broker is down")
        with self._lock:
            self.dispatches.extend(dispatches)

    @property
    def ids(self) -> list[int]:
        with self._lock:
            return [d.execution_id for d in self.dispatches]


def make_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"max_concurrent_tasks": 1000, "history_retention_days": 30, **overrides}
    return Settings(**values)


def make_service(engine: Engine, settings: Settings) -> SchedulerService:
    return SchedulerService(engine, settings, commands=load_registry(settings), actor="test")


def now_of(engine: Engine) -> datetime:
    """The database clock."""
    with engine.connect() as connection:
        return db_now(connection)


def set_task(engine: Engine, task_id: int, **values: Any) -> None:
    with engine.begin() as connection:
        connection.execute(update(tasks).where(tasks.c.id == task_id).values(**values))


def get_task(engine: Engine, task_id: int) -> Task:
    with engine.connect() as connection:
        return task_from_row(connection.execute(select(tasks).where(tasks.c.id == task_id)).one())


def executions_of(engine: Engine, task_id: int | None = None) -> list[Execution]:
    """Executions (of one task, or all), by slot."""
    query = select(executions).order_by(executions.c.scheduled_for, executions.c.id)
    if task_id is not None:
        query = query.where(executions.c.task_id == task_id)
    with engine.connect() as connection:
        return [execution_from_row(row) for row in connection.execute(query)]


def add_execution(engine: Engine, task: Task, scheduled_for: datetime, **values: Any) -> int:
    """Insert an execution row of ``task`` directly (status and times as given)."""
    row: dict[str, Any] = {
        "task_id": task.id,
        "task_name": task.name,
        "command": task.command,
        "scheduled_for": scheduled_for,
        "queue": task.queue,
        "max_attempts": task.retries + 1,
        **values,
    }
    with engine.begin() as connection:
        return int(connection.execute(insert(executions).values(row).returning(executions.c.id)).scalar_one())


def add_log(engine: Engine, execution_id: int, message: str = "hello") -> None:
    with engine.begin() as connection:
        connection.execute(insert(logs).values(execution_id=execution_id, level="info", message=message))


def count_logs(engine: Engine) -> int:
    with engine.connect() as connection:
        return len(connection.execute(select(logs.c.id)).all())


def hour_floor(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def minute_floor(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def by_status(rows: Sequence[Execution]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    return counts


def ago(engine: Engine, **delta: float) -> datetime:
    return now_of(engine) - timedelta(**delta)


def settled_minute(engine: Engine) -> datetime:
    """The start of the database clock's current minute, once at least 5 s of it have passed (waiting up to
    5 s): a slot that is due while the one-minute slot after it is not. (``minute_floor(ago(seconds=5))``
    taken in a minute's first 5 s is the minute before, and a "1m" schedule then has two slots due.)"""
    now = now_of(engine)
    if now.second < 5:
        time.sleep(5 - now.second - now.microsecond / 1_000_000 + 0.05)
        now = now_of(engine)
    return minute_floor(now)
