"""per-run data, backfills, timed pauses

Revision ID: 0005_run_data_backfill
Revises: 0004_tasks_as_code
Create Date: 2026-12-07

``task_executions`` gains ``data`` (per-run data, merged over the task's when it runs) and ``backfill_id``
(the backfill that created it); ``scheduled_tasks`` gains ``paused_until`` (a timed pause the planner
lifts); the new table ``task_backfills`` records each backfill. Only nullable columns are added: existing rows
need no rewrite.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005_run_data_backfill"
down_revision = "0004_tasks_as_code"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.add_column("scheduled_tasks", sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        op.f("ix_scheduled_tasks_paused_until"), "scheduled_tasks", ["paused_until"], unique=False
    )
    op.add_column("task_executions", sa.Column("data", JSON, nullable=True))
    op.add_column("task_executions", sa.Column("backfill_id", sa.BigInteger(), nullable=True))
    op.create_index(
        op.f("ix_task_executions_backfill_id_status"),
        "task_executions",
        ["backfill_id", "status"],
        unique=False,
    )
    op.create_table(
        "task_backfills",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("task_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("task_name", sa.String(length=200), nullable=False),
        sa.Column("range_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("range_to", sa.DateTime(timezone=True), nullable=False),
        sa.Column("max_parallel", sa.Integer(), nullable=False),
        sa.Column("data", JSON, nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("slots", sa.Integer(), nullable=False),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["scheduled_tasks.id"],
            name=op.f("fk_task_backfills_task_id_scheduled_tasks"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_backfills")),
    )
    op.create_index(op.f("ix_task_backfills_status"), "task_backfills", ["status"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_task_backfills_status"), table_name="task_backfills")
    op.drop_table("task_backfills")
    with op.batch_alter_table("task_executions") as batch:
        batch.drop_index(batch.f("ix_task_executions_backfill_id_status"))
        batch.drop_column("backfill_id")
        batch.drop_column("data")
    with op.batch_alter_table("scheduled_tasks") as batch:
        batch.drop_index(batch.f("ix_scheduled_tasks_paused_until"))
        batch.drop_column("paused_until")
