"""What the processes that publish executions and those that run them agree on: the name of the one task on
the broker and the time limits of an attempt.

The Celery side (``workers.celery_config``, ``workers.publisher``) and the core's runner
(``scheduler.execution``) read them here, so neither depends on the other for them.
"""

from __future__ import annotations

TASK_NAME = "scheduler.execute"

# Retries wait in the worker (an ETA message) for at most this long: well under the broker's visibility
# timeout, so a waiting retry is never handed to a second worker.
RETRY_COUNTDOWN_CAP_S = 15 * 60
# The hard limit (Celery's, in each message) kills the process this long after the timeout, which the worker's
# watchdog enforces by itself (scheduler.execution.watchdog): the backstop for a command that ignores the
# interruption.
HARD_LIMIT_GRACE_MIN_S = 2.0
HARD_LIMIT_GRACE_MAX_S = 30.0


def hard_limit_grace_s(timeout_s: float) -> float:
    """Seconds between the timeout (raised in the command by the watchdog) and the hard limit (the process is
    killed)."""
    return min(max(timeout_s * 0.1, HARD_LIMIT_GRACE_MIN_S), HARD_LIMIT_GRACE_MAX_S)
