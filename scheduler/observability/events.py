"""The spec's events, in process through blinker.

Handlers get one argument: a JSON-able payload dict (``{"task": {...}}`` for task events;
``{"type": "executed"|"completed"|"failed", "execution": {...}}`` for ``task-event``; ``{"incident": {...}}``
for ``alert-opened`` and ``alert-resolved``). The bus hands them a
copy of the emitted payload with the values of secret-looking keys redacted
(:func:`scheduler.redaction.redact`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from scheduler.redaction import redact

if TYPE_CHECKING:
    from blinker import Namespace

TASK_CREATED: Final = "task-created"
TASK_UPDATED: Final = "task-updated"
TASK_DELETED: Final = "task-deleted"
TASK_PAUSED: Final = "task-paused"
TASK_RESUMED: Final = "task-resumed"
TASK_EVENT: Final = "task-event"
ALERT_OPENED: Final = "alert-opened"
ALERT_RESOLVED: Final = "alert-resolved"
EVENT_NAMES: Final = (
    TASK_CREATED,
    TASK_UPDATED,
    TASK_DELETED,
    TASK_PAUSED,
    TASK_RESUMED,
    TASK_EVENT,
    ALERT_OPENED,
    ALERT_RESOLVED,
)

Handler = Callable[[dict[str, Any]], None]


class EventBus:
    """One bus per service instance, so two services in one process do not hear each other.

    Each event is a blinker signal. :meth:`emit` redacts the payload once (only when the event has handlers)
    and calls the handlers in the order they were added, in the emitting thread; they share that copy (and
    must not change it). A handler's exception propagates to the caller of :meth:`emit`, and the handlers
    after it are not called.
    """

    def __init__(self) -> None:
        # Made by the first handler added (blinker is imported then): a bus nobody listens to (a read verb's,
        # without a Redis broker) emits nothing and needs none.
        self._signals: Namespace | None = None

    def on(self, event: str, handler: Handler) -> None:
        """Call ``handler(payload)`` on every ``event``; raise ValueError for an unknown event name."""
        if event not in EVENT_NAMES:
            raise ValueError(f"unknown event {event!r}; one of {', '.join(EVENT_NAMES)}")

        def receiver(_sender: object, payload: dict[str, Any]) -> None:
            handler(payload)

        if self._signals is None:
            from blinker import Namespace

            self._signals = Namespace()
        self._signals.signal(event).connect(receiver, weak=False)  # held strongly, as long as the bus

    def emit(self, event: str, payload: dict[str, Any]) -> None:
        if self._signals is None:  # no handler was ever added
            return
        signal = self._signals.signal(event)
        if signal.receivers:
            signal.send(self, payload=redact(payload))
