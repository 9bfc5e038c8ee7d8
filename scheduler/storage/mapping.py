"""Rows -> frozen records, driven by the records' own fields: a record's fields are listed once, in
:mod:`scheduler.records`, and each column is read under its field's name.

A field's type says how its value is read: ``int``, ``float`` are converted; a ``datetime`` comes back aware
in UTC whatever the database (SQLite returns naive UTC) and a required one must be there; a ``dict``
(required) is copied, NULL read as empty; anything else (``str``, ``Any``, an optional ``dict``) is taken as
the driver returns it. Each function accepts a SQLAlchemy ``Row`` or a ``RowMapping``/dict.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any, TypeVar, get_origin, get_type_hints

from scheduler.records import DueTask, Execution, LogLine, Task

# Records of scheduler.records.DEFERRED: imported where they are built, so importing this module does not
# define them (the read verbs never do).
if TYPE_CHECKING:
    from scheduler.records import AuditEntry

R = TypeVar("R")
Convert = Callable[[Any], Any]


def _time(value: Any) -> datetime | None:
    # as_utc, inline: this runs for every datetime of every row the planner maps. A session in UTC (the
    # server's usual default) hands back values in ``datetime.UTC`` already: no conversion then.
    if not isinstance(value, datetime):
        return None
    zone = value.tzinfo
    if zone is UTC:
        return value
    return value.replace(tzinfo=UTC) if zone is None else value.astimezone(UTC)


def _required_time(column: str) -> Convert:
    def convert(value: Any) -> datetime:
        if not isinstance(value, datetime):
            raise ValueError(f"column {column} is NULL or not a datetime: {value!r}")
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    return convert


def _optional(convert: Convert) -> Convert:
    return lambda value: None if value is None else convert(value)


def _object(value: Any) -> dict[str, Any]:
    return dict(value or {})


def _converter(column: str, hint: Any) -> Convert | None:
    """How a value of a field typed ``hint`` is read (None: as it is)."""
    if isinstance(hint, types.UnionType):
        kinds = [kind for kind in hint.__args__ if kind is not type(None)]
        if len(kinds) == 1 and kinds[0] is datetime:
            return _time
        if len(kinds) == 1 and kinds[0] in (int, float):
            return _optional(kinds[0])
        return None
    if hint is datetime:
        return _required_time(column)
    if hint in (int, float):
        return hint  # type: ignore[no-any-return]
    if get_origin(hint) is dict:
        return _object
    return None


Plan = tuple[tuple[str, ...], tuple[tuple[str, Convert], ...]]
_plans: dict[type[Any], Plan] = {}


def _plan(record: type[Any]) -> Plan:
    """A record's field names in declaration order, and the (name, converter) of those that need one."""
    plan = _plans.get(record)
    if plan is None:
        hints = get_type_hints(record)
        names = tuple(field.name for field in fields(record))
        converters = tuple(
            (name, convert) for name in names if (convert := _converter(name, hints[name])) is not None
        )
        plan = _plans[record] = (names, converters)
    return plan


def _build(record: Callable[..., R], plan: tuple[tuple[str, Convert], ...], values: dict[str, Any]) -> R:
    for name, convert in plan:
        values[name] = convert(values[name])
    return record(**values)


def record_from_row(record: type[R], row: object) -> R:
    """A ``record`` (a dataclass of :mod:`scheduler.records`) from a row holding a column per field (more
    columns are ignored)."""
    columns = getattr(row, "_mapping", row)
    if not isinstance(columns, Mapping):
        raise TypeError(f"not a row: {row!r}")
    names, converters = _plan(record)
    return _build(record, converters, {name: columns[name] for name in names})


def task_from_row(row: object) -> Task:
    """A :class:`Task` from a ``scheduled_tasks`` row."""
    return record_from_row(Task, row)


def tasks_from_rows(keys: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[Task]:
    """:func:`task_from_row` for many rows (``keys``: the result's column names).

    With exactly the :class:`Task` fields as columns, in any order (``select(tasks)``), each row is zipped
    with the keys once: the planner maps up to a thousand rows per batch, and looking each value up by name
    through the row cost as much as planning them.
    """
    names, converters = _plan(Task)
    keys = tuple(keys)
    if len(keys) != len(names) or set(keys) != set(names):
        return [task_from_row(dict(zip(keys, row, strict=True))) for row in rows]
    return [_build(Task, converters, dict(zip(keys, row, strict=True))) for row in rows]


@cache
def _time_fields(record: type[Any]) -> tuple[tuple[int, Convert], ...]:
    """(position, converter) of a tuple record's datetime fields."""
    hints = get_type_hints(record)
    return tuple(
        (index, convert)
        for index, name in enumerate(record._fields)
        if datetime in (hints[name], *getattr(hints[name], "__args__", ()))
        and (convert := _converter(name, hints[name])) is not None
    )


def due_tasks_from_rows(rows: Iterable[Sequence[Any]]) -> list[DueTask]:
    """:class:`DueTask` s from rows holding its fields' columns in its order, read through the table's typed
    columns: only the datetimes need converting (aware, UTC); the other values are taken as they come."""
    times = _time_fields(DueTask)
    make = DueTask._make
    tasks = []
    for row in rows:
        values = list(row)
        for index, convert in times:
            values[index] = convert(values[index])
        tasks.append(make(values))
    return tasks


def execution_from_row(row: object) -> Execution:
    """An :class:`Execution` from a ``task_executions`` row."""
    return record_from_row(Execution, row)


def log_from_row(row: object) -> LogLine:
    """A :class:`LogLine` from a ``task_logs`` row."""
    return record_from_row(LogLine, row)


def audit_from_row(row: object) -> AuditEntry:
    """An :class:`AuditEntry` from a ``task_audit`` row."""
    from scheduler.records import AuditEntry

    return record_from_row(AuditEntry, row)
