"""The Core ``Table`` objects of :mod:`scheduler.storage.tables` under short names, for the SQL modules
here."""

from __future__ import annotations

from scheduler.storage.tables import scheduled_tasks as tasks
from scheduler.storage.tables import task_audit as audit
from scheduler.storage.tables import task_executions as executions
from scheduler.storage.tables import task_logs as logs

__all__ = ["MAX_ID", "audit", "executions", "logs", "storable_id", "tasks"]

MAX_ID = 2**63 - 1  # ids are positive BIGINTs (SQLite: 64-bit INTEGER)


def storable_id(value: object) -> bool:
    """True when ``value`` could be a row id: an int (not a bool) in 1..2**63-1. Anything else matches no row,
    and must not reach the driver (a larger int overflows it instead of matching nothing)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID
