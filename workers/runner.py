"""One attempt of one execution: claim it, run its command under the watchdog, record the outcome, emit.

:func:`execute` returns a :class:`Decision` for the Celery task: ``done`` (the attempt's outcome,
``completed`` or ``cancelled``, is recorded), ``failed`` (its last attempt failed or timed out, or the claim
was taken from us while it ran: reaped as lost, cancelled, taken over; nothing recorded), ``noop`` (a
duplicate delivery found nothing to do), ``retry`` (the attempt
failed and attempts remain: the row is already ``retrying``, the task publishes the retry), or ``recheck``
(the execution is ``running`` on another worker with a fresh heartbeat: look again once it could be stale, so
an execution whose process died is taken over without waiting for the planner's sweep). Each carries a
one-line summary (``attempt 2 of 3 failed: RuntimeError: disk full``) for the worker's log and Flower.

Outcomes: the command's return value (as JSON; anything else as ``str``) -> ``completed``; an exception ->
``failed``, its ``error`` one line (exception and message), its traceback in the execution's logs; the
deadline (:class:`~scheduler.execution.watchdog.Watchdog`) -> ``timed_out``; invalid input (a missing data
key, an unknown
command) fails at once without retries, as a retry could not succeed. ``timed_out`` counts as a failed
attempt. Retry delay: ``retry_delay_ms * retry_backoff ** (attempt - 1)``, +-15 % jitter, capped at
:data:`celeryconfig.RETRY_COUNTDOWN_CAP_S` (15 min) so a waiting retry never outlives the visibility timeout.
An outcome that cannot be stored because the database is down is retried on fresh connections (up to
:data:`OUTCOME_RETRY_S`), so a database restart during a run neither loses the outcome nor reruns the command.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, TypeVar

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc

from celeryconfig import RETRY_COUNTDOWN_CAP_S
from scheduler.commands.registry import CommandContext
from scheduler.errors import InvalidInput
from scheduler.execution.capture import LogBuffer, LogWriter
from scheduler.execution.sandbox import ExternalCommandFailed, ResourceLimits, run_external_command
from scheduler.execution.watchdog import ExecutionCancelled, ExecutionTimedOut, Watchdog
from scheduler.observability.events import TASK_EVENT, TASK_PAUSED
from scheduler.observability.log_setup import bound_log_context
from scheduler.planning.publisher import Dispatch
from scheduler.records import Task
from scheduler.storage.clock import db_now
from scheduler.storage.db import autocommits
from scheduler.storage.run_statements import OutcomeStatus, outcome_kind
from scheduler.storage.runs import (
    ClaimedExecution,
    FinishedExecution,
    PendingLog,
    append_logs,
    claim_execution,
    execution_status,
    finish_execution,
    heartbeat,
    load_task,
    record_auto_pause,
    running_claim,
    transaction,
)
from workers.metrics import record_execution
from workers.runtime import WorkerRuntime

logger = logging.getLogger(__name__)

MAX_RECHECKS = 3
# How long a finished attempt keeps trying to store its outcome while the database is unreachable.
OUTCOME_RETRY_S = 300.0
DISCONNECTED = (sa_exc.OperationalError, sa_exc.InterfaceError)
_T = TypeVar("_T")
MAX_RESULT_BYTES = 1 << 20
JITTER = 0.15


@dataclass(frozen=True, slots=True)
class Decision:
    kind: Literal["done", "failed", "noop", "retry", "recheck"]
    countdown_s: float = 0.0
    summary: str = ""  # one line: what this delivery did


@dataclass(frozen=True, slots=True)
class Outcome:
    status: OutcomeStatus
    result: Any = None
    error: str | None = None  # one line
    retryable: bool = True
    trace: str | None = None  # the traceback, for the execution's logs


def retry_delay_s(delay_ms: int, backoff: float, attempt: int, *, rng: random.Random | None = None) -> float:
    """Seconds before the attempt after ``attempt``: exponential backoff with jitter, capped."""
    base = delay_ms / 1000 * backoff ** max(attempt - 1, 0)
    jitter = 1 + (rng or random).uniform(-JITTER, JITTER)
    return float(min(base * jitter, RETRY_COUNTDOWN_CAP_S))


def json_result(value: Any) -> Any:
    """The value if it is JSON (and at most 1 MiB as text), else its ``str`` (cut to 1 MiB)."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        text = None
        value = str(value)
    if text is None:
        return value[:MAX_RESULT_BYTES]
    if len(text) > MAX_RESULT_BYTES:
        return text[:MAX_RESULT_BYTES] + f"... [result cut: {len(text)} characters]"
    return value


def one_line(text: str) -> str:
    """``text`` with its line breaks and runs of white space as single spaces."""
    return " ".join(text.split())


def failure(error: BaseException) -> Outcome:
    """``failed`` with ``error`` as one line (``ValueError: bad value``) and its traceback for the logs."""
    trace = "".join(traceback.format_exception(error)).rstrip()
    line = one_line(f"{type(error).__name__}: {error}").removesuffix(":")
    return Outcome("failed", error=line, trace=trace)


def execution_json(claim: ClaimedExecution, status: str, **extra: Any) -> dict[str, Any]:
    """The ``execution`` of a task-event payload."""
    return {
        "id": claim.id,
        "task_id": claim.task_id,
        "task_name": claim.task_name,
        "command": claim.command,
        "trigger": claim.trigger,
        "queue": claim.queue,
        "worker": claim.worker,
        "attempt": claim.attempt,
        "max_attempts": claim.max_attempts,
        "status": status,
        **extra,
    }


# ---------------------------------------------------------------------------------------------- running


def _run_command(
    runtime: WorkerRuntime, claim: ClaimedExecution, buffer: LogBuffer, deadline: float | None
) -> Any:
    spec = runtime.registry.get(claim.command)
    context = CommandContext(
        execution_id=claim.id,
        task_id=claim.task_id,
        task_name=claim.task_name,
        attempt=claim.attempt,
        data=MappingProxyType(dict(claim.data)),
        log=buffer.log,
        deadline=deadline,
    )
    if spec.kind == "external":
        timeout_s = (claim.timeout_ms or runtime.settings.task_timeout) / 1000
        # A little under the deadline, so the sandbox ends the program and keeps its output before the limit.
        remaining = max((deadline - time.monotonic()) - 0.5, 0.1) if deadline is not None else timeout_s
        limits = ResourceLimits(cpu_seconds=max(3600, int(timeout_s) + 5))
        return run_external_command(spec, context, remaining, limits, runtime.settings.max_log_bytes)
    assert spec.func is not None
    if threading.current_thread() is not threading.main_thread():
        return spec.func(context)  # stdout is process-wide: capture it only where one command runs at a time
    out, err = LogWriter(buffer, "INFO"), LogWriter(buffer, "WARNING")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return spec.func(context)
    finally:
        out.flush()
        err.flush()


def _attempt(runtime: WorkerRuntime, claim: ClaimedExecution, buffer: LogBuffer) -> Outcome:
    timeout_s = (claim.timeout_ms or runtime.settings.task_timeout) / 1000
    deadline = time.monotonic() + timeout_s

    def beat(lines: list[PendingLog]) -> bool:
        with runtime.engine.connect() as connection, transaction(connection, durable=False):
            append_logs(connection, claim.id, claim.attempt, lines)
            return heartbeat(connection, claim.id, claim.worker)

    interval_s = runtime.settings.heartbeat_interval / 1000
    timed_out = Outcome("timed_out", error=f"timed out: the time limit of {timeout_s:g} s passed")
    # Only the command runs inside this try: the watchdog interrupts nothing else (see
    # scheduler.execution.watchdog).
    try:
        with Watchdog(beat=beat, buffer=buffer, interval_s=interval_s, deadline=deadline):
            result = _run_command(runtime, claim, buffer, deadline)
        return Outcome("completed", result=json_result(result))
    except (SoftTimeLimitExceeded, ExecutionTimedOut):
        return timed_out
    except ExecutionCancelled:
        return Outcome("cancelled", error="the execution was cancelled or taken over while it ran")
    except ExternalCommandFailed as error:
        return Outcome("timed_out" if error.timed_out else "failed", error=one_line(str(error)))
    except TimeoutError as error:  # a command that saw its deadline (CommandContext.deadline) pass
        return timed_out if time.monotonic() >= deadline - 0.05 else failure(error)
    except InvalidInput as error:
        return Outcome("failed", error=one_line(str(error)), retryable=False)
    except Exception as error:
        return failure(error)


def _next_status(claim: ClaimedExecution, outcome: Outcome) -> tuple[OutcomeStatus, float | None]:
    """The status to record for this attempt's outcome, and the retry countdown (None: no retry)."""
    if outcome.status in ("failed", "timed_out") and outcome.retryable and claim.attempt < claim.max_attempts:
        return "retrying", retry_delay_s(claim.retry_delay_ms, claim.retry_backoff, claim.attempt)
    return outcome.status, None


def _record(
    runtime: WorkerRuntime,
    connection: Connection,
    claim: ClaimedExecution,
    outcome: Outcome,
    buffer: LogBuffer,
    duration_ms: int,
    *,
    retry_s: float = OUTCOME_RETRY_S,
) -> Decision:
    status, countdown = _next_status(claim, outcome)
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
        with transaction(connection):
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
    record_execution(claim.command, outcome.status, duration_ms)
    _emit_outcome(runtime, claim, outcome, status, duration_ms)
    if paused_task is not None:
        runtime.emit(TASK_PAUSED, {"task": paused_task.to_json()})
    if countdown is not None:
        return Decision("retry", countdown, summary)
    return Decision("failed" if outcome.status in ("failed", "timed_out") else "done", summary=summary)


def _write_outcome(
    runtime: WorkerRuntime,
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
    runtime: WorkerRuntime, claim: ClaimedExecution, outcome: Outcome, status: str, duration_ms: int
) -> None:
    """``completed``, or ``failed`` for every failed attempt (``final`` False when it will be retried)."""
    if outcome.status == "completed":
        execution = execution_json(claim, "completed", duration_ms=duration_ms, result=outcome.result)
        runtime.emit(TASK_EVENT, {"type": "completed", "execution": execution})
    elif outcome.status in ("failed", "timed_out"):
        execution = execution_json(claim, status, duration_ms=duration_ms, error=outcome.error)
        runtime.emit(TASK_EVENT, {"type": "failed", "final": status != "retrying", "execution": execution})


def execute(runtime: WorkerRuntime, execution_id: int, *, worker: str, rechecks: int = 0) -> Decision:
    """Run one attempt of ``execution_id`` as ``worker`` (``host:pid``); see the module docstring.

    One connection serves the attempt (claim, then outcome): :meth:`WorkerRuntime.hot_connection`. On
    PostgreSQL it autocommits and the thread keeps it for the next execution: the claim is one prepared
    statement that commits by itself, not durably (it turns synchronous_commit off for its own transaction,
    ``run_statements.pg_claim_returning``), and so is an outcome with nothing else to write: two round trips
    for a no-op execution.
    """
    with runtime.hot_connection() as connection:
        with contextlib.nullcontext() if autocommits(connection) else transaction(connection):
            claim = claim_execution(connection, execution_id, worker, stale_after=runtime.stale_after)
            status = None if claim is not None else execution_status(connection, execution_id)
        if claim is None:
            if status == "running" and rechecks < MAX_RECHECKS:
                wait_s = runtime.stale_after.total_seconds()
                summary = f"execution {execution_id} is running elsewhere; looking again in {wait_s:g} s"
                return Decision("recheck", wait_s, summary)
            state = f"is {status}" if status is not None else "does not exist"
            return Decision("noop", summary=f"nothing to do: execution {execution_id} {state}")
        # Every log record of this attempt (ours, the command's, Celery's) carries these fields.
        with bound_log_context(
            execution_id=execution_id, task_id=claim.task_id, attempt=claim.attempt, command=claim.command
        ):
            started = time.monotonic()
            buffer = LogBuffer(limit_bytes=runtime.settings.max_log_bytes, used_bytes=claim.log_bytes)
            if claim.took_over_from is not None:
                buffer.log(
                    "WARNING",
                    f"worker {claim.took_over_from} stopped heart-beating; "
                    f"attempt {claim.attempt} takes over",
                )
            if not claim.task_found:
                buffer.log("WARNING", "the task was deleted before this execution ran; cancelled")
                cancelled = Outcome("cancelled", error="cancelled: the task was deleted")
                return _record(runtime, connection, claim, cancelled, buffer, 0)
            runtime.emit(TASK_EVENT, {"type": "executed", "execution": execution_json(claim, "running")})
            outcome = _attempt(runtime, claim, buffer)
            duration_ms = int((time.monotonic() - started) * 1000)
            level = logging.WARNING if outcome.status in ("failed", "timed_out") else logging.INFO
            logger.log(level, "attempt ended %s after %d ms", outcome.status, duration_ms)
            return _record(runtime, connection, claim, outcome, buffer, duration_ms)


def record_hard_timeout(
    runtime: WorkerRuntime, execution_id: int, *, nodename: str, limit_s: float | None
) -> Dispatch | None:
    """Record an attempt whose process the hard time limit killed (called in the worker's main process).

    Only an execution this worker node holds is touched. Returns the dispatch to publish when the execution
    retries, else None.
    """
    with runtime.engine.connect() as connection:
        with transaction(connection):
            claim = running_claim(connection, execution_id)
            if claim is None or not claim.worker.startswith(nodename + ":"):
                return None
            now = db_now(connection)
        started = claim.started_at
        duration_ms = 0 if started is None else max(int((now - started).total_seconds() * 1000), 0)
        limit = f" ({limit_s:g} s)" if limit_s else ""
        outcome = Outcome("timed_out", error=f"timed out: killed at the hard time limit{limit}")
        buffer = LogBuffer(limit_bytes=runtime.settings.max_log_bytes)
        # In the worker's main process: never block it on the database (the sweep reaps the row instead).
        decision = _record(runtime, connection, claim, outcome, buffer, duration_ms, retry_s=0)
    if decision.kind != "retry":
        return None
    timeout_s = (claim.timeout_ms or runtime.settings.task_timeout) / 1000
    return Dispatch(
        execution_id=claim.id,
        queue=claim.queue,
        command=claim.command,
        task_name=claim.task_name,
        countdown_s=decision.countdown_s,
        timeout_s=timeout_s,
    )
