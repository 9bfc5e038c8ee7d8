"""The audit trail's hash chain: how a row is hashed, appending on SQLite, verifying, and pruning.

Each ``task_audit`` row carries ``row_hash``, the SHA-256 of the row's content and of ``prev_hash``, the
``row_hash`` of the row before it in id order (the first row of a database follows :data:`GENESIS`). Editing
a row breaks its own hash; deleting one breaks the link of the next. On PostgreSQL the database computes the
chain in the insert trigger of migration 0002 (a client cannot forge it) and serializes writers on an
advisory lock; on SQLite this module computes it inside the writer's ``BEGIN IMMEDIATE`` transaction.

Pruning (the ``auditRetentionDays`` setting) removes a prefix of the chain and first appends a
``checkpoint`` row that records the hash of the last pruned row, so the oldest row kept still links to
something the chain itself vouches for.

The payload format (:func:`row_hash`, ``v1``) is frozen: migration 0002 backfills with it and the trigger
(``scheduler_audit_chain``) implements it in SQL; a new format needs a new name and a migration.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import socket
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Text, cast, delete, func, insert, select

from scheduler.records import as_utc
from scheduler.storage.clock import db_now
from scheduler.storage.tables import audit

# Records of scheduler.records.DEFERRED: imported where they are built, so importing this module does not
# define them (the read verbs never do).
if TYPE_CHECKING:
    from scheduler.records import AuditVerdict

GENESIS = "0" * 64
FORMAT = "v1"
CHECKPOINT = "checkpoint"  # the action of the row a prune appends
# The chain's columns as hashed: the JSON columns as their stored text (jsonb's canonical text on PostgreSQL).
HASHED_COLUMNS = (
    audit.c.id,
    audit.c.prev_hash,
    audit.c.row_hash,
    audit.c.at,
    audit.c.actor,
    audit.c.action,
    audit.c.task_id,
    audit.c.task_name,
    cast(audit.c.before, Text).label("before_text"),
    cast(audit.c.after, Text).label("after_text"),
    audit.c.db_user,
    audit.c.db_role,
    audit.c.db_host,
)


def _field(value: str | None) -> str:
    """One field of the payload: ``~`` for NULL, else its length in characters, ``:``, and the text."""
    return "~" if value is None else f"{len(value)}:{value}"


def at_text(at: datetime) -> str:
    """The payload's time: UTC, microseconds (PostgreSQL: ``to_char(at AT TIME ZONE 'UTC', ...US)``)."""
    utc = as_utc(at)
    assert utc is not None
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond:06d}"


def row_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    """The hash of a row (a mapping of :data:`HASHED_COLUMNS`' names) that follows ``prev_hash``."""
    task_id = row["task_id"]
    parts = (
        prev_hash,
        str(row["id"]),
        at_text(row["at"]),
        row["actor"],
        row["action"],
        None if task_id is None else str(task_id),
        row["task_name"],
        row["before_text"],
        row["after_text"],
        row["db_user"],
        row["db_role"],
        row["db_host"],
    )
    payload = FORMAT + "".join(_field(part) for part in parts)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@cache
def local_identity() -> tuple[str, str]:
    """(OS user, host) of this process: SQLite's writer identity (the effective uid, not ``$USER``)."""
    try:
        user = pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a uid without a passwd entry (containers)
        user = f"uid {os.geteuid()}"
    return user, socket.gethostname()


def append_sqlite(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert audit rows (columns ``at`` .. ``after``) at the head of the chain, hashed here.

    The caller holds SQLite's write lock (``BEGIN IMMEDIATE``), so the head read here stays the head. Ids are
    given explicitly (head + 1, ...), so chain order is id order. The JSON columns are hashed as the text
    their type's bind processor stores, which is what :func:`verify` reads back.
    """
    head = connection.execute(
        select(audit.c.id, audit.c.row_hash).order_by(audit.c.id.desc()).limit(1)
    ).first()
    next_id, prev = (1, GENESIS) if head is None else (int(head.id) + 1, str(head.row_hash))
    user, host = local_identity()
    dialect = connection.dialect
    as_text = {
        name: audit.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in ("before", "after")
    }
    complete = []
    for offset, row in enumerate(rows):
        full = {**row, "id": next_id + offset, "at": as_utc(row["at"])}
        full.update(db_user=user, db_role=None, db_host=host, prev_hash=prev)
        texts = {
            f"{name}_text": convert(row[name]) for name, convert in as_text.items() if convert is not None
        }
        full["row_hash"] = prev = row_hash(prev, {**full, **texts})
        complete.append(full)
    connection.execute(insert(audit), complete)


def _checkpoint_anchor(connection: Connection) -> str:
    """What the oldest row must follow: the newest checkpoint's pruned hash, else :data:`GENESIS`."""
    after = connection.execute(
        select(audit.c.after).where(audit.c.action == CHECKPOINT).order_by(audit.c.id.desc()).limit(1)
    ).scalar_one_or_none()
    if isinstance(after, dict) and isinstance(after.get("pruned_through_hash"), str):
        return str(after["pruned_through_hash"])
    return GENESIS


def _broken(rows: int, row_id: int, problem: str) -> AuditVerdict:
    from scheduler.records import AuditVerdict

    return AuditVerdict(
        intact=False, rows=rows, head_id=None, head_hash=None, broken_at=row_id, problem=problem
    )


def verify(connection: Connection, *, batch: int = 2000) -> AuditVerdict:
    """Walk the chain in id order and report the first row that breaks it (see :class:`AuditVerdict`).

    On PostgreSQL in one ``REPEATABLE READ`` snapshot (call it before the connection's first statement): a
    prune committed between reading the checkpoint and walking the rows must not look like a break.
    """
    from scheduler.records import AuditVerdict

    if connection.dialect.name == "postgresql" and not connection.in_transaction():
        connection.execution_options(isolation_level="REPEATABLE READ")
    expected = _checkpoint_anchor(connection)
    previous_id: int | None = None
    count = 0
    last_hash: str | None = None
    query = select(*HASHED_COLUMNS).order_by(audit.c.id)
    rows: Iterable[Any] = connection.execution_options(yield_per=batch).execute(query)
    for row in rows:
        values = row._mapping
        row_id = int(values["id"])
        count += 1
        if values["prev_hash"] != expected:
            if previous_id is None:
                problem = "the chain does not start here: rows before it were deleted without a checkpoint"
            else:
                problem = f"it does not follow row {previous_id}: a row between them was deleted or replaced"
            return _broken(count, row_id, problem)
        if row_hash(expected, values) != values["row_hash"]:
            return _broken(count, row_id, "its content does not match its hash: the row was changed")
        expected = last_hash = str(values["row_hash"])
        previous_id = row_id
    return AuditVerdict(
        intact=True, rows=count, head_id=previous_id, head_hash=last_hash, broken_at=None, problem=None
    )


def prune(connection: Connection, *, retention_days: int, limit: int, actor: str) -> int:
    """Delete up to ``limit`` of the oldest audit rows, a prefix of the chain whose rows are all older than
    ``retention_days`` days (database clock); a ``checkpoint`` row is appended first. Returns how many went.

    PostgreSQL: the ``scheduler_prune_audit`` function of migration 0002 does it as the table's owner (no
    role may delete audit rows itself) and computes the cutoff from its own clock. SQLite: here, inside the
    caller's write transaction.
    """
    if connection.dialect.name == "postgresql":
        pruned = connection.execute(select(func.scheduler_prune_audit(retention_days, limit, actor)))
        return int(pruned.scalar_one())
    cutoff = db_now(connection) - timedelta(days=retention_days)
    first_kept = connection.execute(select(func.min(audit.c.id)).where(audit.c.at >= cutoff)).scalar()
    prefix = select(audit.c.id, audit.c.row_hash)
    if first_kept is not None:
        prefix = prefix.where(audit.c.id < first_kept)
    ids = list(connection.execute(prefix.order_by(audit.c.id).limit(limit)))
    if not ids:
        return 0
    last = ids[-1]
    after = {
        "pruned_rows": len(ids),
        "pruned_through_id": int(last.id),
        "pruned_through_hash": str(last.row_hash),
        "retention_days": retention_days,
    }
    row = {"at": db_now(connection), "actor": actor[:200], "action": CHECKPOINT}
    append_sqlite(connection, [{**row, "task_id": None, "task_name": None, "before": None, "after": after}])
    connection.execute(delete(audit).where(audit.c.id <= last.id))
    return len(ids)
