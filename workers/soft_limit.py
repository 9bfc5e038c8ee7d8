"""Celery's soft time limit, made to interrupt only a running command.

Messages carry no soft limit (the watchdog of :mod:`scheduler.execution.watchdog` keeps the deadline), but a
worker may still be given one (``--soft-time-limit``, a message of an older publisher). Billiard enforces it
by a ``SIGUSR1`` whose handler raises ``SoftTimeLimitExceeded`` wherever the pool process happens to be,
often while it writes an outcome. :func:`guard_celery_soft_limit` replaces that handler by one that raises
only while a command runs; the runner records the exception as the time limit passing.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

from billiard.pool import SIG_SOFT_TIMEOUT, soft_timeout_sighandler  # type: ignore[import-untyped]
from celery.exceptions import SoftTimeLimitExceeded

from scheduler.execution.watchdog import command_running


def _on_celery_soft_limit(_signum: int, _frame: FrameType | None) -> None:
    if command_running():  # the command runs: interrupt it; else ignore the signal
        raise SoftTimeLimitExceeded()


def guard_celery_soft_limit() -> None:
    """In a prefork pool process, replace billiard's soft-time-limit handler by one that raises only while a
    command runs under a watchdog (idempotent; anywhere else it changes nothing)."""
    if (
        SIG_SOFT_TIMEOUT is not None
        and threading.current_thread() is threading.main_thread()
        and signal.getsignal(SIG_SOFT_TIMEOUT) is soft_timeout_sighandler
    ):
        signal.signal(SIG_SOFT_TIMEOUT, _on_celery_soft_limit)
