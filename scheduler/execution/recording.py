"""Record an attempt's outcome: its status (``retrying`` when it will be retried), its log lines, the task's
automatic pause; then the events, and the :class:`~scheduler.execution.outcomes.Decision` for the delivery.

An outcome that cannot be stored because the database is down is retried on fresh connections (up to
:data:`OUTCOME_RETRY_S`), so a database restart during a run neither loses the outcome nor reruns the command.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

from scheduler.execution.capture import LogBuffer
from scheduler.execution.host import ExecutionHooks, ExecutionRuntime
from scheduler.execution.outcomes import Decision, Outcome, execution_json, next_status
from scheduler.observability.events import TASK_EVENT, TASK_PAUSED
from scheduler.records import ClaimedExecution, FinishedExecution, Task
from scheduler.storage.db import autocommits
from scheduler.storage.run_statements import outcome_kind
from scheduler.storage.runs import append_logs, finish_execution, load_task, record_auto_pause
from scheduler.storage.transactions import write_transaction

logger = logging.getLogger(__name__)

# How long a finished attempt keeps trying to store its outcome while the database is unreachable.
OUTCOME_RETRY_S = 300.0
DISCONNECTED = (sa_exc.OperationalError, sa_exc.InterfaceError)
_T = TypeVar("_T")


def record_outcome(
    runtime: ExecutionRuntime,
    connection: Connection,
    claim: ClaimedExecution,
    outcome: Outcome,
    buffer: LogBuffer,
    duration_ms: int,
    hooks: ExecutionHooks,
    *,
    retry_s: float = OUTCOME_RETRY_S,
) -> Decision:
    """Store ``outcome`` of the attempt of ``claim`` with the lines left in ``buffer``, emit its events and
    return the delivery's decision (``failed`` when the claim is no longer ours: nothing was recorded)."""
    status, countdown = next_status(claim, outcome)
    summary = f"attempt {claim.attempt} of {claim.max_attempts} {outcome.status}"
    if outcome.error:
        summary += f": {outcome.error}"
    if outcome.status in ("failed", "timed_out"):
        tail = f"; retrying in {countdown:.3g} s" if countdown is not None else ""
        buffer.log("ERROR", summary + tail)
    if outcome.trace:
        buffer.log("ERROR", outcome.trace)
    lines = buffer.drain(final=True)
    # One statement (no log lines; an outcome that cannot auto-pause the task): it commits by itself.
    alone = not lines and outcome_kind(status) != "failure"

    def _finish(connection: Connection) -> FinishedExecution | None:
        return finish_execution(
            connection,
            claim,
            status=status,
            duration_ms=duration_ms,
            result=outcome.result,
            error=outcome.error,
            reason="task_deleted" if status == "cancelled" and not claim.task_found else None,
        )

    def write(connection: Connection, retried: bool) -> tuple[FinishedExecution | None, Task | None]:
        if alone and autocommits(connection):  # commits by itself, durably (the session's default)
            return _finish(connection), None
        paused_task = None
        with write_transaction(connection):
            finished = _finish(connection)
            if finished is not None or not retried:  # a retry after a lost commit must not log twice
                append_logs(connection, claim.id, claim.attempt, lines)
            if finished is not None and finished.task_paused and claim.task_id is not None:
                paused_task = load_task(connection, claim.task_id)
                if paused_task is not None:
                    record_auto_pause(connection, paused_task, actor=f"worker:{claim.worker}")
        return finished, paused_task

    finished, paused_task = _write_outcome(runtime, connection, write, claim.id, retry_s)
    if finished is None:  # the claim was taken from us (cancelled, reaped as lost, taken over): not a success
        return Decision("failed", summary=f"{summary}; not recorded: execution {claim.id} is no longer ours")
    if hooks.recorded is not None:
        hooks.recorded(claim.command, outcome.status, duration_ms)
    _emit_outcome(runtime, claim, outcome, status, duration_ms)
    if paused_task is not None:
        runtime.emit(TASK_PAUSED, {"task": paused_task.to_json()})
    if countdown is not None:
        return Decision("retry", countdown, summary)
    return Decision("failed" if outcome.status in ("failed", "timed_out") else "done", summary=summary)


def _write_outcome(
    runtime: ExecutionRuntime,
    connection: Connection,
    write: Callable[[Connection, bool], _T],
    execution_id: int,
    retry_s: float,
) -> _T:
    """``write(connection, False)``; while the database is unreachable, ``write(fresh, True)`` on new
    connections, pausing at most a heartbeat interval, for up to ``retry_s`` seconds.

    The attempt ran: a database restart meanwhile must not lose its outcome (the execution would be reaped
    and run again). The pause stays under the heartbeat interval, so the outcome lands before the planner's
    sweep, which waits that long after its own reconnection, could take the execution for dead.
    """
    try:
        return write(connection, False)
    except DISCONNECTED as error:
        if retry_s <= 0:
            raise
        logger.warning("execution %s: cannot store the outcome yet, retrying: %s", execution_id, error)
    deadline = time.monotonic() + retry_s
    pause, longest = 0.1, max(runtime.settings.heartbeat_interval / 1000, 0.1)
    while True:
        time.sleep(pause)
        pause = min(pause * 2, longest)
        try:
            with runtime.engine.connect() as fresh:
                return write(fresh, True)
        except DISCONNECTED:
            if time.monotonic() >= deadline:
                raise


def _emit_outcome(
    runtime: ExecutionRuntime, claim: ClaimedExecution, outcome: Outcome, status: str, duration_ms: int
) -> None:
    """``completed``, or ``failed`` for every failed attempt (``final`` False when it will be retried)."""
    if outcome.status == "completed":
        execution = execution_json(claim, "completed", duration_ms=duration_ms, result=outcome.result)
        runtime.emit(TASK_EVENT, {"type": "completed", "execution": execution})
    elif outcome.status in ("failed", "timed_out"):
        execution = execution_json(claim, status, duration_ms=duration_ms, error=outcome.error)
        runtime.emit(TASK_EVENT, {"type": "failed", "final": status != "retrying", "execution": execution})
