"""Rows -> frozen records. Shared by every SQL module (tasks, history, the planner's and the worker's).

Each function accepts a SQLAlchemy ``Row``, a ``RowMapping``/dict, or an ORM object with column attributes.
Datetimes come back aware in UTC whatever the database (SQLite returns naive UTC).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from scheduler.records import AuditEntry, Execution, LogLine, Task, as_utc


def _columns(row: object) -> Mapping[str, Any]:
    mapping = getattr(row, "_mapping", None)
    if isinstance(mapping, Mapping):
        return mapping
    if isinstance(row, Mapping):
        return row
    return {key: value for key, value in vars(row).items() if not key.startswith("_")}


def _time(value: Any) -> datetime | None:
    return as_utc(value) if isinstance(value, datetime) else None


def _required_time(value: Any, column: str) -> datetime:
    moment = _time(value)
    if moment is None:
        raise ValueError(f"column {column} is NULL or not a datetime: {value!r}")
    return moment


def task_from_row(row: object) -> Task:
    """A :class:`Task` from a ``scheduled_tasks`` row."""
    c = _columns(row)
    return Task(
        id=int(c["id"]),
        name=c["name"],
        command=c["command"],
        schedule=c["schedule"],
        schedule_kind=c["schedule_kind"],
        timezone=c["timezone"],
        data=dict(c["data"] or {}),
        status=c["status"],
        status_reason=c["status_reason"],
        queue=c["queue"],
        retries=int(c["retries"]),
        retry_delay_ms=int(c["retry_delay_ms"]),
        retry_backoff=float(c["retry_backoff"]),
        timeout_ms=int(c["timeout_ms"]),
        overlap_policy=c["overlap_policy"],
        misfire_policy=c["misfire_policy"],
        misfire_grace_ms=None if c["misfire_grace_ms"] is None else int(c["misfire_grace_ms"]),
        auto_pause_after=None if c["auto_pause_after"] is None else int(c["auto_pause_after"]),
        start_at=_time(c["start_at"]),
        end_at=_time(c["end_at"]),
        max_runs=None if c["max_runs"] is None else int(c["max_runs"]),
        anchor_at=_required_time(c["anchor_at"], "anchor_at"),
        next_run_at=_time(c["next_run_at"]),
        last_run_at=_time(c["last_run_at"]),
        run_count=int(c["run_count"] or 0),
        consecutive_failures=int(c["consecutive_failures"] or 0),
        created_at=_required_time(c["created_at"], "created_at"),
        updated_at=_required_time(c["updated_at"], "updated_at"),
    )


TASK_FIELDS = (
    "id", "name", "command", "schedule", "schedule_kind", "timezone", "data", "status", "status_reason",
    "queue", "retries", "retry_delay_ms", "retry_backoff", "timeout_ms", "overlap_policy", "misfire_policy",
    "misfire_grace_ms", "auto_pause_after", "start_at", "end_at", "max_runs", "anchor_at", "next_run_at",
    "last_run_at", "run_count", "consecutive_failures", "created_at", "updated_at",
)  # fmt: skip


def tasks_from_rows(keys: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[Task]:
    """:func:`task_from_row` for many rows of every task column (``keys``: the result's column names).

    With the columns in :data:`TASK_FIELDS` order (``select(tasks)``), by position: the planner maps up to a
    thousand rows per batch and looking each value up by name cost as much as planning them. Any other
    order falls back to :func:`task_from_row`.
    """
    if tuple(keys) != TASK_FIELDS:
        return [task_from_row(dict(zip(keys, row, strict=True))) for row in rows]
    tasks = []
    for (
        id_, name, command, schedule, schedule_kind, timezone, data, status, status_reason, queue, retries,
        retry_delay_ms, retry_backoff, timeout_ms, overlap_policy, misfire_policy, misfire_grace_ms,
        auto_pause_after, start_at, end_at, max_runs, anchor_at, next_run_at, last_run_at, run_count,
        consecutive_failures, created_at, updated_at,
    ) in rows:  # fmt: skip
        tasks.append(
            Task(
                id=int(id_),
                name=name,
                command=command,
                schedule=schedule,
                schedule_kind=schedule_kind,
                timezone=timezone,
                data=dict(data or {}),
                status=status,
                status_reason=status_reason,
                queue=queue,
                retries=int(retries),
                retry_delay_ms=int(retry_delay_ms),
                retry_backoff=float(retry_backoff),
                timeout_ms=int(timeout_ms),
                overlap_policy=overlap_policy,
                misfire_policy=misfire_policy,
                misfire_grace_ms=None if misfire_grace_ms is None else int(misfire_grace_ms),
                auto_pause_after=None if auto_pause_after is None else int(auto_pause_after),
                start_at=_time(start_at),
                end_at=_time(end_at),
                max_runs=None if max_runs is None else int(max_runs),
                anchor_at=_required_time(anchor_at, "anchor_at"),
                next_run_at=_time(next_run_at),
                last_run_at=_time(last_run_at),
                run_count=int(run_count or 0),
                consecutive_failures=int(consecutive_failures or 0),
                created_at=_required_time(created_at, "created_at"),
                updated_at=_required_time(updated_at, "updated_at"),
            )
        )
    return tasks


def execution_from_row(row: object) -> Execution:
    """An :class:`Execution` from a ``task_executions`` row."""
    c = _columns(row)
    return Execution(
        id=int(c["id"]),
        task_id=None if c["task_id"] is None else int(c["task_id"]),
        task_name=c["task_name"],
        command=c["command"],
        scheduled_for=_required_time(c["scheduled_for"], "scheduled_for"),
        trigger=c["trigger"],
        status=c["status"],
        reason=c["reason"],
        attempt=int(c["attempt"]),
        max_attempts=int(c["max_attempts"]),
        queue=c["queue"],
        worker=c["worker"],
        created_at=_required_time(c["created_at"], "created_at"),
        enqueued_at=_time(c["enqueued_at"]),
        started_at=_time(c["started_at"]),
        heartbeat_at=_time(c["heartbeat_at"]),
        finished_at=_time(c["finished_at"]),
        duration_ms=None if c["duration_ms"] is None else int(c["duration_ms"]),
        result=c["result"],
        error=c["error"],
    )


def log_from_row(row: object) -> LogLine:
    """A :class:`LogLine` from a ``task_logs`` row."""
    c = _columns(row)
    return LogLine(
        execution_id=int(c["execution_id"]),
        attempt=int(c["attempt"]),
        at=_required_time(c["at"], "at"),
        level=c["level"],
        message=c["message"],
    )


def audit_from_row(row: object) -> AuditEntry:
    """An :class:`AuditEntry` from a ``task_audit`` row."""
    c = _columns(row)
    return AuditEntry(
        id=int(c["id"]),
        at=_required_time(c["at"], "at"),
        actor=c["actor"],
        action=c["action"],
        task_id=None if c["task_id"] is None else int(c["task_id"]),
        task_name=c["task_name"],
        before=c["before"],
        after=c["after"],
    )
