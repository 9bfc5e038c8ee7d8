"""Query parameters of the tasks list, checked and bounded: anything else is a 400, never a database error."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler.records import TASK_STATUSES, iso_utc
from scheduler.storage.console import SORT_KEYS, TaskFilter

MAX_TEXT = 200
MAX_CURSOR = 600
MAX_PAGE = 200
DEFAULT_PAGE = 50
_TIME_KEYS = ("next_run_at", "updated_at")


class BadQuery(ValueError):
    """A query parameter a person could have mistyped: shown as a 400 with this message."""


@dataclass(frozen=True)
class TasksQuery:
    where: TaskFilter
    sort: str = "id"
    descending: bool = False
    after: tuple[Any, int] | None = None
    limit: int = DEFAULT_PAGE

    def params(self, **override: str | None) -> dict[str, str]:
        """This query's parameters (without the cursor) with ``override`` applied: for links."""
        out = {"status": self.where.status, "queue": self.where.queue, "source": self.where.source,
               "q": self.where.text,
               "sort": self.sort, "order": "desc" if self.descending else "asc"}  # fmt: skip
        out.update(override)
        return {key: value for key, value in out.items() if value}


def _text(params: Mapping[str, str], name: str, limit: int = MAX_TEXT) -> str | None:
    value = params.get(name, "").strip()
    if len(value) > limit:
        raise BadQuery(f"{name} is too long (at most {limit} characters)")
    if "\x00" in value:
        raise BadQuery(f"{name} contains a NUL character")
    return value or None


def parse_tasks_query(params: Mapping[str, str]) -> TasksQuery:
    status = _text(params, "status")
    if status is not None and status not in TASK_STATUSES:
        raise BadQuery(f"status must be one of {', '.join(TASK_STATUSES)}")
    sort = _text(params, "sort") or "id"
    if sort not in SORT_KEYS:
        raise BadQuery(f"sort must be one of {', '.join(SORT_KEYS)}")
    order = _text(params, "order") or "asc"
    if order not in ("asc", "desc"):
        raise BadQuery("order must be asc or desc")
    limit = parse_int(params, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    where = TaskFilter(
        status=status, queue=_text(params, "queue"), text=_text(params, "q"), source=_text(params, "source")
    )
    cursor = _text(params, "after", MAX_CURSOR)
    after = None if cursor is None else decode_cursor(cursor, sort)
    return TasksQuery(where, sort, order == "desc", after, limit)


def parse_int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6 or not low <= int(raw) <= high:
        raise BadQuery(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def encode_cursor(sort: str, value: Any, last_id: int) -> str:
    shown = iso_utc(value) if isinstance(value, datetime) else value
    raw = json.dumps([sort, shown, last_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[Any, int]:
    """The ``(value, id)`` a cursor of :func:`encode_cursor` carries; BadQuery for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key, value, last_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise BadQuery("after is not a cursor of this list") from None
    if key != sort or isinstance(last_id, bool) or not isinstance(last_id, int):
        raise BadQuery("after is not a cursor of this list (the sort changed?)")
    if sort in _TIME_KEYS:
        try:
            value = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise BadQuery("after is not a cursor of this list") from None
    elif sort == "id":
        value = last_id
    elif not isinstance(value, str):
        raise BadQuery("after is not a cursor of this list")
    return value, last_id
