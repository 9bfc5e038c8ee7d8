"""What the runner of :mod:`scheduler.execution.runner` needs from the process that runs executions, and what
that process may add to it; a Celery worker provides both (``workers.runtime``, ``workers.runner``)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, Engine

from scheduler.commands.registry import CommandRegistry
from scheduler.settings import Settings


class ExecutionRuntime(Protocol):
    """The per-process state the runner uses: settings, database, command registry, event bus."""

    @property
    def settings(self) -> Settings: ...

    @property
    def engine(self) -> Engine: ...

    @property
    def registry(self) -> CommandRegistry: ...

    @property
    def stale_after(self) -> timedelta:
        """How old a running execution's heartbeat is when its worker is presumed dead."""
        ...

    def hot_connection(self) -> AbstractContextManager[Connection]:
        """The connection of one attempt (its claim and its outcome)."""
        ...

    def emit(self, event: str, payload: dict[str, Any]) -> None:
        """Emit an event; never raises."""
        ...


@dataclass(frozen=True, slots=True)
class ExecutionHooks:
    """What the process adds: ``time_limit_errors``, exceptions that also mean the attempt's time limit passed
    (besides the watchdog's); ``recorded(command, status, duration_ms)``, called once per stored outcome."""

    time_limit_errors: tuple[type[BaseException], ...] = ()
    recorded: Callable[[str, str, int], None] | None = None


NO_HOOKS = ExecutionHooks()
