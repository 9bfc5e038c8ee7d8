"""Tasks as code inside one connection: read what a plan needs, and write a plan (bulk statements, one audit
row per changed task). :class:`~scheduler.service.SchedulerService` opens the transaction and emits the
events; docs/tasks-as-code.md describes the behaviour.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from scheduler.commands.registry import CommandRegistry
from scheduler.errors import InvalidInput, UnknownCalendar
from scheduler.records import AuditRecord, Task
from scheduler.redaction import public_task
from scheduler.rules import timing
from scheduler.rules.fields import validate_name
from scheduler.rules.taskfile import TaskFileError, TasksFile
from scheduler.rules.taskplan import Drift, TaskPlan, check_source, plan_file
from scheduler.rules.versions import with_rules
from scheduler.settings import Settings
from scheduler.storage import alerts as alerts_sql
from scheduler.storage import audit as audit_sql
from scheduler.storage import calendars as calendars_sql
from scheduler.storage import manual_runs, task_sets
from scheduler.storage import tasks as tasks_sql
from scheduler.storage.clock import db_now

PRUNE_REASON = "pruned: not in its tasks file"


@dataclass
class Applied:
    """The tasks an apply changed, by what happened to them (each as it is now; deleted: as it was)."""

    created: list[Task] = field(default_factory=list)
    updated: list[Task] = field(default_factory=list)
    deleted: list[Task] = field(default_factory=list)
    paused: list[Task] = field(default_factory=list)


def file_source(parsed: TasksFile, given: str | None) -> str:
    """The source: ``given`` (--source), else the file's ``source:``, else its path as given (normalised)."""
    if given is not None:
        return check_source(given)
    if parsed.source is not None:
        return check_source(parsed.source, "source (in the file)")
    if parsed.path in ("-", "<stdin>"):
        raise InvalidInput("a tasks file read from stdin needs --source NAME (or 'source:' in the file)")
    return check_source(os.path.normpath(parsed.path))


def make_plan(
    connection: Connection,
    parsed: TasksFile,
    *,
    source: str,
    prune: bool,
    prune_mode: str,
    settings: Settings,
    commands: CommandRegistry,
    lock: bool = False,
) -> TaskPlan:
    """Read the source's tasks (row-locked with ``lock``), the holders of the file's names and the drift;
    return the plan (validating every task on the way)."""
    now = db_now(connection)
    stored = task_sets.tasks_of_source(connection, source, lock=lock)
    names: list[str] = []
    for entry in parsed.tasks:
        try:
            names.append(validate_name(entry.fields.get("name")))
        except InvalidInput:
            continue  # plan_file reports it, at its line
    drift: dict[int, list[Drift]] = defaultdict(list)
    for row in task_sets.drift(connection, source):
        if row.task_id is not None:
            drift[row.task_id].append(Drift(row.task_id, row.actor, row.at, row.action))
    holders = {task.name: task for task in stored} | task_sets.tasks_named(
        connection, names, other_than=source
    )
    rules = alerts_sql.rules_of_source(connection, source)
    plan = plan_file(
        parsed, source=source, stored=stored, holders=holders, drift=drift, stored_rules=rules,
        prune=prune, prune_mode=prune_mode, settings=settings, commands=commands, now=now,
    )  # fmt: skip
    _require_calendars(connection, parsed, plan, lock=lock)
    return plan


def _require_calendars(connection: Connection, parsed: TasksFile, plan: TaskPlan, *, lock: bool) -> None:
    """Every calendar a created or updated task names exists (share-locked until the commit with ``lock``);
    else the error names the task's line."""
    wanted: dict[str, tuple[str, int]] = {}  # calendar -> (task key, line)
    entries = {entry.key: entry for entry in parsed.tasks}
    for item in plan.tasks:
        values = item.definition.columns() if item.definition is not None else item.columns
        for field_name in ("exclude", "only_in"):
            for calendar in values.get(field_name) or ():
                wanted.setdefault(calendar, (item.key, entries[item.key].line_of(field_name)))
    if not wanted:
        return
    stored = calendars_sql.calendar_days(connection, list(wanted), lock=lock)
    for calendar, (key, line) in wanted.items():
        if calendar not in stored:
            known = [c.name for c in calendars_sql.list_calendars(connection)]
            raise TaskFileError(parsed.path, line, f"task {key!r}: {UnknownCalendar(calendar, known)}")


def write_plan(connection: Connection, plan: TaskPlan, *, actor: str) -> Applied:
    """Make the database match ``plan``: deletions first (they free names), updates, creations, pauses, then
    the alert rules; one audit row per task (``apply:<action>``, the task with its own alert rules)."""
    now = db_now(connection)
    done = Applied()
    known = [item.task.id for item in plan.tasks if item.task is not None and item.action != "unchanged"]
    audited = _Audited(alerts_sql.rules_of_tasks(connection, known))
    for item in plan.tasks:
        if item.action == "delete" and item.task is not None:
            manual_runs.cancel_open_executions(connection, item.task.id, now=now, reason="task pruned")
            tasks_sql.delete_task(connection, item.task.id)
            done.deleted.append(item.task)
            audited.add("apply:delete", item.task, None)
    updates = {item.task.id: item for item in plan.tasks if item.action == "update" and item.task is not None}
    columns = [(task_id, item.columns) for task_id, item in updates.items() if item.columns]
    written = {task.id: task for task in task_sets.update_tasks(connection, columns, now=now)}
    for task_id, item in updates.items():
        assert item.task is not None
        audited.set_rules(task_id, item.rules)
        done.updated.append(audited.add("apply:update", item.task, written.get(task_id, item.task)))
    creations = [item for item in plan.tasks if item.action == "create" and item.definition is not None]
    rows = [{**item.columns_to_create(), "source": plan.source, "key": item.key} for item in creations]
    done.created = task_sets.insert_tasks(connection, rows, now=now)
    # A jitter's offsets hash the task id, known only now (as create_task does).
    jittered = [
        (task.id, {"next_run_at": timing.task_first_fire(task, now)})
        for task in done.created
        if task.jitter_ms
    ]
    if jittered:
        fixed = {task.id: task for task in task_sets.update_tasks(connection, jittered, now=now)}
        done.created = [fixed.get(task.id, task) for task in done.created]
    for task, item in zip(done.created, creations, strict=True):
        audited.set_rules(task.id, item.rules)
        audited.add("apply:create", None, task)
    paused = [item.task for item in plan.tasks if item.action == "pause" and item.task is not None]
    reason = {"status": "paused", "status_reason": PRUNE_REASON}
    done.paused = task_sets.update_tasks(connection, [(task.id, reason) for task in paused], now=now)
    was = {task.id: task for task in paused}
    for task in done.paused:
        audited.add("apply:pause", was[task.id], task)
    alerts_sql.put_rules_of_tasks(connection, audited.changed_rules)
    audit_sql.insert_audit(connection, audited.records, actor=actor, at=now)
    return done


class _Audited:
    """The audit rows of an apply, each task with its own alert rules before and after, and the rules that
    change (to write)."""

    def __init__(self, rules: dict[int, dict[str, Any]]) -> None:
        self.before = rules
        self.changed_rules: dict[int, dict[str, Any]] = {}
        self.records: list[AuditRecord] = []

    def set_rules(self, task_id: int, rules: dict[str, Any] | None) -> None:
        if rules is not None and rules != self.before.get(task_id, {}):
            self.changed_rules[task_id] = rules

    def rules(self, task_id: int) -> dict[str, Any]:
        return self.changed_rules.get(task_id, self.before.get(task_id, {}))

    def add(self, action: str, before: Task | None, after: Task | None) -> Task:
        task = after or before
        assert task is not None
        old = None if before is None else with_rules(public_task(before), self.before.get(before.id, {}))
        new = None if after is None else with_rules(public_task(after), self.rules(after.id))
        self.records.append(AuditRecord(action, task.id, task.name, old, new))
        return task
