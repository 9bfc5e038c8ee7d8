"""The attempt itself: run the claimed execution's command under the watchdog and say what it ended in.

Outcomes: the command's return value (as JSON; anything else as ``str``) -> ``completed``; an exception ->
``failed``, its ``error`` one line (exception and message), its traceback in the execution's logs; the
deadline (:class:`~scheduler.execution.watchdog.Watchdog`, or an exception the process names in
:attr:`~scheduler.execution.host.ExecutionHooks.time_limit_errors`) -> ``timed_out``; the claim taken from us
while it ran -> ``cancelled``; invalid input (a missing data key, an unknown command) fails at once without
retries, as a retry could not succeed.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from types import MappingProxyType
from typing import Any

from scheduler.commands.registry import CommandContext
from scheduler.errors import InvalidInput
from scheduler.execution.capture import LogBuffer, LogWriter
from scheduler.execution.host import ExecutionHooks, ExecutionRuntime
from scheduler.execution.outcomes import Outcome, failure, json_result, one_line
from scheduler.execution.sandbox import ExternalCommandFailed, ResourceLimits, run_external_command
from scheduler.execution.watchdog import ExecutionCancelled, ExecutionTimedOut, Watchdog
from scheduler.records import ClaimedExecution, PendingLog
from scheduler.redaction import redact
from scheduler.storage.runs import append_logs, heartbeat
from scheduler.storage.transactions import write_transaction


def _run_command(
    runtime: ExecutionRuntime, claim: ClaimedExecution, buffer: LogBuffer, deadline: float | None
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


def run_attempt(
    runtime: ExecutionRuntime, claim: ClaimedExecution, buffer: LogBuffer, hooks: ExecutionHooks
) -> Outcome:
    """Run the command of ``claim`` under a :class:`Watchdog` (heartbeats store the log lines gathered so far)
    and return its :class:`Outcome`; its log lines stay in ``buffer``."""
    timeout_s = (claim.timeout_ms or runtime.settings.task_timeout) / 1000
    deadline = time.monotonic() + timeout_s

    def beat(lines: list[PendingLog]) -> bool:
        with runtime.engine.connect() as connection, write_transaction(connection, durable=False):
            append_logs(connection, claim.id, claim.attempt, lines)
            return heartbeat(connection, claim.id, claim.worker)

    if claim.run_data is not None:  # what this run was given, for the history's logs (secrets hidden)
        shown = json.dumps(redact(claim.run_data), ensure_ascii=False, sort_keys=True)
        buffer.log("INFO", f"per-run data (merged over the task's data): {shown}")
    interval_s = runtime.settings.heartbeat_interval / 1000
    timed_out = Outcome("timed_out", error=f"timed out: the time limit of {timeout_s:g} s passed")
    time_limit: tuple[type[BaseException], ...] = (ExecutionTimedOut, *hooks.time_limit_errors)
    # Only the command runs inside this try: the watchdog interrupts nothing else (see
    # scheduler.execution.watchdog).
    try:
        with Watchdog(beat=beat, buffer=buffer, interval_s=interval_s, deadline=deadline):
            result = _run_command(runtime, claim, buffer, deadline)
        return Outcome("completed", result=json_result(result))
    except time_limit:
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
