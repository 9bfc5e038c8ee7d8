"""Wake-ups of the live tails from the deployment's events on Redis.

Workers publish a ``task-event`` when an execution starts running and when an attempt completes or fails
(``workers.remote_events``). A thread follows that channel and wakes the tails of that execution at once,
so a status change or the end shows without waiting for the next poll. Log lines themselves are not events:
the tail reads them from the database (:mod:`web.tail`). Without Redis (the embedded default) there is no
channel and the tails poll alone.

The source is injected (``scheduler:web`` passes ``workers.remote_events.listen`` on the deployment's
channel), so this package imports no broker client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

logger = logging.getLogger(__name__)

EventSource = Callable[[threading.Event], Iterator[dict[str, Any]]]
RETRY_S = 5.0


class Wakeups:
    """Execution id -> the asyncio events of the tails that follow it."""

    def __init__(self, on_event: Callable[[], None] | None = None) -> None:
        self._on_event = on_event  # called for each execution event received (the console counts them)
        self._waiting: dict[int, set[asyncio.Event]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self.following = False  # True once a source is being followed (tails may then poll less often)

    @contextlib.contextmanager
    def watch(self, execution_id: int) -> Iterator[asyncio.Event]:
        self._loop = asyncio.get_running_loop()
        event = asyncio.Event()
        self._waiting.setdefault(execution_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._waiting.get(execution_id, set())
            waiting.discard(event)
            if not waiting:
                self._waiting.pop(execution_id, None)

    def wake(self, execution_id: int) -> None:
        """Called from the listener thread: set the events of this execution's tails in their loop."""
        loop = self._loop
        if loop is None or execution_id not in self._waiting:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed while shutting down
            loop.call_soon_threadsafe(self._set, execution_id)

    def _set(self, execution_id: int) -> None:
        for event in self._waiting.get(execution_id, ()):
            event.set()

    def follow(self, source: EventSource) -> None:
        """Follow ``source`` in a daemon thread until :meth:`close`; reconnect after an error."""
        self.following = True
        threading.Thread(target=self._follow, args=(source,), name="web-events", daemon=True).start()

    def _follow(self, source: EventSource) -> None:
        while not self._stop.is_set():
            try:
                for message in source(self._stop):
                    execution = message.get("execution") if message.get("event") == "task-event" else None
                    if isinstance(execution, dict) and isinstance(execution.get("id"), int):
                        if self._on_event is not None:
                            self._on_event()
                        self.wake(execution["id"])
            except Exception as error:  # Redis down or restarting: the tails keep polling meanwhile
                logger.warning(
                    "web console: events channel unavailable (%s); retrying in %.0f s", error, RETRY_S
                )
                self._stop.wait(RETRY_S)

    def close(self) -> None:
        self._stop.set()
