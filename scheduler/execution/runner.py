"""One attempt of one execution: claim it, run its command under the watchdog, record the outcome, emit.

:func:`execute` returns a :class:`~scheduler.execution.outcomes.Decision` for the process that runs
executions (the Celery task, ``workers.tasks``): ``done`` (the attempt's outcome, ``completed`` or
``cancelled``, is recorded), ``failed`` (its last attempt failed or timed out, or the claim was taken from us
while it ran: reaped as lost, cancelled, taken over; nothing recorded), ``noop`` (a duplicate delivery found
nothing to do), ``retry`` (the attempt failed and attempts remain: the row is already ``retrying``, the
caller publishes the retry), or ``recheck`` (the execution is ``running`` on another worker with a fresh
heartbeat: look again once it could be stale, so an execution whose process died is taken over without
waiting for the planner's sweep). Each carries a one-line summary (``attempt 2 of 3 failed: RuntimeError:
disk full``) for the worker's log and Flower.

What an attempt ends in is :mod:`scheduler.execution.attempt`'s; ``timed_out`` counts as a failed attempt.
Retry delay (:func:`~scheduler.execution.outcomes.retry_delay_s`): ``retry_delay_ms * retry_backoff **
(attempt - 1)``, +-15 % jitter, capped at :data:`scheduler.limits.RETRY_COUNTDOWN_CAP_S` (15 min) so a
waiting retry never outlives the broker's visibility timeout. Storing the outcome:
:mod:`scheduler.execution.recording`.

Nothing here knows Celery: the process passes its runtime
(:class:`~scheduler.execution.host.ExecutionRuntime`) and what it adds
(:class:`~scheduler.execution.host.ExecutionHooks`).
"""

from __future__ import annotations

import contextlib
import logging
import time

from scheduler.execution.attempt import run_attempt
from scheduler.execution.capture import LogBuffer
from scheduler.execution.host import NO_HOOKS, ExecutionHooks, ExecutionRuntime
from scheduler.execution.outcomes import Decision, Outcome, execution_json
from scheduler.execution.recording import record_outcome
from scheduler.observability.events import TASK_EVENT
from scheduler.observability.log_setup import bound_log_context
from scheduler.records import Dispatch
from scheduler.storage.clock import db_now
from scheduler.storage.db import autocommits
from scheduler.storage.runs import claim_execution, execution_status, running_claim
from scheduler.storage.transactions import write_transaction

logger = logging.getLogger(__name__)

MAX_RECHECKS = 3


def execute(
    runtime: ExecutionRuntime,
    execution_id: int,
    *,
    worker: str,
    rechecks: int = 0,
    hooks: ExecutionHooks = NO_HOOKS,
) -> Decision:
    """Run one attempt of ``execution_id`` as ``worker`` (``host:pid``); see the module docstring.

    One connection serves the attempt (claim, then outcome): ``runtime.hot_connection()``. On PostgreSQL a
    worker's autocommits and the thread keeps it for the next execution (and with it what psycopg 3 prepared
    on it, :func:`scheduler.storage.db.make_engine`): the claim is one statement that commits by itself, not
    durably (it turns synchronous_commit off for its own transaction, ``run_statements.pg_claim_returning``),
    and so is an outcome with nothing else to write: two round trips for a no-op execution.
    """
    with runtime.hot_connection() as connection:
        with contextlib.nullcontext() if autocommits(connection) else write_transaction(connection):
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
                return record_outcome(runtime, connection, claim, cancelled, buffer, 0, hooks)
            runtime.emit(TASK_EVENT, {"type": "executed", "execution": execution_json(claim, "running")})
            outcome = run_attempt(runtime, claim, buffer, hooks)
            duration_ms = int((time.monotonic() - started) * 1000)
            level = logging.WARNING if outcome.status in ("failed", "timed_out") else logging.INFO
            logger.log(level, "attempt ended %s after %d ms", outcome.status, duration_ms)
            return record_outcome(runtime, connection, claim, outcome, buffer, duration_ms, hooks)


def record_hard_timeout(
    runtime: ExecutionRuntime,
    execution_id: int,
    *,
    nodename: str,
    limit_s: float | None,
    hooks: ExecutionHooks = NO_HOOKS,
) -> Dispatch | None:
    """Record an attempt whose process the hard time limit killed (called in the worker's main process).

    Only an execution this worker node holds is touched. Returns the dispatch to publish when the execution
    retries, else None.
    """
    with runtime.engine.connect() as connection:
        with write_transaction(connection):
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
        decision = record_outcome(runtime, connection, claim, outcome, buffer, duration_ms, hooks, retry_s=0)
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
