"""One planning batch: due tasks in, execution rows and task advances out, inside the caller's transaction.

The decisions are :func:`scheduler.rules.policies.plan_task`'s; this module turns them into SQL through
:mod:`scheduler.storage.dispatch` and counts what happened. Slots go in with ``ON CONFLICT DO NOTHING``,
and ``run_count`` grows by the rows actually inserted, so a replayed batch changes nothing twice.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from scheduler.errors import SchedulerError
from scheduler.records import AuditRecord, Dispatch, TaskAdvance, TaskToPlan
from scheduler.redaction import public_task
from scheduler.rules.calendars import CalendarRule, task_calendar_rule
from scheduler.rules.combined import slot_of
from scheduler.rules.policies import PlannedSlot, TaskPlan, plan_task
from scheduler.rules.schedules import Schedule
from scheduler.rules.timing import task_schedule
from scheduler.storage import tasks as tasks_sql
from scheduler.storage.alerts import PARKED_PREFIX
from scheduler.storage.audit import insert_audit
from scheduler.storage.calendars import calendar_days
from scheduler.storage.dispatch import active_executions, advance_tasks, insert_executions

logger = logging.getLogger("scheduler.planning.planner")

SCHEDULE_CACHE_SIZE = 4096
PLANNER_ACTOR = "planner"  # who the audit log names for the planner's own changes to a task


class ScheduleCache:
    """Parsed schedules by (text, time zone, anchor), least recently used out (parsing costs most)."""

    def __init__(self, size: int = SCHEDULE_CACHE_SIZE) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[Any, ...], Schedule] = OrderedDict()

    def get(self, task: TaskToPlan) -> Schedule:
        """The task's schedule; raises what :func:`~scheduler.rules.timing.task_schedule` raises for text
        that no longer parses."""
        # Only intervals (and a literal "now") depend on the anchor; cron and ISO instants share entries.
        anchored = task.schedule_kind == "interval" or task.schedule.strip().lower() == "now"
        anchored = anchored or bool(task.schedules)  # several schedules may hold an interval
        key: tuple[Any, ...] = (task.schedule, task.timezone, task.anchor_at if anchored else None)
        if task.schedules or task.jitter_ms:  # a combined schedule: its parts, and the task for the jitter
            key += (tuple(task.schedules or ()), task.jitter_ms, task.id)
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            return found
        schedule = task_schedule(task)
        self._entries[key] = schedule
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return schedule


@dataclass(frozen=True, slots=True)
class BatchReport:
    """One planning transaction: ``fenced`` True when the lease check refused it (nothing was written)."""

    due: int = 0
    created: int = 0
    skipped: int = 0
    misfired: int = 0
    fenced: bool = False
    replaced: tuple[int, ...] = ()  # active executions to cancel: their task's new run replaces them
    dispatches: tuple[Dispatch, ...] = ()  # the pending executions inserted, for the relay (no read back)


def execution_row(
    task: TaskToPlan, slot: PlannedSlot, now: datetime, schedule: Schedule | None = None
) -> dict[str, Any]:
    """The ``task_executions`` values of one planned slot (unset columns left out, so they stay NULL).

    ``schedule``: the task's schedule, whose real (jittered) fire time ``slot`` holds; the row keeps the
    nominal slot and the text of the schedule that produced it."""
    nominal, source = (
        (slot.scheduled_for, None) if schedule is None else slot_of(schedule, slot.scheduled_for)
    )
    row: dict[str, Any] = {
        "task_id": task.id,
        "task_name": task.name,
        "command": task.command,
        "scheduled_for": nominal,
        "schedule": source or task.schedule,
        "trigger": slot.trigger,
        "status": slot.status,
        "reason": slot.reason,
        "attempt": 1,
        "max_attempts": task.retries + 1,
        "queue": task.queue,
        "created_at": now,
    }
    if slot.status != "pending":
        row["finished_at"] = now  # a decision, final at once (and visible to retention)
    if slot.result is not None:
        row["result"] = slot.result
    if slot.error is not None:
        row["error"] = slot.error
    return row


def _insert_grouped(connection: Connection, rows: list[dict[str, Any]]) -> list[tuple[int, int, str]]:
    """Insert rows grouped by their key set (an executemany needs one), so unset columns keep SQL NULL."""
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(frozenset(row), []).append(row)
    inserted: list[tuple[int, int, str]] = []
    for group in groups.values():
        inserted.extend(insert_executions(connection, group))
    return inserted


def _calendar_rules(connection: Connection, tasks: Sequence[TaskToPlan]) -> dict[int, CalendarRule]:
    """The calendar rules of the tasks that have calendars (their days read in one query, if any)."""
    named = [task for task in tasks if task.exclude or task.only_in]
    if not named:
        return {}
    stored = calendar_days(connection, (n for t in named for n in [*(t.exclude or ()), *(t.only_in or ())]))
    rules = {task.id: task_calendar_rule(task.timezone, task.exclude, task.only_in, stored) for task in named}
    return {task_id: rule for task_id, rule in rules.items() if rule is not None}


def _exclusion(schedule: Schedule, rule: CalendarRule | None) -> Callable[[datetime], str | None] | None:
    """Why a real fire time of ``schedule`` is left out by ``rule`` (judged on its nominal slot)."""
    if rule is None:
        return None
    return lambda real: rule.reason(slot_of(schedule, real)[0])


def plan_tasks(
    connection: Connection, tasks: Sequence[TaskToPlan], now: datetime, schedules: ScheduleCache
) -> BatchReport:
    """Plan the locked due ``tasks`` at ``now``: insert their executions and advance them (one transaction).

    A task whose stored schedule no longer parses is paused with the reason instead of failing the batch;
    that pause is a change to the task, audited like any other (actor :data:`PLANNER_ACTOR`).
    Cancelling the executions that ``replace`` supersedes is left to the caller (``BatchReport.replaced``),
    after this transaction: see :meth:`scheduler.planning.planner.Planner.plan_batch`.
    """
    watched = [task.id for task in tasks if task.overlap_policy != "allow"]
    active = active_executions(connection, watched)
    plans: dict[int, TaskPlan] = {}
    by_id = {task.id: task for task in tasks}
    advances: list[TaskAdvance] = []
    rows: list[dict[str, Any]] = []
    parked: list[AuditRecord] = []
    rules = _calendar_rules(connection, tasks)
    for task in tasks:
        try:
            schedule = schedules.get(task)
        except (SchedulerError, ValueError) as error:
            # Stored text that no longer parses (say a zone dropped from tzdata): park the task, loudly.
            logger.error("task %s (%s): bad schedule, pausing it: %s", task.id, task.name, error)
            reason = f"{PARKED_PREFIX}{error}"
            changes = {"status": "paused", "status_reason": reason, "next_run_at": None}
            before = tasks_sql.get_task(connection, task.id)  # the whole task, for the audit row
            paused = tasks_sql.update_task(connection, task.id, changes, now=now)
            parked.append(AuditRecord("pause", task.id, task.name, public_task(before), public_task(paused)))
            continue
        excluded = _exclusion(schedule, rules.get(task.id))
        plans[task.id] = plan = plan_task(
            task, schedule, now, has_active=task.id in active, excluded=excluded
        )
        rows.extend(execution_row(task, slot, now, schedule) for slot in plan.slots)
    inserted = _insert_grouped(connection, rows)
    runs = Counter(task_id for _, task_id, status in inserted if status == "pending")
    for task_id, plan in plans.items():
        task, ran = by_id[task_id], runs[task_id]
        advances.append(
            TaskAdvance(
                task_id=task_id,
                next_run_at=plan.next_run_at,
                run_count=task.run_count + ran,
                last_run_at=now if ran else task.last_run_at,
                status="completed" if plan.completed_reason else "active",
                status_reason=plan.completed_reason or task.status_reason,
            )
        )
    advance_tasks(connection, advances)
    insert_audit(connection, parked, actor=PLANNER_ACTOR, at=now)
    replaced = [
        execution_id
        for task in tasks
        if task.overlap_policy == "replace" and runs[task.id]
        for execution_id in active.get(task.id, [])
    ]
    return BatchReport(
        due=len(tasks),
        created=sum(runs.values()),
        skipped=sum(1 for _, _, status in inserted if status != "pending"),
        misfired=sum(plan.misfired for plan in plans.values()),
        replaced=tuple(replaced),
        dispatches=tuple(
            Dispatch(
                execution_id,
                by_id[task_id].queue,
                by_id[task_id].command,
                by_id[task_id].name,
                timeout_s=by_id[task_id].timeout_ms / 1000,
            )
            for execution_id, task_id, status in inserted
            if status == "pending"
        ),
    )
