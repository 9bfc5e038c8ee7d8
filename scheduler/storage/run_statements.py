"""The statements of :mod:`scheduler.storage.runs`, built once where they can be (PostgreSQL).

Building a statement costs more than running it on the worker's hot path, so the PostgreSQL claim, takeover
and completion statements are built once with bind parameters (``p_*``) and cached: they are compiled once
per dialect and run on the driver's cursor (:mod:`scheduler.storage.driver_cursor`, docs/architecture.md "The
worker's hot path"), and their text is the same on every run, which psycopg 3 prepares on the server
(:func:`scheduler.storage.db.make_engine`). SQLite binds its clock as a value, so its statements are built
per call and run through SQLAlchemy.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from sqlalchemy import Interval, LargeBinary, and_, bindparam, case, cast, func, or_, select, true, update
from sqlalchemy.sql.elements import ColumnElement

from scheduler.storage.tables import executions, logs, tasks
from scheduler.storage.task_outcomes import (
    TASK_OUTCOME_COLUMNS,
    task_outcome_condition,
    task_outcome_values,
)

CLAIMABLE = ("pending", "queued", "retrying")
OutcomeStatus = Literal["completed", "failed", "timed_out", "cancelled", "retrying"]

EXECUTION_COLUMNS = (
    executions.c.id,
    executions.c.task_id,
    executions.c.task_name,
    executions.c.command,
    executions.c.attempt,
    executions.c.max_attempts,
    executions.c.queue,
    executions.c.trigger,
    executions.c.scheduled_for,
    executions.c.worker,
    executions.c.started_at,
    executions.c.data,
)
TASK_COLUMNS = (
    tasks.c.status,
    tasks.c.data,
    tasks.c.timeout_ms,
    tasks.c.retry_delay_ms,
    tasks.c.retry_backoff,
)


def one_of(column: Any, values: tuple[str, ...]) -> ColumnElement[bool]:
    """``column`` equals one of ``values``. Not ``IN``: SQLAlchemy renders an ``IN`` list anew on each run
    (an "expanding" parameter), which cost the claim about 0.2 ms of client CPU."""
    return or_(*(column == value for value in values))


def log_bytes(execution_id: Any, *, postgres: bool) -> Any:
    length = func.octet_length(logs.c.message) if postgres else func.length(cast(logs.c.message, LargeBinary))
    return (
        select(func.coalesce(func.sum(length), 0))
        .where(logs.c.execution_id == execution_id)
        .scalar_subquery()
    )


def claim_statement(now: Any, condition: Any) -> Any:
    return (
        update(executions)
        .where(executions.c.id == bindparam("p_id"), condition)
        .values(
            status="running",
            # SET expressions read the old row: 'retrying' and a taken-over 'running' start the next attempt.
            attempt=case(
                (one_of(executions.c.status, ("retrying", "running")), executions.c.attempt + 1),
                else_=executions.c.attempt,
            ),
            worker=bindparam("p_worker"),
            started_at=now,
            heartbeat_at=now,
            finished_at=None,
        )
    )


def pg_claim_returning(statement: Any) -> Any:
    """One statement: the task's fields and the log budget come back as correlated subqueries.

    It also turns ``synchronous_commit`` off for its transaction (``set_config(..., true)`` is ``SET
    LOCAL``): a claim's commit need not wait for the WAL flush (see ``transactions.write_transaction``), and
    setting it here spares the claim a round trip. Evaluated for the claimed row only; no row, nothing to
    commit.
    """
    extra = [
        select(column).where(tasks.c.id == executions.c.task_id).scalar_subquery().label(f"t_{column.name}")
        for column in TASK_COLUMNS
    ]
    used = log_bytes(executions.c.id, postgres=True).label("log_bytes")
    async_commit = func.set_config("synchronous_commit", "off", True).label("async_commit")
    return statement.returning(*EXECUTION_COLUMNS, *extra, used, async_commit)


@functools.cache
def pg_claim() -> Any:
    # Built once: constructing the statement costs more than running it (hot path).
    return pg_claim_returning(claim_statement(func.now(), one_of(executions.c.status, CLAIMABLE)))


def takeover_condition(stale_before: Any) -> ColumnElement[bool]:
    """The takeover's claim condition: the row is ``running`` for worker ``p_holder``, whose heartbeat is
    older than ``stale_before``, and has attempts left."""
    return and_(
        executions.c.status == "running",
        executions.c.worker == bindparam("p_holder"),
        executions.c.heartbeat_at < stale_before,
        executions.c.attempt < executions.c.max_attempts,
    )


@functools.cache
def pg_takeover() -> Any:
    """The takeover claim, built once like :func:`pg_claim` (``p_stale``: how old a heartbeat is stale)."""
    stale_before = func.now() - bindparam("p_stale", type_=Interval())
    return pg_claim_returning(claim_statement(func.now(), takeover_condition(stale_before)))


def outcome_kind(status: OutcomeStatus) -> str:
    return "failure" if status in ("failed", "timed_out") else status


def finish_statement(now: Any, kind: str, has_task: bool, postgres: bool) -> Any:
    """The completion statement of one kind of outcome, with bind parameters ``p_*``."""
    values: dict[str, Any] = {
        "status": bindparam("p_status"),
        "duration_ms": bindparam("p_duration"),
        "reason": bindparam("p_reason"),
        "error": bindparam("p_error"),
    }
    if kind == "retrying":
        values["enqueued_at"] = now
    else:
        values.update(finished_at=now, result=bindparam("p_result", type_=executions.c.result.type))
    execution_update = (
        update(executions)
        .where(
            executions.c.id == bindparam("p_id"),
            executions.c.status == "running",
            executions.c.worker == bindparam("p_worker"),
        )
        .values(values)
    )
    if not has_task:  # the caller's has_task: a final outcome (completed or failure) of a task's execution
        return execution_update, None

    if postgres:
        # PostgreSQL: one statement. The execution update's RETURNING feeds scheduler_task_outcome
        # (migration 0002), a SECURITY DEFINER function: the worker role may not update tasks itself; the
        # function applies the rule of task_outcomes to an execution it sees finished (a volatile function
        # sees this statement's update), and auto-pauses only when the task's own auto_pause_after says so.
        finished = execution_update.returning(executions.c.id, executions.c.task_id, executions.c.status).cte(
            "finished"
        )
        outcome = (
            func.scheduler_task_outcome(finished.c.task_id, finished.c.id, finished.c.status)
            .table_valued("id", "status", "status_reason", "consecutive_failures")
            .lateral("task_outcome")
        )
        combined = select(
            finished.c.id, outcome.c.status, outcome.c.status_reason, outcome.c.consecutive_failures
        ).select_from(finished.outerjoin(outcome, true()))
        return combined, None
    # SQLite: the task update is a second statement of the same transaction.
    condition = task_outcome_condition(kind)
    task_values = task_outcome_values(kind, now, bindparam("p_id"), bindparam("p_status"))
    assert task_values is not None, kind
    task_update = (
        update(tasks)
        .where(tasks.c.id == bindparam("p_task"), *(() if condition is None else (condition,)))
        .values(task_values)
        .returning(*TASK_OUTCOME_COLUMNS)
    )
    return execution_update, task_update


pg_finish_statement = functools.cache(
    lambda kind, has_task: finish_statement(func.now(), kind, has_task, True)
)
