"""The spec's events, in process through blinker.

Handlers get one argument: a JSON-able payload dict (``{"task": {...}}`` for task events;
``{"type": "executed"|"completed"|"failed", "execution": {...}}`` for ``task-event``). Data values whose keys
look like secrets are redacted before a payload is emitted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from blinker import Namespace

TASK_CREATED: Final = "task-created"
TASK_UPDATED: Final = "task-updated"
TASK_DELETED: Final = "task-deleted"
TASK_PAUSED: Final = "task-paused"
TASK_RESUMED: Final = "task-resumed"
TASK_EVENT: Final = "task-event"
EVENT_NAMES: Final = (TASK_CREATED, TASK_UPDATED, TASK_DELETED, TASK_PAUSED, TASK_RESUMED, TASK_EVENT)

Handler = Callable[[dict[str, Any]], None]


class EventBus:
    """One bus per service instance, so two services in one process do not hear each other."""

    def __init__(self) -> None:
        self._signals = Namespace()
        self._receivers: list[Callable[..., None]] = []

    def on(self, event: str, handler: Handler) -> None:
        """Call ``handler(payload)`` on every ``event``; raise ValueError for an unknown event name."""
        if event not in EVENT_NAMES:
            raise ValueError(f"unknown event {event!r}; one of {', '.join(EVENT_NAMES)}")

        def receiver(_sender: object, payload: dict[str, Any]) -> None:
            handler(payload)

        self._receivers.append(receiver)  # blinker holds receivers weakly; keep them alive with the bus
        self._signals.signal(event).connect(receiver, weak=False)

    def emit(self, event: str, payload: dict[str, Any]) -> None:
        self._signals.signal(event).send(self, payload=payload)
