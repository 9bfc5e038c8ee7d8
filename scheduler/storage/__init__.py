"""All SQL of the scheduler, one module per concern.

- :mod:`.clock` ``db_now``: the database clock; :mod:`.errors` ``translate_db_errors``; :mod:`.mapping`
  rows -> records and :mod:`.tables` the typed Core tables (shared by every module here);
- :mod:`.tasks` task definitions; :mod:`.audit` the audit trail; :mod:`.history` execution and log reads;
  :mod:`.executions` the API's execution writes (manual runs, cancel on delete); :mod:`.stats` statistics;
- the planner's (:mod:`.dispatch`, :mod:`.recovery`) and the worker's (:mod:`.runs`) modules.

Every function takes an open ``Connection``; the caller owns the transaction.
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
