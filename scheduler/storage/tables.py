"""The declared schema: the one definition of the tables, as SQLAlchemy Core ``Table`` objects.

Alembic migrations must produce exactly :data:`metadata` (tested; ``migrations/env.py`` compares against it).
Everything that runs SQL uses these tables under their short Python names (``tasks`` is the table
``scheduled_tasks``, ...). Core only: no ORM, so a CLI verb, the planner and the workers never import it
(~0.1 s). Nullability is explicit: ``nullable=False`` unless a column may be NULL.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    func,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine


class JsonDocument(TypeDecorator[Any]):
    """JSON, stored as JSONB on PostgreSQL. The same as ``JSON().with_variant(JSONB(), "postgresql")`` (DDL,
    binding, ``None`` as JSON ``null``, indexing), but the PostgreSQL dialect package is imported when a
    PostgreSQL engine first uses the type, not by importing the tables: an embedded (SQLite) process, such as
    every CLI read on the default set-up, does not pay ~0.02 s for it."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())


# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT with a sequence (bigserial).
Id = BigInteger().with_variant(Integer(), "sqlite")
Json = JsonDocument()
Timestamp = DateTime(timezone=True)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
}

metadata = MetaData(naming_convention=NAMING)
MAX_ID = 2**63 - 1  # ids are positive BIGINTs (SQLite: 64-bit INTEGER)


def storable_id(value: object) -> bool:
    """True when ``value`` could be a row id: an int (not a bool) in 1..2**63-1. Anything else matches no row,
    and must not reach the driver (a larger int overflows it instead of matching nothing)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID


# A task definition. ``next_run_at`` is the next slot the planner will dispatch (NULL: never due).
tasks = Table(
    "scheduled_tasks",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("command", String(200), nullable=False),
    Column("schedule", String(200), nullable=False),
    Column("schedule_kind", String(16), nullable=False),
    Column("timezone", String(64), nullable=False, default="UTC"),
    Column("data", Json, nullable=False, default=dict),
    Column("status", String(16), nullable=False, default="active"),
    Column("status_reason", Text),
    Column("queue", String(100), nullable=False, default="default"),
    Column("retries", Integer, nullable=False),
    Column("retry_delay_ms", BigInteger, nullable=False),
    Column("retry_backoff", Float, nullable=False),
    Column("timeout_ms", BigInteger, nullable=False),
    Column("overlap_policy", String(16), nullable=False),
    Column("misfire_policy", String(16), nullable=False),
    Column("misfire_grace_ms", BigInteger),
    Column("auto_pause_after", Integer),
    Column("start_at", Timestamp),
    Column("end_at", Timestamp),
    Column("max_runs", Integer),
    Column("anchor_at", Timestamp, nullable=False),
    Column("next_run_at", Timestamp),
    Column("last_run_at", Timestamp),
    Column("run_count", Integer, nullable=False, default=0),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("created_at", Timestamp, nullable=False, server_default=func.now()),
    Column("updated_at", Timestamp, nullable=False, server_default=func.now()),
    # A timed pause: the planner resumes the task at this instant (NULL: paused until resumed by hand).
    Column("paused_until", Timestamp),
    # Who owns the task (docs/tasks-as-code.md): a tasks file's source name, "cli" or "api"; ``key`` is its
    # stable key in that file (renames keep the row and its history). Unique per source; NULL keys repeat.
    Column("source", String(200), nullable=False, server_default="cli"),
    Column("key", String(200)),
    Index("uq_scheduled_tasks_source_key", "source", "key", unique=True),
    # Revision 0003: several schedules (every text; NULL with one), jitter, calendars by name (JSON lists).
    Column("schedules", Json),
    Column("jitter_ms", BigInteger),
    Column("exclude", Json),
    Column("only_in", Json),
    # "Due tasks" is a range scan: status = 'active' AND next_run_at <= now ORDER BY next_run_at.
    Index("ix_scheduled_tasks_due", "status", "next_run_at"),
    Index("ix_scheduled_tasks_paused_until", "paused_until"),
)

# One run of a task for one slot. ``task_id`` goes NULL when the task is deleted; history stays.
executions = Table(
    "task_executions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("task_id", ForeignKey("scheduled_tasks.id", ondelete="SET NULL")),
    Column("task_name", String(200), nullable=False),
    Column("command", String(200), nullable=False),
    Column("scheduled_for", Timestamp, nullable=False),
    Column("trigger", String(16), nullable=False, default="schedule"),
    Column("status", String(16), nullable=False, default="pending"),
    Column("reason", String(32)),
    Column("attempt", Integer, nullable=False, default=1),
    Column("max_attempts", Integer, nullable=False, default=1),
    Column("queue", String(100), nullable=False, default="default"),
    Column("worker", String(200)),
    Column("created_at", Timestamp, nullable=False, server_default=func.now()),
    Column("enqueued_at", Timestamp),
    Column("started_at", Timestamp),
    Column("heartbeat_at", Timestamp),
    Column("finished_at", Timestamp),
    Column("duration_ms", BigInteger),
    Column("result", Json),
    Column("error", Text),
    # Per-run data (``run --data``, ``backfill --data``): merged over the task's data when it runs.
    Column("data", Json),
    # The backfill that created this execution (task_backfills.id; no foreign key: backfills are never
    # deleted, and SQLite cannot add one to an existing table).
    Column("backfill_id", BigInteger),
    Column("schedule", String(200)),  # the schedule text that produced the slot (NULL: a manual run)
    # Exactly one execution per (task, slot): the planner inserts with ON CONFLICT DO NOTHING.
    UniqueConstraint("task_id", "scheduled_for"),
    Index("ix_task_executions_status_created_at", "status", "created_at"),
    Index("ix_task_executions_task_id_id", "task_id", "id"),
    Index("ix_task_executions_finished_at", "finished_at"),
    Index("ix_task_executions_backfill_id_status", "backfill_id", "status"),
)

# A backfill: the slots of a past range, run as executions with trigger ``backfill`` that the planner releases
# at most ``max_parallel`` at a time. ``status``: running, completed or cancelled.
backfills = Table(
    "task_backfills",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("task_id", ForeignKey("scheduled_tasks.id", ondelete="SET NULL")),
    Column("task_name", String(200), nullable=False),
    Column("range_from", Timestamp, nullable=False),
    Column("range_to", Timestamp, nullable=False),
    Column("max_parallel", Integer, nullable=False),
    Column("data", Json),
    Column("status", String(16), nullable=False),
    Column("slots", Integer, nullable=False),
    Column("created", Integer, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("created_at", Timestamp, nullable=False, server_default=func.now()),
    Column("finished_at", Timestamp),
    Index("ix_task_backfills_status", "status"),
)

# A log line captured from a command while it ran.
logs = Table(
    "task_logs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column(
        "execution_id",
        ForeignKey("task_executions.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("attempt", Integer, nullable=False, default=1),
    Column("at", Timestamp, nullable=False, server_default=func.now()),
    Column("level", String(16), nullable=False),
    Column("message", Text, nullable=False),
)

# Who changed which task, how, with the definition before and after (secrets redacted). ``actor`` is the
# declared label; ``db_user``/``db_role``/``db_host`` the database identity that wrote the row (PostgreSQL:
# set by the insert trigger of migration 0002). Rows form a hash chain in id order: ``row_hash`` covers the
# row and ``prev_hash``, the hash of the row before it (scheduler.storage.audit_chain). Append-only.
audit = Table(
    "task_audit",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("at", Timestamp, nullable=False, server_default=func.now()),
    Column("actor", String(200), nullable=False),
    Column("action", String(32), nullable=False),
    Column("task_id", BigInteger, index=True),
    Column("task_name", String(200)),
    Column("before", Json),
    Column("after", Json),
    Column("db_user", String(200)),
    Column("db_role", String(200)),
    Column("db_host", String(255)),
    Column("prev_hash", String(64), nullable=False),
    Column("row_hash", String(64), nullable=False),
)

# A named set of days (dates, ranges, weekdays) that tasks exclude or run only in (revision 0003).
calendars = Table(
    "scheduler_calendars",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("days", Json, nullable=False),
    Column("created_at", Timestamp, nullable=False, server_default=func.now()),
    Column("updated_at", Timestamp, nullable=False, server_default=func.now()),
)

# A leadership lease: the holder may act for ``term`` until ``expires_at`` (database clock).
leases = Table(
    "scheduler_leases",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("term", BigInteger, nullable=False),
    Column("expires_at", Timestamp, nullable=False),
    Column("renewed_at", Timestamp, nullable=False),
)

# Alerts (docs/alerts.md). Per-task rules: a NULL column takes the setting's default, 0 (false) turns it off.
alert_rules = Table(
    "task_alert_rules",
    metadata,
    Column("task_id", ForeignKey("scheduled_tasks.id", ondelete="CASCADE"), primary_key=True),
    Column("on_failure", Integer),
    Column("late_ms", BigInteger),
    Column("missing_ms", BigInteger),
    Column("long_ms", BigInteger),
    Column("recovered", Boolean),
)

# One incident per task and condition while it lasts: ``open_key`` is ``<task id>:<condition>`` while open
# and NULL once resolved, so the unique constraint allows one open incident per pair, any number of closed.
# ``task_id`` is no foreign key: an incident outlives its task. ``silenced``: recorded, not sent.
incidents = Table(
    "alert_incidents",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("task_id", BigInteger),
    Column("task_name", String(200), nullable=False),
    Column("condition", String(32), nullable=False),
    Column("open_key", String(64), unique=True),
    Column("detail", Text, nullable=False),
    Column("silenced", Boolean, nullable=False, default=False),
    Column("opened_at", Timestamp, nullable=False),
    Column("notified_at", Timestamp),
    Column("resolved_at", Timestamp),
    Index("ix_alert_incidents_opened_at", "opened_at"),
)

# The delivery outbox: one row per message and channel, sent by the leading planner and retried with backoff
# until ``sent`` or, after the configured attempts, ``failed`` (kept and shown, never dropped).
deliveries = Table(
    "alert_deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("incident_id", ForeignKey("alert_incidents.id", ondelete="CASCADE"), index=True),
    Column("channel", String(100), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("payload", Json, nullable=False),
    Column("status", String(16), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Timestamp, nullable=False),
    Column("last_error", Text),
    Column("created_at", Timestamp, nullable=False),
    Column("sent_at", Timestamp),
    Index("ix_alert_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
)

# A silence: incidents of the task between starts_at and ends_at are recorded but not sent.
silences = Table(
    "alert_silences",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("task_id", BigInteger, nullable=False, index=True),
    Column("task_name", String(200), nullable=False),
    Column("starts_at", Timestamp, nullable=False),
    Column("ends_at", Timestamp, nullable=False),
    Column("note", Text),
    Column("actor", String(200), nullable=False),
)
