"""Table cells: the columns a verb declares, and how a value reads in a cell (times, durations, JSON)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

Flow = Literal["words", "line", "text"]  # how a cell may break: see Column


@dataclass(frozen=True, slots=True)
class Column:
    """One table column: the row's ``field``, a header, and optionally how to show its value.

    ``flow`` says how a cell may break when the table must fit a terminal: ``words`` between words (a very
    long word is folded), ``line`` never (a time, a duration: times are always kept on one line), ``text``
    (free text such as an error) between words with long words cut short by ``…``. Columns with a
    ``drop_order`` are left out of a table too wide for the terminal, the lowest first (see
    :func:`cli.table_fit.fit_table`).
    """

    field: str
    header: str | None = None
    show: Callable[[Any], str] | None = None
    max_width: int | None = None
    get: Callable[[Any], Any] | None = None  # computes the value from the whole row instead of ``field``
    flow: Flow = "words"
    drop_order: int | None = None

    @property
    def title(self) -> str:
        return self.header or self.field.replace("_", " ")

    def value(self, row: Any) -> Any:
        return self.get(row) if self.get is not None else field_of(row, self.field)

    def text(self, row: Any, *, compact: bool = False) -> str:
        """The cell text; ``compact`` shows times as ``2026-03-28 01:00`` (see :data:`COMPACT_TIMES_NOTE`)."""
        value = self.value(row)
        return show_value(value, compact=compact) if self.show is None else self.show(value)


ColumnSpec = Column | str


def human_time(value: datetime | None, *, compact: bool = False) -> str:
    """``2026-03-28 01:00:00 UTC``, or ``2026-03-28 01:00`` when ``compact``; naive values are UTC (SQLite
    returns them)."""
    if value is None:
        return "-"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M" if compact else "%Y-%m-%d %H:%M:%S UTC")


def human_ms(value: float | None) -> str:
    """A duration in milliseconds as ``850 ms``, ``12.5 s``, ``3 min 20 s`` or ``2 h 5 min``."""
    if value is None:
        return "-"
    if value < 1000:
        return f"{value:.0f} ms"
    seconds = value / 1000
    if seconds < 60:
        return f"{seconds:.3g} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def show_value(value: Any, *, compact: bool = False) -> str:
    """Default cell text of any value (``compact``: the short form of a time)."""
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return human_time(value, compact=compact)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return str(value)


def field_of(row: Any, field: str) -> Any:
    return row.get(field) if isinstance(row, Mapping) else getattr(row, field, None)
