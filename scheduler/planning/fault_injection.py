"""Fault injection for ``tests/faults`` only: stop this process dead at a named point of a planner tick.

``SCHEDULER_TEST_FAULT=<point>`` SIGKILLs the process when it reaches ``<point>``; ``<point>:stop``
SIGSTOPs it instead (once: after SIGCONT it carries on). Points: ``before_commit`` (a planning transaction
wrote its executions but has not committed), ``after_commit`` (committed, nothing published yet),
``before_publish`` (the relay read pending executions and is about to publish them). Unset,
:func:`fault_point` is one dict lookup. Read here rather than in :mod:`scheduler.settings` so it never shows
up as a setting.
"""

from __future__ import annotations

import os
import signal

TEST_FAULT_ENV = "SCHEDULER_TEST_FAULT"
POINTS = frozenset({"before_commit", "after_commit", "before_publish"})

_fired: set[str] = set()


def fault_point(point: str) -> None:
    """Kill (or freeze) this process here when ``SCHEDULER_TEST_FAULT`` names ``point``."""
    wanted = os.environ.get(TEST_FAULT_ENV)
    if not wanted:
        return
    name, _, mode = wanted.partition(":")
    if name != point or point in _fired:
        return
    _fired.add(point)
    os.kill(os.getpid(), signal.SIGSTOP if mode == "stop" else signal.SIGKILL)
