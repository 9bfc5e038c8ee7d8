"""The worker's SQL: claim an execution, heartbeat it, store its logs, record its outcome.

The hot path of one attempt is one claim statement, one completion statement, and one logs insert when the
command logged anything (PostgreSQL; SQLite, being in-process, takes a cheap extra read or two). On
PostgreSQL the claim and the completion run on the driver's cursor (:mod:`scheduler.storage.driver_cursor`,
docs/architecture.md "The worker's hot path"); everything else here goes through SQLAlchemy's ``execute``.

Claim contract (invariant 3): an execution moves to ``running`` only through :func:`claim_execution`, a
conditional ``UPDATE ... RETURNING``. It takes a row that is ``pending``, ``queued`` or ``retrying``
(``retrying`` starts the next attempt: ``attempt + 1``), or a ``running`` row whose heartbeat is older than
``stale_after`` and which has attempts left (its silent attempt counts as lost: ``attempt + 1``). Anything
else, a duplicate or redelivered message included, yields ``None`` and the caller does nothing. Completion is
fenced the same way: only the worker that holds the claim can record the outcome.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.sql.elements import ColumnElement

from scheduler.records import ClaimedExecution, FinishedExecution, PendingLog, Task, as_utc
from scheduler.storage.clock import db_now
from scheduler.storage.driver_cursor import run_on_driver
from scheduler.storage.run_statements import (
    CLAIMABLE,
    EXECUTION_COLUMNS,
    TASK_COLUMNS,
    OutcomeStatus,
    claim_statement,
    finish_statement,
    log_bytes,
    outcome_kind,
    pg_claim,
    pg_finish_statement,
    pg_takeover,
    takeover_condition,
)
from scheduler.storage.tables import Timestamp, executions, logs, tasks
from scheduler.storage.task_outcomes import auto_pause_reason as auto_pause_reason
from scheduler.storage.task_outcomes import load_task as load_task
from scheduler.storage.task_outcomes import record_auto_pause as audit_auto_pause
from scheduler.storage.task_outcomes import task_outcome

# ------------------------------------------------------------------------------------------------ clock


def _is_postgres(connection: Connection) -> bool:
    return connection.dialect.name == "postgresql"


def _now(connection: Connection) -> ColumnElement[Any]:
    """The database clock as an SQL expression (PostgreSQL ``now()``; SQLite: its clock, read and bound)."""
    if _is_postgres(connection):
        return func.now()
    return literal(db_now(connection), Timestamp)


def _ago(connection: Connection, delta: timedelta) -> ColumnElement[Any]:
    if _is_postgres(connection):
        return func.now() - literal(delta)
    return literal(db_now(connection) - delta, Timestamp)


# ------------------------------------------------------------------------------------------------ claim


def _claimed(
    c: Mapping[Any, Any], t: Mapping[Any, Any] | None, log_bytes: int, took_over: str | None
) -> ClaimedExecution:
    found = t is not None and t["status"] is not None
    return ClaimedExecution(
        id=int(c["id"]),
        task_id=c["task_id"],
        task_name=c["task_name"],
        command=c["command"],
        attempt=int(c["attempt"]),
        max_attempts=int(c["max_attempts"]),
        queue=c["queue"],
        trigger=c["trigger"],
        scheduled_for=c["scheduled_for"],
        worker=c["worker"],
        started_at=as_utc(c["started_at"]),
        task_found=found,
        task_status=t["status"] if t is not None and found else None,
        data=run_data(t["data"] if t is not None and found else None, c["data"]),
        timeout_ms=int(t["timeout_ms"]) if t is not None and found else None,
        retry_delay_ms=int(t["retry_delay_ms"]) if t is not None and found else 0,
        retry_backoff=float(t["retry_backoff"]) if t is not None and found else 1.0,
        log_bytes=int(log_bytes or 0),
        took_over_from=took_over,
        run_data=dict(c["data"]) if c["data"] is not None else None,
    )


def run_data(task_data: Mapping[str, Any] | None, execution_data: Mapping[str, Any] | None) -> dict[str, Any]:
    """What the command sees: the task's data with the execution's own data merged over it (top-level keys;
    the run's value wins, docs/semantics.md "Per-run data")."""
    return {**(task_data or {}), **(execution_data or {})}


def _task_fields(connection: Connection, task_id: int | None) -> Mapping[Any, Any] | None:
    if task_id is None:
        return None
    row = connection.execute(select(*TASK_COLUMNS).where(tasks.c.id == task_id)).first()
    return None if row is None else row._mapping


def _claim(
    connection: Connection,
    execution_id: int,
    worker: str,
    took_over: str | None = None,
    stale_after: timedelta | None = None,
) -> ClaimedExecution | None:
    """Run a claim: the ordinary one (status pending, queued or retrying), or with ``took_over`` the takeover
    of that worker's silent ``running`` claim (heartbeat older than ``stale_after``)."""
    params = {"p_id": execution_id, "p_worker": worker, "p_holder": took_over, "p_stale": stale_after}
    if _is_postgres(connection):
        # Built once; on the driver's cursor (scheduler.storage.driver_cursor: the hot path).
        _, c = run_on_driver(connection, pg_claim() if took_over is None else pg_takeover(), params)
        if c is None:
            return None
        task = {column.name: c[f"t_{column.name}"] for column in TASK_COLUMNS}
        return _claimed(c, task, c["log_bytes"], took_over)
    # SQLite renders RETURNING without table qualifiers, which breaks correlated subqueries: read separately.
    condition: ColumnElement[bool]
    if took_over is None:
        condition = executions.c.status.in_(CLAIMABLE)
    else:
        assert stale_after is not None
        condition = takeover_condition(_ago(connection, stale_after))
    statement = claim_statement(_now(connection), condition).returning(*EXECUTION_COLUMNS)
    row = connection.execute(statement, params).first()
    if row is None:
        return None
    used = connection.execute(select(log_bytes(execution_id, postgres=False))).scalar_one()
    return _claimed(row._mapping, _task_fields(connection, row.task_id), used, took_over)


def claim_execution(
    connection: Connection, execution_id: int, worker: str, *, stale_after: timedelta
) -> ClaimedExecution | None:
    """Claim the execution for ``worker`` (see the module docstring); ``None``: not claimable, do nothing."""
    claimed = _claim(connection, execution_id, worker)
    if claimed is not None:
        return claimed
    current = connection.execute(
        select(executions.c.status, executions.c.worker).where(executions.c.id == execution_id)
    ).first()
    if current is None or current.status != "running" or current.worker == worker:
        return None
    return _claim(connection, execution_id, worker, current.worker, stale_after)


def execution_status(connection: Connection, execution_id: int) -> str | None:
    """The execution's status, or None when it does not exist."""
    return connection.execute(
        select(executions.c.status).where(executions.c.id == execution_id)
    ).scalar_one_or_none()


def running_claim(connection: Connection, execution_id: int) -> ClaimedExecution | None:
    """The current claim of a ``running`` execution, for recording an outcome its worker could not write
    (the hard time limit killed it); None when it is not running."""
    row = connection.execute(
        select(*EXECUTION_COLUMNS).where(executions.c.id == execution_id, executions.c.status == "running")
    ).first()
    if row is None:
        return None
    return _claimed(row._mapping, _task_fields(connection, row.task_id), 0, None)


# ------------------------------------------------------------------------------------------- heartbeat


def heartbeat(connection: Connection, execution_id: int, worker: str) -> bool:
    """Stamp ``heartbeat_at``; False when the execution is no longer this worker's ``running`` claim
    (cancelled, marked lost, or taken over): the caller should stop the command."""
    statement = (
        update(executions)
        .where(
            executions.c.id == execution_id,
            executions.c.status == "running",
            executions.c.worker == worker,
        )
        .values(heartbeat_at=_now(connection))
    )
    return connection.execute(statement).rowcount == 1


def append_logs(connection: Connection, execution_id: int, attempt: int, lines: Sequence[PendingLog]) -> None:
    """Insert captured log lines of one attempt (the caller bounds their size)."""
    if not lines:
        return
    connection.execute(
        insert(logs),
        [
            {
                "execution_id": execution_id,
                "attempt": attempt,
                "at": line.at,
                "level": line.level,
                "message": line.message,
            }
            for line in lines
        ],
    )


# ------------------------------------------------------------------------------------------ completion


def _finished(status: str, task: Any) -> FinishedExecution:
    outcome = task_outcome(task)
    if outcome is None:
        return FinishedExecution(status=status, consecutive_failures=None, task_paused=False)
    return FinishedExecution(
        status=status, consecutive_failures=outcome.consecutive_failures, task_paused=outcome.task_paused
    )


def finish_execution(
    connection: Connection,
    claim: ClaimedExecution,
    *,
    status: OutcomeStatus,
    duration_ms: int,
    result: Any = None,
    error: str | None = None,
    reason: str | None = None,
) -> FinishedExecution | None:
    """Record the outcome of ``claim``'s attempt; None when the claim is no longer this worker's.

    ``retrying`` leaves the execution open for its next attempt (``enqueued_at`` = now, the retry's publish
    time); the final statuses stamp ``finished_at``. A final outcome also updates the task (see
    :mod:`scheduler.storage.task_outcomes`): ``consecutive_failures`` (reset by ``completed`` when it is
    not 0 already, +1 by ``failed``/``timed_out``) and the auto-pause (``status`` ``paused`` with a reason
    once ``consecutive_failures`` reaches ``auto_pause_after``). ``consecutive_failures`` in the result is
    None when the task row was not written.
    On PostgreSQL this is one statement.
    """
    kind = outcome_kind(status)
    has_task = claim.task_id is not None and kind in ("completed", "failure")
    params: dict[str, Any] = {
        "p_id": claim.id,
        "p_worker": claim.worker,
        "p_status": status,
        "p_duration": duration_ms,
        "p_reason": reason,
        "p_error": None if status == "completed" else error,
        "p_task": claim.task_id,
    }
    if kind != "retrying":
        params["p_result"] = result
    if _is_postgres(connection):
        statement, _ = pg_finish_statement(kind, has_task)
        rowcount, row = run_on_driver(connection, statement, params)  # the hot path, as the claim's
        if not has_task:
            return _finished(status, None) if rowcount == 1 else None
        return None if row is None else _finished(status, row)
    execution_update, task_update = finish_statement(_now(connection), kind, has_task, False)
    if connection.execute(execution_update, params).rowcount != 1:
        return None
    if task_update is None:
        return _finished(status, None)
    task = connection.execute(task_update, params).first()
    return _finished(status, None if task is None else task._mapping)


def record_auto_pause(connection: Connection, task: Task, *, actor: str) -> None:
    """Audit an auto-pause (written by the worker that recorded the failure which caused it)."""
    audit_auto_pause(connection, task, actor=actor, at=db_now(connection))
