"""Built-in commands.

The test helpers (``test:echo``, ``test:sleep``, ``test:fail``) need nothing and are always registered by
:func:`workers.commands.load_registry`.

``system:health`` and ``scheduler:cleanup`` need the database and the broker, which this module must not
import (it is loaded by the CLI and the service too). Their names and descriptions live here; their
implementations are passed in by whoever owns a database and a broker::

    registry = load_registry(settings, extra=runtime_commands(health=check_health, cleanup=run_cleanup))

A registry built without them does not know those two names.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, NoReturn

from scheduler.errors import InvalidField
from scheduler.redaction import redact
from workers.commands import CommandContext, CommandRegistry, PythonCommand

__all__ = [
    "CLEANUP_COMMAND",
    "HEALTH_COMMAND",
    "RUNTIME_DESCRIPTIONS",
    "echo",
    "fail",
    "register_builtins",
    "runtime_commands",
    "sleep",
]

HEALTH_COMMAND = "system:health"
CLEANUP_COMMAND = "scheduler:cleanup"
RUNTIME_DESCRIPTIONS = {
    HEALTH_COMMAND: "Check the database, the broker and the planner lease; fail when one is unhealthy.",
    CLEANUP_COMMAND: "Delete finished executions and their logs older than historyRetentionDays.",
}

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


def register_builtins(registry: CommandRegistry) -> None:
    """Register the commands that need nothing: the test helpers."""
    for name, func, description in BUILTINS:
        registry.register(name, func, description)


def runtime_commands(
    *, health: PythonCommand | None = None, cleanup: PythonCommand | None = None
) -> dict[str, tuple[PythonCommand, str]]:
    """The ``extra`` mapping for :func:`workers.commands.load_registry` with the runtime built-ins' real names
    and descriptions (only those given)."""
    extra: dict[str, tuple[PythonCommand, str]] = {}
    if health is not None:
        extra[HEALTH_COMMAND] = (health, RUNTIME_DESCRIPTIONS[HEALTH_COMMAND])
    if cleanup is not None:
        extra[CLEANUP_COMMAND] = (cleanup, RUNTIME_DESCRIPTIONS[CLEANUP_COMMAND])
    return extra
