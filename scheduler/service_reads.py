"""The read side of :class:`scheduler.service.SchedulerService`: tasks, history, logs, audit, runs, stats.

Reads never write and emit nothing. A task reference is its id or its name.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine

from scheduler.errors import ExecutionNotFound, TaskNotFound
from scheduler.records import AuditEntry, Execution, ListedTask, LogLine, NextRun, Task, TaskStats
from scheduler.rules import timing
from scheduler.rules.fields import (
    check_count,
    check_limit,
    check_status,
    validate_instant,
    validate_timezone_name,
)
from scheduler.storage import audit as audit_sql
from scheduler.storage import history as history_sql
from scheduler.storage import stats as stats_sql
from scheduler.storage import tasks as tasks_sql
from scheduler.storage.clock import db_now
from scheduler.storage.errors import translate_db_errors
from scheduler.storage.tables import storable_id

TaskRef = int | str


def _listed(task: Task, outcome: str | None) -> ListedTask:
    upcoming = timing.upcoming_runs(task, 1)
    fields = asdict(task) | {"next_run_at": upcoming[0] if upcoming else None}
    return ListedTask(**fields, last_outcome=outcome)


class ServiceReads:
    """Queries over an engine; :class:`~scheduler.service.SchedulerService` adds the mutations."""

    engine: Engine

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with translate_db_errors(), self.engine.connect() as connection:
            yield connection

    def get_task(self, ref: TaskRef) -> Task:
        """The task with this id or name; :class:`~scheduler.errors.TaskNotFound` otherwise."""
        with self._read() as connection:
            return tasks_sql.get_task(connection, ref)

    def similar_task_names(self, name: str, *, limit: int = 3) -> list[str]:
        """Up to ``limit`` existing task names closest to ``name`` (difflib's ratio >= 0.6), best first."""
        with self._read() as connection:
            names = tasks_sql.task_names(connection)
        return difflib.get_close_matches(name.strip(), names, n=limit)

    def list_tasks(self, *, status: str | None = None, limit: int | None = None) -> list[ListedTask]:
        """Tasks by id, optionally of one status (active, paused, completed, failed), at most ``limit``;
        each with its last outcome, and the next run :meth:`next_runs` would show first (None when paused)."""
        status = check_status("status", status, task=True)
        limit = None if limit is None else check_limit(limit)
        with self._read() as connection:
            rows = tasks_sql.list_tasks(connection, status=status, limit=limit)
        return [_listed(task, outcome) for task, outcome in rows]

    def count_tasks(self, *, status: str | None = None) -> int:
        """How many tasks there are, optionally of one status."""
        status = check_status("status", status, task=True)
        with self._read() as connection:
            return tasks_sql.count_tasks(connection, status=status)

    def get_execution(self, execution_id: int) -> Execution:
        """One execution; :class:`~scheduler.errors.ExecutionNotFound` otherwise."""
        with self._read() as connection:
            execution = history_sql.find_execution(connection, execution_id)
        if execution is None:
            raise ExecutionNotFound(execution_id)
        return execution

    def history(
        self, *, task: TaskRef | None = None, status: str | None = None, limit: int = 50
    ) -> list[Execution]:
        """Executions newest first, optionally of one task and/or one status.

        ``task`` may name a deleted task, by its id or the name its executions bear (they keep it);
        :class:`~scheduler.errors.TaskNotFound` when no task, live or deleted, ever had this reference.
        """
        status = check_status("status", status, task=False)
        limit = check_limit(limit)
        with self._read() as connection:
            if task is None:
                return history_sql.list_executions(connection, status=status, limit=limit)
            found = tasks_sql.find_task(connection, task)
            if found is not None:
                return history_sql.list_executions(connection, task_id=found.id, status=status, limit=limit)
            names = self._deleted_task_names(connection, task)
            return history_sql.list_executions(
                connection, deleted_task_names=names, status=status, limit=limit
            )

    @staticmethod
    def _deleted_task_names(connection: Connection, ref: TaskRef) -> set[str]:
        """The names the executions of deleted task ``ref`` bear; TaskNotFound when no task had ``ref``."""
        names: set[str] = set()
        if isinstance(ref, int) and storable_id(ref):
            names = history_sql.audited_task_names(connection, task_id=ref)
        elif isinstance(ref, str) and (name := tasks_sql.stored_name(ref)) is not None:
            orphans = history_sql.list_executions(connection, deleted_task_names=[name], limit=1)
            names = {name} if orphans else history_sql.audited_task_names(connection, name=name)
        if not names:
            raise TaskNotFound(ref if isinstance(ref, int | str) else repr(ref))
        return names

    def logs(self, execution_id: int) -> list[LogLine]:
        """The execution's log lines in order; :class:`~scheduler.errors.ExecutionNotFound` if unknown."""
        with self._read() as connection:
            if history_sql.find_execution(connection, execution_id) is None:
                raise ExecutionNotFound(execution_id)
            return history_sql.list_logs(connection, execution_id)

    def audit(self, *, task: TaskRef | None = None, limit: int = 50) -> list[AuditEntry]:
        """Audit entries newest first; ``task`` may name a deleted task (by its id or last name)."""
        limit = check_limit(limit)
        with self._read() as connection:
            if task is None:
                return audit_sql.list_audit(connection, limit=limit)
            found = tasks_sql.find_task(connection, task)
            if found is not None:
                return audit_sql.list_audit(connection, task_id=found.id, limit=limit)
            if isinstance(task, int):
                return audit_sql.list_audit(connection, task_id=task, limit=limit)
            return audit_sql.list_audit(connection, task_name=task.strip(), limit=limit)

    def next_runs(
        self, *, task: TaskRef | None = None, count: int = 5, after: datetime | None = None
    ) -> list[NextRun]:
        """The next ``count`` fire times of one task, or the ``count`` soonest over all active tasks.

        Without ``after`` the list starts at each task's ``next_run_at`` (an overdue slot included); with it,
        only fire times strictly after ``after``. Paused, completed and manual tasks have none.
        """
        count = check_count(count)
        after = validate_instant("after", after)  # aware, in UTC (SQLite compares UTC text)
        with self._read() as connection:
            if task is not None:
                candidates = [tasks_sql.get_task(connection, task)]
            else:
                candidates = tasks_sql.soonest_tasks(connection, count, after=after)
                if after is not None:  # tasks whose next run is before `after` may still fire after it
                    candidates += tasks_sql.tasks_due_by(connection, after)
        runs = [
            NextRun(task_id=item.id, task_name=item.name, at=at)
            for item in candidates
            for at in timing.upcoming_runs(item, count, after=after)
        ]
        return sorted(runs, key=lambda run: (run.at, run.task_id))[:count]

    def get_task_stats(self, task: TaskRef | None = None) -> TaskStats:
        """Statistics of one task's executions or of all (see :mod:`scheduler.storage.stats`)."""
        with self._read() as connection:
            task_id = None if task is None else tasks_sql.get_task(connection, task).id
            return stats_sql.task_stats(connection, task_id=task_id, now=db_now(connection))

    def validate_schedule(
        self, schedule: str, *, timezone: str = "UTC", count: int = 5, after: datetime | None = None
    ) -> list[datetime]:
        """The first ``count`` fire times of ``schedule``: from the first run a new task would get, or after
        ``after`` when given (see :func:`scheduler.rules.timing.preview_schedule`; host clock).

        Raises what ``create_task`` raises for the same schedule (:class:`~scheduler.errors.InvalidSchedule`
        for an instant in the past too, :class:`~scheduler.errors.InvalidTimezone`); needs no database.
        """
        count = check_count(count)
        preview = timing.preview_schedule(
            schedule,
            timezone=validate_timezone_name(timezone),
            now=datetime.now(UTC),
            count=count,
            after=validate_instant("after", after),
        )
        return preview.fire_times
