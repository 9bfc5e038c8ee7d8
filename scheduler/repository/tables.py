"""The Core ``Table`` objects of the models, typed, for the SQL modules of this package."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table

from scheduler.models import AuditRow, ExecutionRow, LogRow, TaskRow

tasks = cast(Table, TaskRow.__table__)
executions = cast(Table, ExecutionRow.__table__)
logs = cast(Table, LogRow.__table__)
audit = cast(Table, AuditRow.__table__)

MAX_ID = 2**63 - 1  # ids are positive BIGINTs (SQLite: 64-bit INTEGER)


def storable_id(value: object) -> bool:
    """True when ``value`` could be a row id: an int (not a bool) in 1..2**63-1. Anything else matches no row,
    and must not reach the driver (a larger int overflows it instead of matching nothing)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID
