"""Single task fields and query arguments: raw value -> normalised value, or a typed :class:`InvalidInput`.

Pure: no I/O and no clock. Each function names its field in the error it raises.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from scheduler.commands.registry import CommandRegistry, render_argv
from scheduler.errors import InvalidField
from scheduler.records import EXECUTION_STATUSES, TASK_STATUSES
from scheduler.rules.schedules import validate_timezone

MAX_NAME = 200
MAX_ACTOR = 200
MAX_DATA_BYTES = 64 * 1024
MAX_DATA_DEPTH = 100
MAX_REASON = 1000
MAX_LIMIT = 10_000
MAX_COUNT = 1000
INT32_MAX = 2_147_483_647
QUEUE = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
NAME_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
OVERLAP_POLICIES = ("allow", "forbid", "replace")
MISFIRE_POLICIES = ("skip", "run_once", "run_all")
# (field, minimum, maximum) of the integer fields; maxima keep values inside their columns.
INT_RANGES: dict[str, tuple[int, int]] = {
    "retries": (0, 100),
    "retry_delay_ms": (0, 86_400_000),
    "timeout_ms": (1, 604_800_000),
    "misfire_grace_ms": (0, 366 * 86_400_000),
    "auto_pause_after": (1, INT32_MAX),
    "max_runs": (1, INT32_MAX),
    "jitter_ms": (0, 366 * 86_400_000),
}
MAX_TASK_CALENDARS = 20


def _clean_text(field: str, value: object, limit: int) -> str:
    """Stripped, NFC-normalised, 1..``limit`` characters, no control, format or separator characters."""
    if not isinstance(value, str):
        raise InvalidField(field, "must be a string")
    text = unicodedata.normalize("NFC", value.strip())
    if not text:
        raise InvalidField(field, "must not be empty")
    if len(text) > limit:
        raise InvalidField(field, f"is {len(text)} characters long (at most {limit})")
    bad = next((ch for ch in text if unicodedata.category(ch) in NAME_FORBIDDEN_CATEGORIES), None)
    if bad is not None:
        raise InvalidField(field, f"must not contain control or format characters (found U+{ord(bad):04X})")
    return text


def validate_name(value: object) -> str:
    """A task name: :func:`_clean_text` rules, at most 200 characters, and not only digits."""
    name = _clean_text("name", value, MAX_NAME)
    if name.isascii() and name.isdigit():
        raise InvalidField("name", "must not be only digits (it would read as a task id)")
    return name


def check_actor(value: object) -> str:
    """Who the audit log records (stored and printed as it is): :func:`_clean_text` rules."""
    return _clean_text("actor", value, MAX_ACTOR)


def validate_data(value: object) -> dict[str, Any]:
    """A JSON object with string keys, at most 64 KiB serialised (UTF-8), no NUL characters; returned as plain
    JSON types (tuples become lists)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidField("data", "must be a JSON object")
    _check_json_tree(value)
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        size = len(text.encode("utf-8"))
    except (TypeError, ValueError, RecursionError) as error:
        raise InvalidField("data", f"must be JSON-serialisable ({error})") from None
    if size > MAX_DATA_BYTES:
        raise InvalidField("data", f"is {size} bytes serialised (at most {MAX_DATA_BYTES})")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _check_json_tree(root: Mapping[Any, Any]) -> None:
    stack: list[tuple[object, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DATA_DEPTH:
            raise InvalidField("data", f"is nested more than {MAX_DATA_DEPTH} levels deep")
        if isinstance(node, Mapping):
            for key, item in node.items():
                if not isinstance(key, str):
                    raise InvalidField("data", f"keys must be strings, not {type(key).__name__}")
                _check_text(key)
                stack.append((item, depth + 1))
        elif isinstance(node, list | tuple):
            stack.extend((item, depth + 1) for item in node)
        elif isinstance(node, str):
            _check_text(node)


def _check_text(text: str) -> None:
    # PostgreSQL's jsonb cannot hold NUL, and lone surrogates cannot be encoded as UTF-8.
    if "\x00" in text:
        raise InvalidField("data", "must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidField("data", "must be valid Unicode (it contains a lone surrogate)") from None


def validate_int(field: str, value: object) -> int:
    """An int (not a bool) inside ``INT_RANGES[field]``."""
    low, high = INT_RANGES[field]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidField(field, f"must be a whole number, not {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidField(field, f"must be between {low} and {high}, not {_short(value)}")
    return value


def validate_backoff(value: object) -> float:
    """A finite number 1..10 (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidField("retry_backoff", f"must be a number, not {type(value).__name__}")
    if not 1.0 <= value <= 10.0:  # also rejects NaN
        raise InvalidField("retry_backoff", f"must be between 1 and 10, not {_short(value)}")
    return float(value)


def validate_choice(field: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InvalidField(field, f"must be one of {', '.join(choices)}, not {_short(value)}")
    return value


def validate_queue(value: object) -> str:
    if not isinstance(value, str) or not QUEUE.fullmatch(value):
        raise InvalidField("queue", "must be 1-100 characters of letters, digits, '_', '.', ':' or '-'")
    return value


def validate_timezone_name(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidField("timezone", "must be a string")
    return validate_timezone(value.strip()).key


def validate_instant(field: str, value: object) -> datetime | None:
    """None, an aware datetime or an ISO-8601 string with an offset; returned in UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise InvalidField(field, "must be an ISO-8601 instant with a UTC offset") from None
    if not isinstance(value, datetime):
        raise InvalidField(field, f"must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidField(field, "must be timezone-aware (naive times are ambiguous)")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidField(field, "is out of range") from None


def validate_command(value: object, commands: CommandRegistry, data: Mapping[str, Any]) -> str:
    """A registered command; an external one must find each placeholder in ``data`` (string/number/bool)."""
    if not isinstance(value, str):
        raise InvalidField("command", "must be a string")
    if len(value.strip()) > MAX_NAME:
        raise InvalidField("command", f"is longer than {MAX_NAME} characters")
    spec = commands.get(value.strip())
    if spec.kind == "external":
        render_argv(spec, data)
    return spec.name


def _short(value: object) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int too long to print (sys.get_int_max_str_digits)
        return "a number that is far too large"
    return text if len(text) <= 40 else text[:37] + "..."


# ------------------------------------------------------------------------------------------ query arguments


def check_limit(value: object) -> int:
    """A row limit: a whole number 1..10000."""
    return _bounded("limit", value, 1, MAX_LIMIT)


def check_count(value: object) -> int:
    """A count of fire times: a whole number 1..1000."""
    return _bounded("count", value, 1, MAX_COUNT)


def _bounded(field: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidField(field, f"must be a whole number, not {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidField(field, f"must be between {low} and {high}, not {_short(value)}")
    return value


def check_status(field: str, value: object, *, task: bool) -> str | None:
    """None, or a task status (``task``) / an execution status."""
    choices = TASK_STATUSES if task else EXECUTION_STATUSES
    return None if value is None else validate_choice(field, value, choices)


def check_reason(value: object) -> str | None:
    """An optional free-text reason (pause): stripped, at most 1000 characters, no NUL; empty means None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidField("reason", "must be text")
    text = value.strip()
    if len(text) > MAX_REASON:
        raise InvalidField("reason", f"is {len(text)} characters long (at most {MAX_REASON})")
    if "\x00" in text or any(0xD800 <= ord(ch) <= 0xDFFF for ch in text):
        raise InvalidField("reason", "must not contain NUL characters or lone surrogates")
    return text or None


def validate_calendar_names(field: str, value: object) -> list[str] | None:
    """A task's ``exclude`` or ``only_in``: a calendar name or a list of them (duplicates dropped, order
    kept); an empty list is None (no calendar). Whether they exist is the service's question."""
    from scheduler.rules.calendars import validate_calendar_name

    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise InvalidField(field, "must be a calendar name or a list of calendar names")
    names: list[str] = []
    for item in items:
        name = validate_calendar_name(item)
        if name not in names:
            names.append(name)
    if len(names) > MAX_TASK_CALENDARS:
        raise InvalidField(field, f"{len(names)} calendars (at most {MAX_TASK_CALENDARS})")
    return names or None
