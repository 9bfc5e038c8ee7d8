"""What an attempt ended in, and what the runner makes of it: pure functions, no I/O.

An :class:`Outcome` is the attempt's (``completed``, ``failed``, ``timed_out``, ``cancelled``); the status
recorded for it (:func:`next_status`) is ``retrying`` when it failed or timed out, may be retried and
attempts remain. A :class:`Decision` is what the delivery did, for the process that runs executions (the
Celery task maps it to a task state).
"""

from __future__ import annotations

import json
import random
import traceback
from dataclasses import dataclass
from typing import Any, Literal

from scheduler.limits import RETRY_COUNTDOWN_CAP_S
from scheduler.records import ClaimedExecution
from scheduler.storage.run_statements import OutcomeStatus

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


def next_status(claim: ClaimedExecution, outcome: Outcome) -> tuple[OutcomeStatus, float | None]:
    """The status to record for this attempt's outcome, and the retry countdown (None: no retry)."""
    if outcome.status in ("failed", "timed_out") and outcome.retryable and claim.attempt < claim.max_attempts:
        return "retrying", retry_delay_s(claim.retry_delay_ms, claim.retry_backoff, claim.attempt)
    return outcome.status, None


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
