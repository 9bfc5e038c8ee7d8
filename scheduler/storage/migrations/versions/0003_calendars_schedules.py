"""exclusion calendars, several schedules per task, jitter

Revision ID: 0003_calendars_schedules
Revises: 0002
Create Date: 2026-12-07

``scheduler_calendars`` holds named sets of days; ``scheduled_tasks`` gains ``schedules`` (every schedule's
text when a task has several), ``jitter_ms``, ``exclude`` and ``only_in`` (calendar names);
``task_executions`` gains ``schedule`` (the text that produced the slot). Existing rows keep their meaning:
NULL everywhere is one schedule, no jitter, no calendar.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003_calendars_schedules"
down_revision = "0002"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(JSONB(), "postgresql")
TASK_COLUMNS = (("schedules", Json), ("jitter_ms", sa.BigInteger()), ("exclude", Json), ("only_in", Json))


def upgrade() -> None:
    op.create_table(
        "scheduler_calendars",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("days", Json, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("id", name="pk_scheduler_calendars"),
        sa.UniqueConstraint("name", name="uq_scheduler_calendars_name"),
    )
    with op.batch_alter_table("scheduled_tasks") as batch:
        for name, kind in TASK_COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))
    with op.batch_alter_table("task_executions") as batch:
        batch.add_column(sa.Column("schedule", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("task_executions") as batch:
        batch.drop_column("schedule")
    with op.batch_alter_table("scheduled_tasks") as batch:
        for name, _ in reversed(TASK_COLUMNS):
            batch.drop_column(name)
    op.drop_table("scheduler_calendars")
