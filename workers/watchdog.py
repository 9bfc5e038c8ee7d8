"""The watchdog of a running command: heartbeat, log flushing, soft deadline and cancellation.

While a command runs, a daemon thread calls ``beat`` every heartbeat interval (the caller stamps
``heartbeat_at`` and stores the log lines gathered so far, so ``run --follow`` sees them while it runs). When
``beat`` reports that the execution is no longer this worker's claim (cancelled by ``replace``, marked lost,
taken over), or when the soft deadline passes, the watchdog interrupts the command's thread with
:class:`ExecutionCancelled` or :class:`ExecutionTimedOut`.

How the command thread is interrupted: in the main thread (a prefork pool process, ``solo``) by a real
signal, ``SIGUSR2`` sent with ``pthread_kill``, whose handler raises; a signal also interrupts a blocking
``select`` or ``sleep``. Any other thread (``threads`` pool) gets an asynchronous exception, which takes
effect at its next Python instruction. Celery's own soft limit (prefork only) usually fires first; this is the
same limit for every pool and the fallback when a message carries no limit. Neither stops a command stuck in
C code: only Celery's hard limit (prefork) does, by killing the process.

The watchdog threads are reused: a process keeps the threads of finished executions idle and hands the next
execution one of them, so an execution does not pay for starting and joining a thread (about as much as its
claim statement). Each running execution still has a thread of its own.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType

from scheduler.repository.runs import PendingLog
from workers.capture import LogBuffer

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
_current: Watchdog | None = None  # the armed watchdog of the main thread, read by the signal handler


def _on_signal(_signum: int, _frame: FrameType | None) -> None:
    watchdog = _current
    if watchdog is not None:
        watchdog.raise_if_fired()


class Watchdog:
    def __init__(self, *, beat: Beat, buffer: LogBuffer, interval_s: float, deadline: float | None) -> None:
        self._beat = beat
        self._buffer = buffer
        self._interval = interval_s
        self._deadline = deadline
        self._lock = threading.RLock()  # the signal handler may run while the main thread holds it
        self._armed = False
        self._busy = False  # the loop is beating or firing (see __exit__)
        self._released = False  # __exit__ gave the runner back itself
        self._fired: type[ExecutionInterrupted] | None = None
        self._raised = False
        self._stop = threading.Event()
        self._done = threading.Event()
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
        self._runner = _Runner.take()
        self._runner.run(self)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        global _current
        with self._lock:
            self._armed = False
            busy = self._busy
            # Decided with the disarming: the loop sees one or the other, so the runner is given back once.
            self._released = not busy and self._runner is not None
        if self._in_main:
            _current = None
        elif self._fired is not None:
            _async_raise(self._target, None)  # clear an exception that was sent but not yet raised
        self._stop.set()
        if self._runner is not None:
            # Disarmed, the loop does nothing more once it wakes; wait only for a beat (or an interrupt) it
            # is in the middle of, so none can follow this exit. Not waiting otherwise spares every short
            # execution a hand-over between threads.
            if busy:
                self._done.wait()
            else:  # idle again as soon as this loop returns: the next execution may queue its own loop
                self._runner.release()
            self._runner = None

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

    # ------------------------------------------------------------------------------- watchdog thread side

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

    def _loop(self) -> None:
        next_beat = time.monotonic() + self._interval
        while True:
            now = time.monotonic()
            wake = next_beat
            if self._deadline is not None and self._fired is None:
                wake = min(wake, self._deadline)
            if self._stop.wait(max(wake - now, 0.0)):
                return
            with self._lock:
                if not self._armed:  # the command finished meanwhile (its __exit__ did not wait for us)
                    return
                self._busy = True
            try:
                next_beat = self._step(next_beat)
            finally:
                with self._lock:
                    self._busy = False

    def _step(self, next_beat: float) -> float:
        """Fire at the deadline, beat when due; the next beat's time."""
        now = time.monotonic()
        if self._deadline is not None and now >= self._deadline:
            self._fire(ExecutionTimedOut)
        if now >= next_beat:
            next_beat = now + self._interval
            lines = self._buffer.drain()
            try:
                still_ours = self._beat(lines)
            except Exception as error:  # a database hiccup must not stop the command
                logger.warning("heartbeat failed: %s", error)
                self._buffer.restore(lines)
                return next_beat
            if not still_ours:
                self._fire(ExecutionCancelled)
        return next_beat


class _Runner:
    """A reusable watchdog thread: runs one :class:`Watchdog`'s loop at a time, then waits for the next."""

    _idle: list[_Runner] = []
    _idle_pid = -1
    _idle_lock = threading.Lock()

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Watchdog] = queue.SimpleQueue()
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

    def run(self, watchdog: Watchdog) -> None:
        self._jobs.put(watchdog)

    def release(self) -> None:
        """Back among the idle runners (its queued loops run one after the other)."""
        with _Runner._idle_lock:
            if _Runner._idle_pid == os.getpid():
                _Runner._idle.append(self)

    def _serve(self) -> None:
        while True:
            watchdog = self._jobs.get()
            try:
                watchdog._loop()
            except Exception:  # never: _loop handles its beat's errors; keep the thread usable anyway
                logger.exception("watchdog loop failed")
            finally:
                if not watchdog._released:
                    self.release()
                watchdog._done.set()


def _async_raise(thread_id: int, kind: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(kind) if kind else None
    )
