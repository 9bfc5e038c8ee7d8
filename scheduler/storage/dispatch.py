"""The planner's SQL: due tasks, slot inserts, task advances, the pending relay. Callers own the transaction.

Every write here runs inside :func:`~scheduler.storage.transactions.write_transaction`. The contracts that
make planning safe:

- :func:`due_tasks` takes only tasks that are ``active`` with ``next_run_at <= now``, oldest first, through
  the ``(status, next_run_at)`` index; on PostgreSQL the rows are locked ``FOR UPDATE SKIP LOCKED`` so
  concurrent planners split the work; on SQLite the ``BEGIN IMMEDIATE`` of that transaction serialises
  them.
- :func:`insert_executions` inserts with ``ON CONFLICT (task_id, scheduled_for) DO NOTHING`` and returns only
  the rows it inserted: a slot that exists already (a replayed tick, a second planner) is never doubled.
- The relay reads ``pending`` rows oldest first; :func:`mark_queued` moves only rows still ``pending`` (a
  worker may claim a row between the publish and the mark).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import BigInteger, Connection, any_, bindparam, func, select, text, update

from scheduler.records import DueTask
from scheduler.storage.clock import db_now
from scheduler.storage.mapping import due_tasks_from_rows
from scheduler.storage.tables import executions, tasks

# Records of scheduler.records.DEFERRED: imported where they are built, so importing this module does not
# define them (the read verbs never do).
if TYPE_CHECKING:
    from scheduler.records import Dispatch, TaskAdvance

ACTIVE_STATUSES = ("pending", "queued", "running", "retrying")  # an execution that has not finished
IN_FLIGHT_STATUSES = ("queued", "running", "retrying")  # what the concurrency cap counts


def due_tasks(connection: Connection, now: datetime, limit: int) -> list[DueTask]:
    """Up to ``limit`` active tasks with ``next_run_at <= now``, oldest slot first (see the module doc); only
    the columns the planner plans with (:class:`~scheduler.records.DueTask`)."""
    query = (
        select(*(tasks.c[name] for name in DueTask._fields))
        .where(tasks.c.status == "active", tasks.c.next_run_at <= now)
        # next_run_at alone: the index's order (ties in index order). A tie-break on id cannot come from
        # the index, so with many tasks due at one instant every batch sorted all of them (a sequential
        # scan and an on-disk sort per batch of a 100k burst).
        .order_by(tasks.c.next_run_at)
        .limit(limit)
        .with_for_update(skip_locked=True)  # rendered on PostgreSQL only
    )
    return due_tasks_from_rows(connection.execute(query).all())


def active_executions(connection: Connection, task_ids: Sequence[int]) -> dict[int, list[int]]:
    """task id -> ids of its pending, queued, running or retrying executions (for overlap policies)."""
    if not task_ids:
        return {}
    query = select(executions.c.task_id, executions.c.id).where(
        executions.c.status.in_(ACTIVE_STATUSES), executions.c.task_id.in_(task_ids)
    )
    found: dict[int, list[int]] = {}
    for task_id, execution_id in connection.execute(query):
        found.setdefault(int(task_id), []).append(int(execution_id))
    return found


def _insert(connection: Connection) -> Any:
    # Imported here: a process on one database need not load the other's dialect (CLI start-up time).
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(executions)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(executions)


# The columns a planned slot sets (scheduler.planning.batch.execution_row), with their SQL types.
INSERT_COLUMNS = (
    ("task_id", "bigint"),
    ("task_name", "varchar"),
    ("command", "varchar"),
    ("scheduled_for", "timestamptz"),
    ("trigger", "varchar"),
    ("status", "varchar"),
    ("reason", "varchar"),
    ("attempt", "integer"),
    ("max_attempts", "integer"),
    ("queue", "varchar"),
    ("created_at", "timestamptz"),
    ("finished_at", "timestamptz"),
    ("schedule", "varchar"),
)
_INSERT_KEYS = frozenset(name for name, _ in INSERT_COLUMNS)
_INSERTED = ", ".join(name for name, _ in INSERT_COLUMNS)
# One statement whatever the batch size: the rows travel as one JSON document (json_rows).
_INSERT_ROWS = text(
    f"""
    INSERT INTO task_executions ({_INSERTED})
    SELECT {_INSERTED}
    FROM json_to_recordset(CAST(:rows AS json)) AS v({", ".join(f"{n} {t}" for n, t in INSERT_COLUMNS)})
    ON CONFLICT (task_id, scheduled_for) DO NOTHING
    RETURNING id, task_id, status
    """
)


def insert_executions(connection: Connection, rows: Sequence[dict[str, Any]]) -> list[tuple[int, int, str]]:
    """Insert execution rows, skipping slots that exist; return (id, task_id, status) of the inserted ones.

    Each row maps column names of ``task_executions`` to values (``task_id`` and ``scheduled_for`` required).
    PostgreSQL, rows that set no other columns than :data:`INSERT_COLUMNS` (every planned slot but a
    decision carrying a result or an error): one ``INSERT ... SELECT FROM json_to_recordset(rows)``, as
    :func:`advance_tasks` does, instead of an executemany with a ``VALUES`` list per row.
    """
    if not rows:
        return []
    if connection.dialect.name == "postgresql" and all(row.keys() <= _INSERT_KEYS for row in rows):
        inserted = connection.execute(_INSERT_ROWS, {"rows": json_rows(rows)}).all()
        return _inserted(inserted)
    statement = (
        _insert(connection)
        .on_conflict_do_nothing(index_elements=["task_id", "scheduled_for"])
        .returning(executions.c.id, executions.c.task_id, executions.c.status)
    )
    return _inserted(connection.execute(statement, list(rows)).all())


def _inserted(returned: Sequence[Any]) -> list[tuple[int, int, str]]:
    """(id, task_id, status) of each ``RETURNING id, task_id, status`` row, unpacked by position (looking each
    value up by name cost six times as much: 1 ms per batch of 1,000)."""
    return [(int(id_), int(task_id), str(status)) for id_, task_id, status in returned]


def advance_tasks(connection: Connection, advances: Sequence[TaskAdvance]) -> None:
    """Write each task's ``next_run_at``, ``run_count``, ``last_run_at``, ``status`` and ``status_reason``.

    PostgreSQL: one ``UPDATE ... FROM json_to_recordset(rows)`` (an executemany would cost a round trip per
    row);
    SQLite, in process: an executemany.
    """
    if not advances:
        return
    if connection.dialect.name == "postgresql":
        _advance_rows(connection, advances)
        return
    statement = (
        update(tasks)
        .where(tasks.c.id == bindparam("b_id"))
        .values(
            next_run_at=bindparam("b_next"),
            run_count=bindparam("b_runs"),
            last_run_at=bindparam("b_last"),
            status=bindparam("b_status"),
            status_reason=bindparam("b_reason"),
        )
    )
    rows = [
        {
            "b_id": a.task_id,
            "b_next": a.next_run_at,
            "b_runs": a.run_count,
            "b_last": a.last_run_at,
            "b_status": a.status,
            "b_reason": a.status_reason,
        }
        for a in advances
    ]
    connection.execute(statement, rows)


# One statement whatever the batch size: the values travel as one JSON document (json_rows).
_ADVANCE_ROWS = text(
    """
    UPDATE scheduled_tasks AS t
    SET next_run_at = v.next_run_at, run_count = v.run_count, last_run_at = v.last_run_at,
        status = v.status, status_reason = v.status_reason
    FROM json_to_recordset(CAST(:rows AS json))
        AS v(id bigint, next_run_at timestamptz, run_count integer, last_run_at timestamptz, status varchar,
             status_reason text)
    WHERE t.id = v.id
    """
)


def _advance_rows(connection: Connection, advances: Sequence[TaskAdvance]) -> None:
    rows = [
        {
            "id": a.task_id,
            "next_run_at": a.next_run_at,
            "run_count": a.run_count,
            "last_run_at": a.last_run_at,
            "status": a.status,
            "status_reason": a.status_reason,
        }
        for a in advances
    ]
    connection.execute(_ADVANCE_ROWS, {"rows": json_rows(rows)})


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: timestamptz values must be aware")
        return value.isoformat()
    raise TypeError(f"no JSON form for {type(value).__name__}: {value!r}")


def json_rows(rows: Sequence[dict[str, Any]]) -> str:
    """``rows`` as one JSON array of objects, for ``json_to_recordset(CAST(:rows AS json)) AS v(col type,
    ...)``: one text parameter on either driver, the values typed by the server from the column list (a
    datetime in ISO 8601 with its offset; a naive one is refused with ValueError: the server would read it in
    its session's time zone; None is NULL). It costs the client about a third less than binding a list per
    column (psycopg 3 dumps arrays element by element in Python). Dumped by orjson: a tenth of the standard
    ``json`` module's C encoder's time on the planner's rows (2.8 -> 0.5 ms per batch of 1,000 slots and
    advances). A batch repeats its instants (``now`` in every row): each distinct one is formatted once, by
    :func:`_iso` (orjson's own datetime form would let a naive one through)."""
    texts: dict[Any, str] = {}

    def default(value: Any) -> str:
        text = texts.get(value)
        if text is None:
            text = texts[value] = _iso(value)
        return text

    try:
        return orjson.dumps(rows, default=default, option=orjson.OPT_PASSTHROUGH_DATETIME).decode()
    except orjson.JSONEncodeError as error:
        if isinstance(error.__cause__, ValueError):  # _iso's: a naive datetime
            raise error.__cause__ from None
        raise


def cancel_executions(connection: Connection, ids: Sequence[int], *, now: datetime, reason: str) -> int:
    """Cancel those of ``ids`` that have not finished; a worker running one sees it on its next heartbeat."""
    if not ids:
        return 0
    statement = (
        update(executions)
        .where(executions.c.id.in_(ids), executions.c.status.in_(ACTIVE_STATUSES))
        .values(status="cancelled", reason=reason, finished_at=now, error=f"cancelled: {reason}")
    )
    return int(connection.execute(statement).rowcount)


def in_flight_count(connection: Connection) -> int:
    """Executions counted against the concurrency cap: queued, running and retrying (status index)."""
    query = select(func.count()).select_from(executions).where(executions.c.status.in_(IN_FLIGHT_STATUSES))
    return int(connection.execute(query).scalar_one())


def relay_counts(connection: Connection) -> tuple[int, int | None]:
    """(executions counted against the cap, the smallest id of a ``pending`` one or None), one statement."""
    pending = executions.c.status == "pending"
    query = select(
        func.count().filter(executions.c.status.in_(IN_FLIGHT_STATUSES)),
        func.min(executions.c.id).filter(pending),
    ).where(executions.c.status.in_(ACTIVE_STATUSES))
    in_flight, first_pending = connection.execute(query).one()
    return int(in_flight), None if first_pending is None else int(first_pending)


def first_pending_id(connection: Connection) -> int | None:
    """The smallest id of a ``pending`` execution (the status index: a scan of the pending rows only)."""
    query = select(func.min(executions.c.id)).where(executions.c.status == "pending")
    value = connection.execute(query).scalar_one_or_none()
    return None if value is None else int(value)


def dispatch_query(default_timeout_ms: int) -> Any:
    """SELECT of what a :class:`Dispatch` needs, executions left-joined to their task (add WHERE/ORDER)."""
    timeout = func.coalesce(tasks.c.timeout_ms, default_timeout_ms)
    return select(
        executions.c.id, executions.c.queue, executions.c.command, executions.c.task_name, timeout.label("ms")
    ).select_from(executions.outerjoin(tasks, tasks.c.id == executions.c.task_id))


def read_dispatches(connection: Connection, query: Any) -> list[Dispatch]:
    """Run a :func:`dispatch_query` and build the dispatches."""
    from scheduler.records import Dispatch

    return [
        Dispatch(int(r.id), r.queue, r.command, r.task_name, timeout_s=int(r.ms) / 1000)
        for r in connection.execute(query)
    ]


def pending_dispatches(connection: Connection, limit: int, *, default_timeout_ms: int) -> list[Dispatch]:
    """Up to ``limit`` ``pending`` executions, oldest first, as dispatches (with the task's time limit)."""
    if limit <= 0:
        return []
    query = dispatch_query(default_timeout_ms).where(executions.c.status == "pending")
    return read_dispatches(connection, query.order_by(executions.c.created_at, executions.c.id).limit(limit))


def mark_queued(connection: Connection, ids: Sequence[int], *, now: datetime | None = None) -> int:
    """``pending`` -> ``queued`` with ``enqueued_at = now`` for those of ``ids`` still pending.

    ``now`` None: the database clock, read inside the statement on PostgreSQL (``clock_timestamp()``, one
    round trip less).
    """
    if not ids:
        return 0
    postgresql = connection.dialect.name == "postgresql"
    stamp: Any = now
    if stamp is None:
        stamp = func.clock_timestamp() if postgresql else db_now(connection)
    chosen = _among(list(ids)) if postgresql else executions.c.id.in_(ids)
    statement = (
        update(executions)
        .where(chosen, executions.c.status == "pending")
        .values(status="queued", enqueued_at=stamp)
    )
    return int(connection.execute(statement).rowcount)


def _among(ids: list[int]) -> Any:
    """PostgreSQL: ``id = ANY(:ids)``, the ids one array parameter bound by the driver. An ``IN`` list is a
    parameter per id, rendered anew by SQLAlchemy on every call: a relayed batch of a thousand ids cost the
    relay's thread 3 ms (psycopg2) to 5 ms (psycopg 3) of CPU, the array 1 ms."""
    # Imported here: a process on SQLite need not load PostgreSQL's dialect (CLI start-up time).
    from sqlalchemy.dialects.postgresql import ARRAY

    return executions.c.id == any_(bindparam("ids", ids, type_=ARRAY(BigInteger)))
