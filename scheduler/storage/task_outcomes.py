"""How a finished execution changes its task: one rule for the worker's outcomes and the sweep's ``lost``.

``completed`` resets ``consecutive_failures`` and writes the task row only when there is a streak to reset:
a task whose runs succeed is not written once per run (a row written by every execution of a busy task is a
hot row: its updates queue on the row lock and cost PostgreSQL more than the execution's own). A failure
(``failed``, ``timed_out``, or ``lost``: the worker died on the last attempt) adds one, and once the count
reaches the task's ``auto_pause_after`` an active task is paused with the reason :func:`auto_pause_reason`.

A once task whose slot was dispatched (:func:`once_dispatched`) ends with the final outcome of a run:
``completed`` (reason ``ran once``) after a success, ``failed`` (reason ``execution <id> <status>``, the
status ``failed``, ``timed_out`` or ``lost``) after a failure. The run of a manual ``scheduler:run`` counts
too, so the task shows how its latest run ended. A failed once task is never auto-paused.

Callers own the transaction and audit the pause with :func:`record_auto_pause`. ``last_run_at`` is not an
outcome's: it is stamped when a run is dispatched (the planner's slot, a manual run).

The worker's path on PostgreSQL applies the same rule in SQL, through the ``scheduler_task_outcome``
function of migration 0002 (the worker role may not update tasks itself); the outcome tests run on both
databases and hold the two equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Connection, String, case, cast, literal, select, update

from scheduler.records import AuditRecord, Task
from scheduler.storage.audit import insert_audit
from scheduler.storage.mapping import task_from_row
from scheduler.storage.tables import Timestamp, tasks

# Records of scheduler.records.DEFERRED: imported where they are built, so importing this module does not
# define them (the read verbs never do).
if TYPE_CHECKING:
    from scheduler.records import TaskOutcome

OutcomeKind = Literal["completed", "failure"]

# What the task update returns (the worker's one-statement completion selects the same columns).
TASK_OUTCOME_COLUMNS = (tasks.c.id, tasks.c.status, tasks.c.status_reason, tasks.c.consecutive_failures)


RAN_ONCE_REASON = "ran once"


def auto_pause_reason(failures: int) -> str:
    return f"auto-paused after {failures} consecutive failures"


def once_dispatched() -> Any:
    """The task is a once task whose slot was dispatched (``schedule_kind`` ``once``, no ``next_run_at``)."""
    return (tasks.c.schedule_kind == "once") & tasks.c.next_run_at.is_(None)


def task_outcome_condition(kind: str) -> Any:
    """The condition on the task row under which an outcome of ``kind`` writes it (None: always)."""
    if kind == "completed":
        return (tasks.c.consecutive_failures != 0) | (once_dispatched() & (tasks.c.status != "completed"))
    return None


def task_outcome_values(kind: str, now: Any, execution_id: Any, status: Any) -> dict[str, Any] | None:
    """The task columns a final outcome of ``kind`` sets (None: the task does not change), where
    :func:`task_outcome_condition` holds. SQL expressions: ``now`` the database clock, ``execution_id`` and
    ``status`` the execution's id and final status (``failed``, ``timed_out``, ``lost``)."""
    once = once_dispatched()
    if kind == "completed":
        return {
            "consecutive_failures": 0,
            "status": case((once, "completed"), else_=tasks.c.status),
            "status_reason": case((once, RAN_ONCE_REASON), else_=tasks.c.status_reason),
            "updated_at": case((once, now), else_=tasks.c.updated_at),
        }
    if kind != "failure":
        return None
    failures = tasks.c.consecutive_failures + 1
    pauses = (
        tasks.c.auto_pause_after.is_not(None)
        & (failures >= tasks.c.auto_pause_after)
        & (tasks.c.status == "active")
    )
    pause_reason = (
        literal("auto-paused after ", String)
        + cast(failures, String)
        + literal(" consecutive failures", String)
    )
    failed_reason = literal("execution ", String) + cast(execution_id, String) + literal(" ", String) + status
    return {
        "consecutive_failures": failures,
        "status": case((once, "failed"), (pauses, "paused"), else_=tasks.c.status),
        "status_reason": case((once, failed_reason), (pauses, pause_reason), else_=tasks.c.status_reason),
        "updated_at": case((once | pauses, now), else_=tasks.c.updated_at),
    }


def task_outcome(row: Mapping[Any, Any] | None) -> TaskOutcome | None:
    """Read a row of :data:`TASK_OUTCOME_COLUMNS`, by column name (None when no task was updated)."""
    from scheduler.records import TaskOutcome

    if row is None or row["consecutive_failures"] is None:
        return None
    failures = int(row["consecutive_failures"])
    paused = row["status"] == "paused" and row["status_reason"] == auto_pause_reason(failures)
    return TaskOutcome(consecutive_failures=failures, task_paused=paused)


def count_failure(
    connection: Connection, task_id: int, *, execution_id: int, status: str, now: datetime
) -> TaskOutcome | None:
    """Count the failure of ``execution_id`` (final ``status``) of ``task_id`` at ``now`` (may auto-pause
    the task, or fail a once task); None if the task is gone."""
    values = task_outcome_values(
        "failure", literal(now, Timestamp), literal(execution_id), literal(status, String)
    )
    assert values is not None
    statement = update(tasks).where(tasks.c.id == task_id).values(values).returning(*TASK_OUTCOME_COLUMNS)
    row = connection.execute(statement).first()
    return task_outcome(None if row is None else row._mapping)


def load_task(connection: Connection, task_id: int) -> Task | None:
    row = connection.execute(select(tasks).where(tasks.c.id == task_id)).first()
    return None if row is None else task_from_row(row)


def record_auto_pause(connection: Connection, task: Task, *, actor: str, at: datetime) -> None:
    """Audit an auto-pause (written in the transaction of the failure that caused it)."""
    insert_audit(
        connection,
        [
            AuditRecord(
                action="pause",
                task_id=task.id,
                task_name=task.name,
                before={"status": "active"},
                after={"status": task.status, "status_reason": task.status_reason},
            )
        ],
        actor=actor,
        at=at,
    )
