"""All SQL of the scheduler, one module per concern. Nothing outside this package builds a statement.

- shared by every module here: :mod:`.tables` the one schema definition (Core tables), :mod:`.mapping`
  rows -> records (:mod:`scheduler.records`), :mod:`.clock` ``db_now``, :mod:`.errors`
  ``translate_db_errors``, :mod:`.transactions` ``write_transaction`` (the one way to open a write
  transaction), :mod:`.db` engine creation, :mod:`.schema` and ``migrations/`` the schema's versions;
- the API's: :mod:`.tasks` task definitions, :mod:`.audit` the audit trail, :mod:`.history` execution and
  log reads, :mod:`.manual_runs` the API's execution writes (manual runs, cancel on delete), :mod:`.stats`
  statistics;
- the planner's: :mod:`.dispatch` (due tasks, slots, the relay), :mod:`.recovery` (the sweep),
  :mod:`.leases` (leadership), :mod:`.retention` (history clean-up), :mod:`.monitoring` (metric reads),
  :mod:`.task_outcomes` (how an outcome changes its task, shared with the worker's);
- the worker's: :mod:`.runs` and :mod:`.run_statements` (claim, heartbeat, logs, outcome), and
  :mod:`.driver_cursor`, which runs the two hot statements (claim, completion) on the driver's cursor.

Functions take an open ``Connection`` and the caller owns the transaction, unless they say otherwise.
Records come from, and are handed in as, :mod:`scheduler.records`: this package imports no planner, service,
command or execution module.
"""

from __future__ import annotations

from scheduler.storage.clock import db_now
from scheduler.storage.errors import translate_db_errors
from scheduler.storage.mapping import audit_from_row, execution_from_row, log_from_row, task_from_row

__all__ = [
    "audit_from_row",
    "db_now",
    "execution_from_row",
    "log_from_row",
    "task_from_row",
    "translate_db_errors",
]
