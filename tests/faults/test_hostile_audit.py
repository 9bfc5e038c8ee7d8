"""Invariant 9: no path changes a task without an audit row (when, actor, action, before/after), and no audit
row claims a change that did not happen.

Every public method of :class:`SchedulerService` is classified as a mutation or a read (a new method fails
the first test until someone decides which it is). Each mutation is called in its forms (one task, all tasks,
no-op) and the whole ``scheduled_tasks`` table is compared before and after with the audit rows it added:
each changed task has exactly one row whose ``before``/``after`` are the task's JSON (data redacted) before
and after. Reads change nothing and audit nothing. The planner's own decision to pause a task (its stored
schedule no longer parses) is audited too.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from scheduler.commands.loading import load_registry
from scheduler.errors import InvalidInput
from scheduler.planning.planner import Planner
from scheduler.planning.publisher import NullPublisher
from scheduler.records import AuditEntry
from scheduler.redaction import public_task
from scheduler.service import SchedulerService
from scheduler.settings import Settings
from scheduler.storage.console import TaskFilter
from scheduler.storage.mapping import audit_from_row, task_from_row
from scheduler.storage.tables import audit, executions, tasks

MUTATIONS = {
    "create_task", "update_task", "delete_task", "pause", "resume", "run_task_now", "skip", "backfill",
    "cancel_backfill", "apply_tasks_file", "rollback_task", "silence",
}  # fmt: skip
READS = {
    "get_task", "list_tasks", "count_tasks", "get_execution", "history", "logs", "audit", "next_runs",
    "get_task_stats", "validate_schedule", "similar_task_names", "on", "verify_audit", "preview_backfill",
    "get_backfill", "backfills", "plan_tasks_file", "export_tasks", "task_versions", "diff_task_versions",
    "alert_rules", "alerts", "unsent_alerts", "silences", "task_sources",
    "task_page", "task_queues", "paused_by", "duration_percentiles", "logs_after", "runs_per_day",
    "list_calendars", "get_calendar", "calendar_rule",
}  # fmt: skip
# Mutations that record executions (and one audit row) without changing a task's definition.
RUN_ACTIONS = {
    "run_task_now": "run",
    "skip": "skip",
    "backfill": "backfill",
    "cancel_backfill": "cancel-backfill",
}
# Changes to calendars, not to tasks: each writes one audit row of its own action (task_id null).
CALENDAR_MUTATIONS = {"create_calendar": "calendar_create", "delete_calendar": "calendar_delete"}
CONSTRUCTORS = {"from_settings", "as_actor"}
HOUR_ZERO = datetime(2026, 1, 1, tzinfo=UTC)
ACTION_OF = {
    "create_task": "create",
    "update_task": "update",
    "delete_task": "delete",
    "pause": "pause",
    "resume": "resume",
    "run_task_now": "run",
    "rollback_task": "rollback",
}
# A method whose audit rows may carry one of several actions (what the apply did to each task).
ACTIONS_OF = {"apply_tasks_file": ("apply:create", "apply:update", "apply:delete", "apply:pause")}
FILE = b"source: s\ntasks:\n  - {key: one, name: f1, command: test:echo, schedule: 1h}\n"
FILE_TWO = FILE + b"  - {key: two, name: f2, command: test:echo, schedule: 2h}\n"


def test_every_public_method_of_the_service_is_classified_as_a_mutation_or_a_read() -> None:
    public = {
        name
        for name, member in inspect.getmembers(SchedulerService)
        if not name.startswith("_") and callable(member)
    }
    assert public == MUTATIONS | READS | CONSTRUCTORS | CALENDAR_MUTATIONS.keys()


def test_calendar_changes_write_one_audit_row_each_and_refusals_none(engine: Engine) -> None:
    settings = Settings()
    service = SchedulerService(engine, settings, commands=load_registry(settings), actor="auditor")
    tasks_before = _tasks(engine)

    created = service.create_calendar("holidays", ["2026-12-25", "sat"])
    [entry] = _audit_after(engine, 0)
    assert (entry.action, entry.actor, entry.task_id, entry.before) == (
        "calendar_create",
        "auditor",
        None,
        None,
    )
    assert entry.after == {"calendar": "holidays", "days": created.days}
    last = entry.id
    service.list_calendars(), service.get_calendar("holidays"), service.calendar_rule(exclude=["holidays"])
    assert _audit_after(engine, last) == []  # reads audit nothing
    for refused in (
        lambda: service.create_calendar("holidays", ["sun"]),  # the name is taken
        lambda: service.create_calendar("bad", ["2026-13-01"]),
        lambda: service.delete_calendar("nope"),
    ):
        with pytest.raises(InvalidInput):
            refused()
    service.create_task(name="uses", command="test:echo", schedule="5m", exclude=["holidays"])
    last = _last_audit_id(engine)
    with pytest.raises(InvalidInput):
        service.delete_calendar("holidays")  # in use
    assert _audit_after(engine, last) == []
    service.update_task("uses", exclude=None)
    last = _last_audit_id(engine)

    service.delete_calendar("holidays")
    [entry] = _audit_after(engine, last)
    assert (entry.action, entry.actor, entry.task_id, entry.after) == (
        "calendar_delete",
        "auditor",
        None,
        None,
    )
    assert entry.before == {"calendar": "holidays", "days": created.days}
    assert set(_tasks(engine)) - set(tasks_before) == {service.get_task("uses").id}


def _tasks(engine: Engine) -> dict[int, dict[str, Any]]:
    with engine.connect() as connection:
        return {row.id: public_task(task_from_row(row)) for row in connection.execute(select(tasks))}


def _audit_after(engine: Engine, last_id: int) -> list[AuditEntry]:
    with engine.connect() as connection:
        query = select(audit).where(audit.c.id > last_id).order_by(audit.c.id)
        return [audit_from_row(row) for row in connection.execute(query)]


def _last_audit_id(engine: Engine) -> int:
    entries = _audit_after(engine, 0)
    return entries[-1].id if entries else 0


def _executions(engine: Engine) -> int:
    with engine.connect() as connection:
        return len(connection.execute(select(executions.c.id)).all())


def _definition(task: dict[str, Any]) -> dict[str, Any]:
    """A task's JSON without the runtime bookkeeping a run moves (not audited, docs/reliability.md)."""
    return {key: value for key, value in task.items() if key != "last_run_at"}


def _recorded(method: str, result: Any) -> int:
    """How many executions a call of ``method`` that returned ``result`` inserted."""
    return {"run_task_now": 1, "skip": len(result) if isinstance(result, list) else 0}.get(
        method, getattr(result, "created", 0) if method == "backfill" else 0
    )


def _check(engine: Engine, service: SchedulerService, method: str, call: Callable[[], Any]) -> int:
    """Run one service call; check its audit rows against the task table's change. Returns rows added."""
    before, last, runs = _tasks(engine), _last_audit_id(engine), _executions(engine)
    result = call()
    after, added = _tasks(engine), _audit_after(engine, last)
    changed = {
        task_id for task_id in before.keys() | after.keys() if before.get(task_id) != after.get(task_id)
    }
    if method in READS:
        assert not changed and not added and _executions(engine) == runs, f"{method} changed something"
        return 0
    if (
        method in RUN_ACTIONS
    ):  # the definition does not change (last_run_at is bookkeeping); runs are recorded
        assert before.keys() == after.keys()
        assert all(_definition(before[i]) == _definition(after[i]) for i in before), method
        assert len(changed) <= 1 and len(added) == 1 and added[0].action == RUN_ACTIONS[method]
        assert _executions(engine) == runs + _recorded(method, result)
        if method == "run_task_now":
            assert _recorded(method, result) == 1
            assert added[0].after is not None and "execution_id" in added[0].after
        assert added[0].actor == service.actor
        return 1
    if method == "silence":  # the task does not change; the silence is recorded and audited
        assert before == after and len(added) == 1 and added[0].action == "silence"
        assert added[0].after is not None and "silence_id" in added[0].after
        assert added[0].actor == service.actor
        return 1
    assert sorted(entry.task_id for entry in added if entry.task_id is not None) == sorted(changed), (
        f"{method}: tasks changed {sorted(changed)}, audited {[e.task_id for e in added]}"
    )
    for entry in added:
        assert entry.task_id is not None
        assert (
            entry.action in ACTIONS_OF.get(method, (ACTION_OF.get(method),)) and entry.actor == service.actor
        )
        assert entry.before == before.get(entry.task_id), f"{method}: before of task {entry.task_id}"
        assert entry.after == after.get(entry.task_id), f"{method}: after of task {entry.task_id}"
    return len(added)


def test_every_mutation_writes_one_audit_row_per_changed_task_and_reads_write_none(engine: Engine) -> None:
    settings = Settings()
    service = SchedulerService(engine, settings, commands=load_registry(settings), actor="auditor")
    service.create_calendar("weekend", ["sat", "sun"])  # for the calendar reads (its own audit: below)
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("create_task", lambda: service.create_task(name="a", command="test:echo", schedule="5m")),
        (
            "create_task",
            lambda: service.create_task({"name": "b", "command": "test:echo", "data": {"token": "t"}}),
        ),
        (
            "create_task",
            lambda: service.create_task(name="c", command="test:echo", schedule="@daily", once=True),
        ),
        ("update_task", lambda: service.update_task("a", schedule="10m", data={"password": "p", "x": 1})),
        ("update_task", lambda: service.update_task("a", retries=service.get_task("a").retries)),  # no-op
        ("update_task", lambda: service.update_task(2, name="b2", queue="reports")),
        ("pause", lambda: service.pause("a", reason="maintenance")),
        ("pause", lambda: service.pause("a")),  # already paused: no-op
        ("pause", lambda: service.pause()),  # every active task
        ("resume", lambda: service.resume("a")),
        ("resume", lambda: service.resume()),  # every paused task
        ("resume", lambda: service.resume("a")),  # not paused: no-op
        ("run_task_now", lambda: service.run_task_now("a")),
        ("run_task_now", lambda: service.run_task_now("b2")),
        ("run_task_now", lambda: service.run_task_now("b2", data={"token": "t", "x": 2})),
        ("skip", lambda: service.skip("a", count=2, note="holiday")),
        ("create_task", lambda: service.create_task(name="d", command="test:echo", schedule="0 * * * *")),
        ("backfill", lambda: service.backfill("d", start=HOUR_ZERO, end=HOUR_ZERO + timedelta(hours=3))),
        ("preview_backfill", lambda: service.preview_backfill("d", start=HOUR_ZERO, end=HOUR_ZERO)),
        ("backfills", lambda: service.backfills(task="d")),
        ("get_backfill", lambda: service.get_backfill(service.backfills(limit=1)[0].id)),
        ("cancel_backfill", lambda: service.cancel_backfill(service.backfills(limit=1)[0].id)),
        ("pause", lambda: service.pause("d", reason="freeze", until=HOUR_ZERO + timedelta(days=400_000))),
        ("delete_task", lambda: service.delete_task("c")),
        ("get_task", lambda: service.get_task("a")),
        ("list_tasks", lambda: service.list_tasks()),
        ("count_tasks", lambda: service.count_tasks(status="active")),
        ("history", lambda: service.history()),
        ("audit", lambda: service.audit()),
        ("verify_audit", lambda: service.verify_audit()),
        ("next_runs", lambda: service.next_runs(count=3)),
        ("get_task_stats", lambda: service.get_task_stats()),
        ("validate_schedule", lambda: service.validate_schedule("*/5 * * * *")),
        ("similar_task_names", lambda: service.similar_task_names("b3")),
        ("get_execution", lambda: service.get_execution(service.history(limit=1)[0].id)),
        ("logs", lambda: service.logs(service.history(limit=1)[0].id)),
        ("on", lambda: service.on("task-created", lambda payload: None)),
        ("silence", lambda: service.silence("a", duration=timedelta(hours=1), note="drill")),
        ("alert_rules", lambda: service.alert_rules("a")),
        ("alerts", lambda: service.alerts()),
        ("unsent_alerts", lambda: service.unsent_alerts()),
        ("silences", lambda: service.silences()),
        ("apply_tasks_file", lambda: service.apply_tasks_file(FILE_TWO.replace(b"1h", b"3h"), path="f")),
        (
            "apply_tasks_file",
            lambda: service.apply_tasks_file(FILE_TWO.replace(b"1h", b"3h"), path="f"),
        ),  # no-op
        ("apply_tasks_file", lambda: service.apply_tasks_file(FILE, path="f", prune=True)),  # update, delete
        (
            "apply_tasks_file",
            lambda: service.apply_tasks_file(b"source: s\ntasks: []\n", prune=True, prune_mode="pause"),
        ),
        ("plan_tasks_file", lambda: service.plan_tasks_file(FILE_TWO, path="f")),
        ("export_tasks", lambda: service.export_tasks(source="s")),
        ("task_versions", lambda: service.task_versions("a")),
        ("diff_task_versions", lambda: service.diff_task_versions("a", from_version=1)),
        ("rollback_task", lambda: service.rollback_task("a", to=1)),
        ("rollback_task", lambda: service.rollback_task("a", to=1)),  # equal already: no-op
        ("task_page", lambda: service.task_page(TaskFilter(text="a"), sort="name", descending=True)),
        ("task_queues", lambda: service.task_queues()),
        ("task_sources", lambda: service.task_sources()),
        ("paused_by", lambda: service.paused_by([1, 2, 3])),
        ("duration_percentiles", lambda: service.duration_percentiles("a", (0.5, 0.95))),
        ("logs_after", lambda: service.logs_after(service.history(limit=1)[0].id, 0)),
        ("runs_per_day", lambda: service.runs_per_day("a")),
        ("list_calendars", lambda: service.list_calendars()),
        ("get_calendar", lambda: service.get_calendar("weekend")),
        ("calendar_rule", lambda: service.calendar_rule(timezone="Asia/Tokyo", only_in=["weekend"])),
        ("delete_task", lambda: service.delete_task("a")),
    ]
    assert {method for method, _ in steps} == MUTATIONS | READS
    rows = sum(_check(engine, service, method, call) for method, call in steps)
    # creates, updates, pauses, resumes, runs, deletes; then a run with data, a skip, a create, a backfill,
    # its cancel and a timed pause; applies (2 creates, an update and a delete, a pause), a rollback;
    # a silence
    assert rows == 3 + 2 + 1 + 2 + 1 + 2 + 2 + 2 + 1 + 1 + 1 + 1 + 1 + 1 + 5 + 1 + 1


@pytest.mark.parametrize("reason", ["a zone tzdata no longer has", "text that no longer parses"])
def test_the_planner_pausing_a_task_whose_schedule_no_longer_parses_is_audited(
    engine: Engine, reason: str
) -> None:
    settings = Settings()
    service = SchedulerService(engine, settings, commands=load_registry(settings), actor="auditor")
    task = service.create_task(
        name="broken", command="test:echo", schedule="0 * * * *", timezone="Europe/Berlin"
    )
    broken = (
        {"timezone": "Mars/Olympus_Mons"} if reason.startswith("a zone") else {"schedule": "every fortnight"}
    )
    with engine.begin() as connection:
        connection.execute(
            update(tasks)
            .where(tasks.c.id == task.id)
            .values(next_run_at=task.anchor_at - timedelta(seconds=1), **broken)
        )
    before, last = _tasks(engine)[task.id], _last_audit_id(engine)

    Planner(engine, settings, NullPublisher()).tick()

    after = _tasks(engine)[task.id]
    assert after["status"] == "paused" and "does not parse" in (after["status_reason"] or "")
    (entry,) = _audit_after(engine, last)
    assert (entry.action, entry.actor, entry.task_id) == ("pause", "planner", task.id)
    assert entry.before == before and entry.after == after
