"""Clean-up nobody has to wait for: dropping a test's database (each DROP DATABASE waits for a checkpoint) and
the warm shutdown of its worker processes (2-4 s each) run in background threads while the next test runs.

Each test's resources are its own (its database, its queue, its process group), so finishing their clean-up
later changes nothing a later test sees. :func:`drain` waits for all of it; the root ``conftest.py`` calls it
when the session ends, so no database or process outlives the run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_pending: list[Future[Any]] = []


def later(job: Callable[..., Any], *args: Any) -> None:
    """Run ``job(*args)`` in a background thread; an error in it is raised by :func:`drain`."""
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="test-cleanup")
        _pending[:] = [future for future in _pending if not future.done() or future.exception() is not None]
        _pending.append(_executor.submit(job, *args))


def drain() -> None:
    """Wait for every job handed to :func:`later`; raise the first error one of them raised."""
    global _executor
    with _lock:
        executor, _executor = _executor, None
        pending = list(_pending)
        _pending.clear()
    if executor is not None:
        executor.shutdown(wait=True)
    for future in pending:
        future.result()
