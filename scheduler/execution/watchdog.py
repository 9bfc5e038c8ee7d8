"""The watchdog of a running command: heartbeat, log flushing, soft deadline and cancellation.

While a command runs, a daemon thread calls ``beat`` every heartbeat interval (the caller stamps
``heartbeat_at`` and stores the log lines gathered so far, so ``run --follow`` sees them while it runs). When
``beat`` reports that the execution is no longer this worker's claim (cancelled by ``replace``, marked lost,
taken over), or when the soft deadline passes, the watchdog interrupts the command's thread with
:class:`ExecutionCancelled` or :class:`ExecutionTimedOut`.

How the command thread is interrupted: in the main thread (a prefork pool process, ``solo``) by a real
signal, ``SIGUSR2`` sent with ``pthread_kill``, whose handler raises; a signal also interrupts a blocking
``select`` or ``sleep``. Any other thread (``threads`` pool) gets an asynchronous exception, which takes
effect at its next Python instruction. Nothing is raised before the watchdog is armed or once it is being
disarmed (``__exit__`` first unsets what the handler reads), so the interruption lands in the command, never
in the claim or the outcome's bookkeeping around it.

The deadline is this watchdog's alone, the same for every pool: messages carry no Celery soft limit.
Billiard enforces that one by a ``SIGUSR1`` that raises ``SoftTimeLimitExceeded`` wherever the pool process
happens to be, up to a second late (its timeout thread looks once a second): often in the middle of writing
the outcome, whose transaction then never commits (the execution ended ``lost`` when its heartbeat went
stale). A worker may still ask for one (``--soft-time-limit``, a message of an older publisher):
``workers.soft_limit`` makes it interrupt only a running command (:func:`command_running`). A command
stuck in C code ignores every exception: Celery's hard limit (prefork), a grace after the deadline, kills its
process (``ExecuteTask.on_failure`` records it).

The watchdog threads (runners) are reused: a process keeps one per execution running at the same time, so
one slow beat delays no other execution's deadline. Most executions end long before their first beat, so
arming and disarming cost no thread wake-up: arming records the watchdog on an idle runner and notifies it
only if the watchdog is due (first beat or deadline, whichever is sooner) before the runner would wake
anyway; disarming takes the watchdog off its runner and makes the runner idle again, waiting first only for
a beat (or an interrupt) in progress, so none follows the exit. A runner wakes at its watchdog's due time (a
stale one, its watchdog gone, costs one wake-up) and, with nothing to watch, once every :data:`IDLE_WAKE_S`:
so under load a runner wakes about once a second, not once per execution.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType

from scheduler.execution.capture import LogBuffer
from scheduler.records import PendingLog

logger = logging.getLogger(__name__)


class ExecutionInterrupted(BaseException):
    """The watchdog stopped the command (BaseException: a command's ``except Exception`` must not eat it)."""


class ExecutionTimedOut(ExecutionInterrupted):
    """The command ran past its time limit."""


class ExecutionCancelled(ExecutionInterrupted):
    """The execution is no longer this worker's claim (cancelled, lost or taken over)."""


Beat = Callable[[list[PendingLog]], bool]

# SIGUSR2: unused in Celery's pool processes (billiard's soft time limit is SIGUSR1) and, unlike SIGALRM, not
# taken by alarm() in commands or by pytest-timeout.
_SIGNAL = signal.SIGUSR2
IDLE_WAKE_S = 1.0  # an idle runner looks for work this often (see _Runner._serve)
_current: Watchdog | None = None  # the armed watchdog of the main thread, read by the signal handler


def _on_signal(_signum: int, _frame: FrameType | None) -> None:
    watchdog = _current
    if watchdog is not None:
        watchdog.raise_if_fired()


def command_running() -> bool:
    """True while a command of the main thread runs under an armed :class:`Watchdog`: what a signal handler
    may interrupt (an exception raised anywhere else would land in the claim or the outcome's bookkeeping)."""
    watchdog = _current
    return watchdog is not None and watchdog.armed


class Watchdog:
    def __init__(self, *, beat: Beat, buffer: LogBuffer, interval_s: float, deadline: float | None) -> None:
        self._beat = beat
        self._buffer = buffer
        self._interval = interval_s
        self._deadline = deadline
        self._next_beat = 0.0  # set when armed; then only the runner's thread changes it
        self._lock = threading.RLock()  # the signal handler may run while the main thread holds it
        self._armed = False
        self._fired: type[ExecutionInterrupted] | None = None
        self._raised = False
        self._runner: _Runner | None = None
        self._target = threading.get_ident()
        self._in_main = threading.current_thread() is threading.main_thread()

    # --------------------------------------------------------------------------------- command thread side

    def __enter__(self) -> Watchdog:
        global _current
        if self._in_main:
            if signal.getsignal(_SIGNAL) is not _on_signal:
                # Left in place afterwards: a late signal must never meet SIG_DFL (which would kill the
                # process); when no watchdog is armed the handler does nothing.
                signal.signal(_SIGNAL, _on_signal)
            _current = self
        with self._lock:
            self._armed = True
        self._next_beat = time.monotonic() + self._interval
        self._runner = _Runner.take()
        self._runner.watch(self)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        global _current
        if self._in_main:
            _current = None  # first: from here on, a signal raises nothing
        with self._lock:
            self._armed = False  # from here on, no interrupt is sent
        if not self._in_main and self._fired is not None:
            _async_raise(self._target, None)  # clear an exception that was sent but not yet raised
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.unwatch()

    def raise_if_fired(self) -> None:
        with self._lock:
            fire = self._armed and self._fired is not None and not self._raised
            if fire:
                self._raised = True
        if fire and self._fired is not None:
            raise self._fired()

    @property
    def fired(self) -> type[ExecutionInterrupted] | None:
        return self._fired

    @property
    def armed(self) -> bool:
        return self._armed

    # ------------------------------------------------------------------------------- watchdog thread side

    def _due(self) -> float:
        """When the runner must next call :meth:`_step`: the next beat, or the deadline if sooner."""
        if self._deadline is not None and self._fired is None:
            return min(self._next_beat, self._deadline)
        return self._next_beat

    def _fire(self, kind: type[ExecutionInterrupted]) -> None:
        with self._lock:
            if not self._armed or self._fired is not None:
                return
            self._fired = kind
            if self._in_main:
                signal.pthread_kill(self._target, _SIGNAL)
            else:
                self._raised = True
                _async_raise(self._target, kind)

    def _step(self) -> None:
        """Fire at the deadline, beat when due (and schedule the next beat)."""
        now = time.monotonic()
        if self._deadline is not None and now >= self._deadline:
            self._fire(ExecutionTimedOut)
        if now >= self._next_beat:
            self._next_beat = now + self._interval
            lines = self._buffer.drain()
            try:
                still_ours = self._beat(lines)
            except Exception as error:  # a database hiccup must not stop the command
                logger.warning("heartbeat failed: %s", error)
                self._buffer.restore(lines)
                return
            if not still_ours:
                self._fire(ExecutionCancelled)


class _Runner:
    """A reusable watchdog thread: watches one :class:`Watchdog` at a time, idle in between."""

    _idle: list[_Runner] = []
    _idle_pid = -1
    _idle_lock = threading.Lock()

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        # Guarded by _cond:
        self._watchdog: Watchdog | None = None
        self._busy = False  # the thread is in its watchdog's _step (beating or firing)
        self._wake_at = -math.inf  # when the thread next looks at its watchdog by itself (awake: -inf)
        thread = threading.Thread(target=self._serve, name="execution-watchdog", daemon=True)
        thread.start()

    @classmethod
    def take(cls) -> _Runner:
        """An idle runner of this process, or a new one (threads do not survive a fork)."""
        with cls._idle_lock:
            if cls._idle_pid != os.getpid():
                cls._idle, cls._idle_pid = [], os.getpid()
            if cls._idle:
                return cls._idle.pop()
        return cls()

    def watch(self, watchdog: Watchdog) -> None:
        """Start watching (the thread is woken only if it would otherwise look too late)."""
        due = watchdog._due()
        with self._cond:
            self._watchdog = watchdog
            if due < self._wake_at:
                self._cond.notify()

    def unwatch(self) -> None:
        """Stop watching, once a step in progress has finished; then back among the idle runners."""
        with self._cond:
            while self._busy:
                self._cond.wait()
            self._watchdog = None
        with _Runner._idle_lock:
            if _Runner._idle_pid == os.getpid():
                _Runner._idle.append(self)

    def _serve(self) -> None:
        cond = self._cond
        with cond:
            while True:
                watchdog = self._watchdog
                if watchdog is not None and not watchdog._armed:  # exiting: never beat for it again
                    watchdog = None
                now = time.monotonic()
                # Idle, it still looks again after IDLE_WAKE_S: an execution armed meanwhile is then due
                # later than that, so arming it need not wake this thread (a runner that slept without
                # a timeout would be woken by every arm that follows an execution ended before it looked).
                due = watchdog._due() if watchdog is not None else now + IDLE_WAKE_S
                if watchdog is None or due > now:
                    self._wake_at = due
                    cond.wait(min(due - now, threading.TIMEOUT_MAX))
                    self._wake_at = -math.inf
                    continue
                self._busy = True
                cond.release()
                try:
                    watchdog._step()
                except Exception:  # never: _step handles its beat's errors; keep the thread usable anyway
                    logger.exception("watchdog step failed")
                finally:
                    cond.acquire()
                    self._busy = False
                    cond.notify_all()  # an unwatch waiting for this step


def _async_raise(thread_id: int, kind: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(kind) if kind else None
    )
