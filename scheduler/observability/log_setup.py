"""One logging set-up for planners, workers and the CLI: :func:`configure_logging`, :func:`bound_log_context`.

``SCHEDULER_LOG_FORMAT=text`` (the default) prints lines for people::

    2026-03-28T01:00:00.123Z INFO    workers.runner: attempt failed [task_id=3 execution_id=41 attempt=2]

``SCHEDULER_LOG_FORMAT=json`` prints one JSON object per line for log shippers::

    {"time": "2026-03-28T01:00:00.123Z", "level": "INFO", "logger": "workers.runner",
     "message": "attempt failed", "task_id": 3, "execution_id": 41, "attempt": 2, "command": "backup:run"}

Fields bound with :func:`bound_log_context` (``task_id``, ``execution_id``, ``attempt``, ``command``, or any
other) appear on every record logged inside the block, in this thread or task; ``extra=`` fields of one call
appear on that record (and win over bound ones). Before a record leaves the process, dict-valued fields and a
``data`` field go through :func:`scheduler.redaction.redact`, and a field whose own name looks secret
(``password``, ``token``, ...) is replaced by ``"***"``.

Lines go to stderr: stdout stays for the CLI's output (``--format json``).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO, Any

from scheduler.errors import ConfigError
from scheduler.redaction import REDACTED, is_secret_key, redact
from scheduler.settings import Settings

# The fields the planner and the workers bind, in the order text lines show them.
CONTEXT_FIELDS = ("task_id", "execution_id", "attempt", "command")
# Libraries whose INFO lines are noise in a long-running process (Alembic prints its context on every check).
QUIET_LOGGERS = ("alembic",)

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: ContextVar[Mapping[str, Any]] = ContextVar("scheduler_log_context", default=_EMPTY)
# Every attribute a plain LogRecord has: anything else on a record came from ``extra=`` or a bound context.
_RECORD_ATTRIBUTES = frozenset(
    [*logging.LogRecord("", 0, "", 0, "", (), None).__dict__, "message", "asctime", "taskName"]
)
_HANDLER_MARK = "_systemprompt_handler"


# ------------------------------------------------------------------------------------------------ context


@contextmanager
def bound_log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every record logged inside the block (nested blocks add to the outer ones).

    Based on :mod:`contextvars`: it follows the current thread (and asyncio task), not other threads. A field
    given as None is left out. The previous context comes back when the block ends, also on an exception.
    """
    merged = {**_context.get(), **{key: value for key, value in fields.items() if value is not None}}
    token = _context.set(MappingProxyType(merged))
    try:
        yield
    finally:
        _context.reset(token)


def current_log_context() -> dict[str, Any]:
    """A copy of the fields bound in this thread or task right now."""
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Copies the bound context onto each record it sees; a field given with ``extra=`` is kept as it is.

    Installed on the handler, so it runs in the thread that logged (where the context is).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if key not in record.__dict__:
                setattr(record, key, value)
        return True


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's context and ``extra=`` fields (context fields first), secrets redacted."""
    extras = {key: value for key, value in record.__dict__.items() if key not in _RECORD_ATTRIBUTES}
    ordered = {key: extras.pop(key) for key in CONTEXT_FIELDS if key in extras}
    ordered.update(extras)
    return {key: _safe_value(key, value) for key, value in ordered.items()}


def _safe_value(key: str, value: Any) -> Any:
    if is_secret_key(key):
        return REDACTED
    if key == "data" or isinstance(value, Mapping):
        return redact(value)
    return value


# --------------------------------------------------------------------------------------------- formatters


def iso_time(created: float) -> str:
    """A record's creation time as ISO-8601 UTC with milliseconds and ``Z``."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, then the context and extra fields.

    An exception's traceback is in ``exc_info`` (one string); values JSON cannot hold are shown with ``str``.
    """

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record_fields(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``<time UTC> <LEVEL> <logger>: <message> [task_id=.. execution_id=.. ...]``, then any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{iso_time(record.created)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        fields = record_fields(record)
        if record.name.startswith("celery."):
            fields.pop("data", None)  # Celery's message is already formatted from it (JSON lines keep it)
        if fields:
            shown = " ".join(f"{key}={_text_value(value)}" for key, value in fields.items())
            line = f"{line} [{shown}]"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


def _text_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


# ------------------------------------------------------------------------------------------------ set-up


def log_level(settings: Settings) -> int:
    """``settings.log_level`` as a logging level; raises :class:`ConfigError` (exit 2) for an unknown name."""
    name = settings.log_level.strip().upper()
    level = logging.getLevelNamesMapping().get(name)
    if level is None:
        choices = "DEBUG, INFO, WARNING, ERROR, CRITICAL"
        raise ConfigError(f"invalid setting log_level: {settings.log_level!r} is not one of {choices}")
    return level


def make_handler(settings: Settings, stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing ``settings.log_format`` lines (with the bound context) to ``stream`` (stderr)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    setattr(handler, _HANDLER_MARK, True)
    return handler


def configure_logging(settings: Settings, *, stream: IO[str] | None = None) -> logging.Handler:
    """Send every logger's records to one handler on the root logger, in ``settings.log_format``.

    Call it once at the start of a process (planner, worker, CLI verb, Flower), before other set-ups: a root
    logger that already has a handler is left alone by ``logging.basicConfig``, Celery (with
    ``worker_hijack_root_logger = False``) and Tornado. Calling it again replaces the handler it installed
    before (handlers others installed are kept). Sets the root level to ``settings.log_level`` and quiets
    Alembic's INFO lines unless the level is DEBUG. Raises :class:`ConfigError` for an unknown level.
    Returns the installed handler.
    """
    level = log_level(settings)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
            handler.close()
    handler = make_handler(settings, stream)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(level if level <= logging.DEBUG else max(level, logging.WARNING))
    logging.captureWarnings(True)
    return handler
