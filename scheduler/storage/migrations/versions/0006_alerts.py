"""alerts: per-task rules, incidents, the delivery outbox, silences

Revision ID: 0006_alerts
Revises: 0005_run_data_backfill
Create Date: 2026-12-07

See docs/alerts.md and the tables' comments in scheduler/storage/tables.py.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006_alerts"
down_revision = "0005_run_data_backfill"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "task_alert_rules",
        sa.Column("task_id", Id, nullable=False),
        sa.Column("on_failure", sa.Integer()),
        sa.Column("late_ms", sa.BigInteger()),
        sa.Column("missing_ms", sa.BigInteger()),
        sa.Column("long_ms", sa.BigInteger()),
        sa.Column("recovered", sa.Boolean()),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["scheduled_tasks.id"],
            name="fk_task_alert_rules_task_id_scheduled_tasks",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", name="pk_task_alert_rules"),
    )
    op.create_table(
        "alert_incidents",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("task_id", sa.BigInteger()),
        sa.Column("task_name", sa.String(200), nullable=False),
        sa.Column("condition", sa.String(32), nullable=False),
        sa.Column("open_key", sa.String(64)),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("silenced", sa.Boolean(), nullable=False),
        sa.Column("opened_at", Timestamp, nullable=False),
        sa.Column("notified_at", Timestamp),
        sa.Column("resolved_at", Timestamp),
        sa.PrimaryKeyConstraint("id", name="pk_alert_incidents"),
        sa.UniqueConstraint("open_key", name="uq_alert_incidents_open_key"),
    )
    op.create_index("ix_alert_incidents_opened_at", "alert_incidents", ["opened_at"])
    op.create_table(
        "alert_deliveries",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("incident_id", Id),
        sa.Column("channel", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("payload", Json, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", Timestamp, nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("sent_at", Timestamp),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["alert_incidents.id"],
            name="fk_alert_deliveries_incident_id_alert_incidents",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_alert_deliveries"),
    )
    op.create_index("ix_alert_deliveries_incident_id", "alert_deliveries", ["incident_id"])
    op.create_index(
        "ix_alert_deliveries_status_next_attempt_at", "alert_deliveries", ["status", "next_attempt_at"]
    )
    op.create_table(
        "alert_silences",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("task_id", sa.BigInteger(), nullable=False),
        sa.Column("task_name", sa.String(200), nullable=False),
        sa.Column("starts_at", Timestamp, nullable=False),
        sa.Column("ends_at", Timestamp, nullable=False),
        sa.Column("note", sa.Text()),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_silences"),
    )
    op.create_index("ix_alert_silences_task_id", "alert_silences", ["task_id"])


def downgrade() -> None:
    op.drop_table("alert_silences")
    op.drop_table("alert_deliveries")
    op.drop_table("alert_incidents")
    op.drop_table("task_alert_rules")
