"""SQLAlchemy models: the declared schema. Alembic migrations must produce exactly this (a test checks)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT with a sequence (bigserial).
Id = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")
Timestamp = DateTime(timezone=True)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class TaskRow(Base):
    """A task definition. ``next_run_at`` is the next slot the planner will dispatch (NULL: never due)."""

    __tablename__ = "scheduled_tasks"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    command: Mapped[str] = mapped_column(String(200))
    schedule: Mapped[str] = mapped_column(String(200))
    schedule_kind: Mapped[str] = mapped_column(String(16))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    data: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    status: Mapped[str] = mapped_column(String(16), default="active")
    status_reason: Mapped[str | None] = mapped_column(Text)
    queue: Mapped[str] = mapped_column(String(100), default="default")
    retries: Mapped[int] = mapped_column(Integer)
    retry_delay_ms: Mapped[int] = mapped_column(BigInteger)
    retry_backoff: Mapped[float] = mapped_column(Float)
    timeout_ms: Mapped[int] = mapped_column(BigInteger)
    overlap_policy: Mapped[str] = mapped_column(String(16))
    misfire_policy: Mapped[str] = mapped_column(String(16))
    misfire_grace_ms: Mapped[int | None] = mapped_column(BigInteger)
    auto_pause_after: Mapped[int | None] = mapped_column(Integer)
    start_at: Mapped[datetime | None] = mapped_column(Timestamp)
    end_at: Mapped[datetime | None] = mapped_column(Timestamp)
    max_runs: Mapped[int | None] = mapped_column(Integer)
    anchor_at: Mapped[datetime] = mapped_column(Timestamp)
    next_run_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_run_at: Mapped[datetime | None] = mapped_column(Timestamp)
    run_count: Mapped[int] = mapped_column(Integer, default=0)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())

    __table_args__ = (
        # "Due tasks" is a range scan: status = 'active' AND next_run_at <= now ORDER BY next_run_at.
        Index("ix_scheduled_tasks_due", "status", "next_run_at"),
    )


class ExecutionRow(Base):
    """One run of a task for one slot. ``task_id`` goes NULL when the task is deleted; history stays."""

    __tablename__ = "task_executions"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    task_id: Mapped[int | None] = mapped_column(ForeignKey("scheduled_tasks.id", ondelete="SET NULL"))
    task_name: Mapped[str] = mapped_column(String(200))
    command: Mapped[str] = mapped_column(String(200))
    scheduled_for: Mapped[datetime] = mapped_column(Timestamp)
    trigger: Mapped[str] = mapped_column(String(16), default="schedule")
    status: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str | None] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    max_attempts: Mapped[int] = mapped_column(Integer, default=1)
    queue: Mapped[str] = mapped_column(String(100), default="default")
    worker: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    enqueued_at: Mapped[datetime | None] = mapped_column(Timestamp)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp)
    heartbeat_at: Mapped[datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    result: Mapped[Any | None] = mapped_column(Json)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        # Exactly one execution per (task, slot): the planner inserts with ON CONFLICT DO NOTHING.
        UniqueConstraint("task_id", "scheduled_for"),
        Index("ix_task_executions_status_created_at", "status", "created_at"),
        Index("ix_task_executions_task_id_id", "task_id", "id"),
        Index("ix_task_executions_finished_at", "finished_at"),
    )


class LogRow(Base):
    """A log line captured from a command while it ran."""

    __tablename__ = "task_logs"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    execution_id: Mapped[int] = mapped_column(
        ForeignKey("task_executions.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    level: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)


class AuditRow(Base):
    """Who changed which task, how, with the definition before and after (secrets redacted)."""

    __tablename__ = "task_audit"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(Timestamp, server_default=func.now())
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(32))
    task_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    task_name: Mapped[str | None] = mapped_column(String(200))
    before: Mapped[dict[str, Any] | None] = mapped_column(Json)
    after: Mapped[dict[str, Any] | None] = mapped_column(Json)


class LeaseRow(Base):
    """A leadership lease: the holder may act for ``term`` until ``expires_at`` (database clock)."""

    __tablename__ = "scheduler_leases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    term: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column(Timestamp)
    renewed_at: Mapped[datetime] = mapped_column(Timestamp)
