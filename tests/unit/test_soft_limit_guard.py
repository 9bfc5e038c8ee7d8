"""Celery's soft time limit (billiard's SIGUSR1 in a pool process) interrupts a running command only."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
from billiard.pool import SIG_SOFT_TIMEOUT, soft_timeout_sighandler
from celery.exceptions import SoftTimeLimitExceeded

from scheduler.execution.capture import LogBuffer
from scheduler.execution.watchdog import Watchdog
from workers.soft_limit import guard_celery_soft_limit


@pytest.fixture
def pool_process_signals() -> Iterator[None]:
    """The main thread's SIGUSR1 as billiard sets it in a pool process; restored afterwards."""
    previous = signal.signal(SIG_SOFT_TIMEOUT, soft_timeout_sighandler)
    try:
        yield
    finally:
        signal.signal(SIG_SOFT_TIMEOUT, previous)


def _watchdog() -> Watchdog:
    return Watchdog(beat=lambda _: True, buffer=LogBuffer(limit_bytes=4096), interval_s=10, deadline=None)


def _soft_limit_now() -> None:
    os.kill(os.getpid(), SIG_SOFT_TIMEOUT)
    time.sleep(0.05)  # the handler runs here, in the main thread


def test_a_soft_limit_outside_a_command_is_ignored_once_guarded(pool_process_signals: None) -> None:
    with pytest.raises(SoftTimeLimitExceeded):  # billiard's handler raises wherever the process is
        _soft_limit_now()
    guard_celery_soft_limit()
    guard_celery_soft_limit()  # idempotent
    _soft_limit_now()  # between commands: the outcome's bookkeeping is never interrupted
    with _watchdog():
        pass
    _soft_limit_now()  # after a command, too


def test_a_soft_limit_during_a_command_still_interrupts_it(pool_process_signals: None) -> None:
    guard_celery_soft_limit()
    with pytest.raises(SoftTimeLimitExceeded), _watchdog():
        _soft_limit_now()
        raise AssertionError("the command went on")


def test_the_guard_leaves_any_other_handler_alone() -> None:
    previous = signal.getsignal(SIG_SOFT_TIMEOUT)
    guard_celery_soft_limit()  # e.g. Celery's own SIGUSR1 handler in a solo worker: not billiard's
    assert signal.getsignal(SIG_SOFT_TIMEOUT) is previous
