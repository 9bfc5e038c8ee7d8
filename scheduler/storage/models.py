"""ORM classes over the Core tables of :mod:`scheduler.storage.tables`, which declare the schema.

For Alembic (``Base.metadata`` is the tables' metadata) and for tests that like mapped classes; the
scheduler's own SQL uses the Core tables, so nothing at run time imports the ORM.
"""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase

from scheduler.storage.tables import (
    NAMING,
    Id,
    Json,
    Timestamp,
    metadata,
    scheduled_tasks,
    scheduler_leases,
    task_audit,
    task_executions,
    task_logs,
)

__all__ = [
    "NAMING",
    "AuditRow",
    "Base",
    "ExecutionRow",
    "Id",
    "Json",
    "LeaseRow",
    "LogRow",
    "TaskRow",
    "Timestamp",
]


class Base(DeclarativeBase):
    metadata = metadata


class TaskRow(Base):
    """A task definition. ``next_run_at`` is the next slot the planner will dispatch (NULL: never due)."""

    __table__ = scheduled_tasks


class ExecutionRow(Base):
    """One run of a task for one slot. ``task_id`` goes NULL when the task is deleted; history stays."""

    __table__ = task_executions


class LogRow(Base):
    """A log line captured from a command while it ran."""

    __table__ = task_logs


class AuditRow(Base):
    """Who changed which task, how, with the definition before and after (secrets redacted)."""

    __table__ = task_audit


class LeaseRow(Base):
    """A leadership lease: the holder may act for ``term`` until ``expires_at`` (database clock)."""

    __table__ = scheduler_leases
