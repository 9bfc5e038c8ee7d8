"""SQL of the audit trail (``task_audit``): one row per change to a task, in the change's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Connection, insert, or_, select

from scheduler.records import AuditRecord
from scheduler.storage.audit_chain import append_sqlite
from scheduler.storage.bulk import BULK_MIN_ROWS, insert_json_rows
from scheduler.storage.mapping import audit_from_row
from scheduler.storage.tables import audit

# Records of scheduler.records.DEFERRED: imported where they are built, so importing this module does not
# define them (the read verbs never do).
if TYPE_CHECKING:
    from scheduler.records import AuditEntry


def insert_audit(connection: Connection, records: Sequence[AuditRecord], *, actor: str, at: datetime) -> None:
    """Append one audit row per record, all by ``actor`` (the declared label) at ``at``, at the head of the
    hash chain (:mod:`scheduler.storage.audit_chain`), with the identity of the database writer."""
    if not records:
        return
    rows = [
        {
            "at": at,
            "actor": actor[:200],
            "action": record.action,
            "task_id": record.task_id,
            "task_name": record.task_name,
            "before": record.before,
            "after": record.after,
        }
        for record in records
    ]
    if connection.dialect.name == "sqlite":
        append_sqlite(connection, rows)
        return
    # PostgreSQL: the insert triggers of migration 0002 stamp the database identity and chain the rows. No
    # RETURNING of the new id (inline()): the planner and worker roles may append audit rows but not read
    # them (deploy/sql/roles.sql), and RETURNING needs SELECT: a one-row insert would be refused.
    if len(rows) >= BULK_MIN_ROWS:
        insert_json_rows(connection, audit, rows)  # one statement; the triggers stamp and chain each row
        return
    connection.execute(insert(audit).inline(), rows)


def list_audit(
    connection: Connection, *, task_id: int | None = None, task_name: str | None = None, limit: int = 50
) -> list[AuditEntry]:
    """Newest first; only rows of ``task_id`` or ``task_name`` when given (a deleted task keeps both)."""
    query = select(audit)
    conditions = []
    if task_id is not None:
        conditions.append(audit.c.task_id == task_id)
    if task_name is not None:
        conditions.append(audit.c.task_name == task_name)
    if conditions:
        query = query.where(or_(*conditions))
    query = query.order_by(audit.c.id.desc()).limit(limit)
    return [audit_from_row(row) for row in connection.execute(query)]
