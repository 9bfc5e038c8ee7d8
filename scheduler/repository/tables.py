"""The Core ``Table`` objects of the models, typed, for the SQL modules of this package."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table

from scheduler.models import AuditRow, ExecutionRow, LogRow, TaskRow

tasks = cast(Table, TaskRow.__table__)
executions = cast(Table, ExecutionRow.__table__)
logs = cast(Table, LogRow.__table__)
audit = cast(Table, AuditRow.__table__)
