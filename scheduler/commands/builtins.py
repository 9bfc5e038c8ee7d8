"""Built-in commands, registered first by :func:`scheduler.commands.loading.load_registry` in every process.

The test helpers (``test:echo``, ``test:sleep``, ``test:fail``) need nothing. ``system:health`` and
``scheduler:cleanup`` need the database and the broker, which the core must not import: they run on the
:class:`RuntimeCommands` the caller supplies (a worker its runtime; the CLI a :class:`DeferredRuntime`
that builds a worker runtime of its settings when one of them is first called). Every registry knows their
names, so a task may name them wherever it is created.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any, NoReturn, Protocol

from scheduler.commands.registry import CommandContext, CommandRegistry, PythonCommand
from scheduler.errors import InvalidField
from scheduler.redaction import redact

__all__ = [
    "BUILTIN_ORIGIN",
    "CLEANUP_COMMAND",
    "HEALTH_COMMAND",
    "DeferredRuntime",
    "RuntimeCommands",
    "echo",
    "fail",
    "register_builtins",
    "sleep",
]

HEALTH_COMMAND = "system:health"
CLEANUP_COMMAND = "scheduler:cleanup"
BUILTIN_ORIGIN = "as a built-in of systemprompt-scheduler"

SLEEP_STEP_S = 0.1
MAX_SLEEP_S = 86_400.0
_ECHO_LOG_CHARS = 1000


def echo(ctx: CommandContext) -> dict[str, Any]:
    """Return the task's data unchanged (logs it once, secret-looking values redacted)."""
    text = json.dumps(redact(dict(ctx.data)), sort_keys=True, default=str)  # the log shows no secrets
    if len(text) > _ECHO_LOG_CHARS:
        text = text[:_ECHO_LOG_CHARS] + f"... [{len(text) - _ECHO_LOG_CHARS} characters more]"
    ctx.log("INFO", f"echo: {text}")
    return dict(ctx.data)


def _seconds(ctx: CommandContext) -> float:
    value = ctx.data.get("seconds", 1)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidField("data", f"'seconds' of test:sleep must be a number, not {value!r}")
    if not 0 <= value <= MAX_SLEEP_S:
        raise InvalidField(
            "data", f"'seconds' of test:sleep must be between 0 and {MAX_SLEEP_S:g}, not {value}"
        )
    return float(value)


def sleep(ctx: CommandContext) -> dict[str, Any]:
    """Sleep data["seconds"] (default 1) in small steps; raise TimeoutError past the soft time limit."""
    seconds = _seconds(ctx)
    ctx.log("INFO", f"sleeping {seconds:g} s")
    start = time.monotonic()
    end = start + seconds
    next_report = start + 1.0
    while (now := time.monotonic()) < end:
        if ctx.deadline is not None and now >= ctx.deadline:
            ctx.log("WARNING", f"soft time limit reached after {now - start:.1f} s of {seconds:g} s")
            raise TimeoutError(f"test:sleep passed its soft time limit after {now - start:.1f} s")
        if now >= next_report:
            ctx.log("DEBUG", f"slept {now - start:.0f} s of {seconds:g} s")
            next_report += 1.0
        step = min(SLEEP_STEP_S, end - now)
        if ctx.deadline is not None:
            step = min(step, max(ctx.deadline - now, 0.0))
        time.sleep(step)
    ctx.log("INFO", f"slept {seconds:g} s")
    return {"slept": seconds}


def fail(ctx: CommandContext) -> NoReturn:
    """Raise RuntimeError with data["message"] (default "test failure")."""
    message = str(ctx.data.get("message", "test failure"))
    ctx.log("INFO", f"failing on purpose: {message}")
    raise RuntimeError(message)


BUILTINS: tuple[tuple[str, PythonCommand, str], ...] = (
    ("test:echo", echo, "Return the task's data unchanged (test helper)."),
    ("test:sleep", sleep, "Sleep data.seconds (default 1) seconds, logging progress (test helper)."),
    ("test:fail", fail, "Fail with data.message (default 'test failure') (test helper)."),
)


class RuntimeCommands(Protocol):
    """What ``system:health`` and ``scheduler:cleanup`` run on: a worker's runtime (``workers.runtime``)."""

    def check_health(self, ctx: CommandContext) -> dict[str, Any]: ...

    def run_cleanup(self, ctx: CommandContext) -> dict[str, Any]: ...


class DeferredRuntime:
    """Runtime commands built by ``factory`` when one of them is first called: a registry built outside a
    worker (the CLI's) runs them, and builds nothing (no database engine) until then."""

    def __init__(self, factory: Callable[[], RuntimeCommands]) -> None:
        self._factory = factory
        self._runtime: RuntimeCommands | None = None

    def _built(self) -> RuntimeCommands:
        if self._runtime is None:
            self._runtime = self._factory()
        return self._runtime

    def check_health(self, ctx: CommandContext) -> dict[str, Any]:
        return self._built().check_health(ctx)

    def run_cleanup(self, ctx: CommandContext) -> dict[str, Any]:
        return self._built().run_cleanup(ctx)


class _NoRuntime:
    """The runtime commands of a registry built without a runtime (the service's: it validates tasks and runs
    no command): known by name, failing when called."""

    def check_health(self, ctx: CommandContext) -> dict[str, Any]:
        raise RuntimeError(f"{HEALTH_COMMAND} runs in a worker; this command registry has no runtime")

    def run_cleanup(self, ctx: CommandContext) -> dict[str, Any]:
        raise RuntimeError(f"{CLEANUP_COMMAND} runs in a worker; this command registry has no runtime")


def register_builtins(registry: CommandRegistry, runtime: RuntimeCommands | None = None) -> None:
    """Register every built-in; ``system:health`` and ``scheduler:cleanup`` run on ``runtime`` (without one
    they are registered all the same, so tasks may name them, and fail when called)."""
    host = runtime if runtime is not None else _NoRuntime()
    runtime_commands: tuple[tuple[str, PythonCommand, str], ...] = (
        (
            HEALTH_COMMAND,
            host.check_health,
            "Check the database, the broker and the planner lease; fail when one is unhealthy.",
        ),
        (
            CLEANUP_COMMAND,
            host.run_cleanup,
            "Delete finished executions and their logs older than historyRetentionDays.",
        ),
    )
    for name, func, description in (*BUILTINS, *runtime_commands):
        registry.register(name, func, description, origin=BUILTIN_ORIGIN)
