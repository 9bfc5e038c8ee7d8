"""tasks as code: a task's owner (source) and its stable key in a tasks file

Revision ID: 0004_tasks_as_code
Revises: 0003_calendars_schedules
Create Date: 2026-12-07

``scheduled_tasks`` gains ``source`` (who created and owns the task: a tasks file's source name, ``cli`` or
``api``; existing tasks count as created by hand, ``cli``) and ``key`` (the task's stable key in its file),
unique per source. A unique index rather than a constraint: SQLite adds it without rebuilding the table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_tasks_as_code"
down_revision = "0003_calendars_schedules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "scheduled_tasks", sa.Column("source", sa.String(length=200), server_default="cli", nullable=False)
    )
    op.add_column("scheduled_tasks", sa.Column("key", sa.String(length=200), nullable=True))
    op.create_index("uq_scheduled_tasks_source_key", "scheduled_tasks", ["source", "key"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_scheduled_tasks_source_key", table_name="scheduled_tasks")
    op.drop_column("scheduled_tasks", "key")
    op.drop_column("scheduled_tasks", "source")
