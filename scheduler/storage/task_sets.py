"""SQL of tasks as code: the tasks a source owns, the tasks holding given names, the drift since the last
apply (from ``task_audit``), and bulk writes (one statement per kind of change, not per task).

Callers own the transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, bindparam, func, insert, select, update

from scheduler.records import Task
from scheduler.storage.bulk import BULK_MIN_ROWS, insert_json_rows
from scheduler.storage.mapping import audit_from_row, tasks_from_rows
from scheduler.storage.tables import audit, tasks

# Records of scheduler.records.DEFERRED: imported where they are built, so importing this module does not
# define them (the read verbs never do).
if TYPE_CHECKING:
    from scheduler.records import AuditEntry

CHUNK = 500  # names or ids per IN (...) list
APPLY_PREFIX = "apply:"  # audit actions written by an apply: apply:create, apply:update, apply:delete, ...
DRIFT_ACTIONS = ("update", "rollback")  # definition changes by hand or through the API


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _tasks(connection: Connection, query: Any) -> list[Task]:
    result = connection.execute(query)
    return tasks_from_rows(list(result.keys()), result)


def tasks_of_source(
    connection: Connection, source: str | None, *, status: str | None = None, lock: bool = False
) -> list[Task]:
    """The tasks ``source`` owns (None: every task), by id, optionally of one status; ``lock``: FOR UPDATE."""
    query = select(tasks).order_by(tasks.c.id)
    if source is not None:
        query = query.where(tasks.c.source == source)
    if status is not None:
        query = query.where(tasks.c.status == status)
    return _tasks(connection, query.with_for_update() if lock else query)


def tasks_named(connection: Connection, names: Sequence[str], *, other_than: str) -> dict[str, Task]:
    """The tasks of any source but ``other_than`` holding one of ``names``, by name."""
    found: dict[str, Task] = {}
    for chunk in _chunks(list(names)):
        query = select(tasks).where(tasks.c.name.in_(chunk), tasks.c.source != other_than)
        for task in _tasks(connection, query):
            found[task.name] = task
    return found


def drift(connection: Connection, source: str) -> list[AuditEntry]:
    """Audit rows of the source's tasks changing their definition by anything but an apply, newer than
    the task's latest apply row (all of them when it never had one), oldest first."""
    last_apply = (
        select(audit.c.task_id, func.max(audit.c.id).label("last_id"))
        .where(audit.c.action.like(APPLY_PREFIX + "%"))
        .group_by(audit.c.task_id)
        .subquery()
    )
    query = (
        select(audit)
        .join(tasks, tasks.c.id == audit.c.task_id)
        .outerjoin(last_apply, last_apply.c.task_id == audit.c.task_id)
        .where(
            tasks.c.source == source,
            audit.c.action.in_(DRIFT_ACTIONS),
            audit.c.id > func.coalesce(last_apply.c.last_id, 0),
        )
        .order_by(audit.c.id)
    )
    return [audit_from_row(row) for row in connection.execute(query)]


def insert_tasks(connection: Connection, rows: Sequence[Mapping[str, Any]], *, now: datetime) -> list[Task]:
    """Insert validated definitions (each with ``source`` and ``key``) in one executemany; the stored tasks
    in the order given, built from what was inserted and the new ids (mapping 10,000 returned rows back cost
    more than inserting them)."""
    if not rows:
        return []
    stamped = [
        {**row, "run_count": 0, "consecutive_failures": 0, "created_at": now, "updated_at": now}
        for row in rows
    ]
    if connection.dialect.name == "postgresql" and len(stamped) >= BULK_MIN_ROWS:
        by_key = {
            row.key: row.id for row in insert_json_rows(connection, tasks, stamped, returning=("id", "key"))
        }
        ids = [by_key[row["key"]] for row in stamped]  # one source per call: keys are unique
    else:
        statement = insert(tasks).returning(tasks.c.id, sort_by_parameter_order=True)
        ids = list(connection.execute(statement, stamped).scalars())
    fresh: dict[str, Any] = {"status_reason": None, "last_run_at": None}
    return [Task(**row, **fresh, id=task_id) for row, task_id in zip(stamped, ids, strict=True)]


def update_tasks(
    connection: Connection, changes: Sequence[tuple[int, Mapping[str, Any]]], *, now: datetime
) -> list[Task]:
    """Set each task's columns (one executemany per set of changed columns); the tasks after, by id."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for task_id, columns in changes:
        names = tuple(sorted(columns))
        groups.setdefault(names, []).append({"_id": task_id, **{f"_{k}": v for k, v in columns.items()}})
    for names, params in groups.items():
        values: dict[str, Any] = {name: bindparam(f"_{name}") for name in names} | {"updated_at": now}
        statement = update(tasks).where(tasks.c.id == bindparam("_id")).values(values)
        connection.execute(statement, params)
    return tasks_by_ids(connection, [task_id for task_id, _ in changes])


def tasks_by_ids(connection: Connection, ids: Sequence[int]) -> list[Task]:
    found: list[Task] = []
    for chunk in _chunks(list(ids)):
        found += _tasks(connection, select(tasks).where(tasks.c.id.in_(chunk)))
    return sorted(found, key=lambda task: task.id)


def audit_of_task(connection: Connection, task_id: int) -> list[AuditEntry]:
    """Every audit row of one task, oldest first (its versions are numbered from them)."""
    query = select(audit).where(audit.c.task_id == task_id).order_by(audit.c.id)
    return [audit_from_row(row) for row in connection.execute(query)]
