"""SchedulerService task mutations and reads on real databases (SQLite and PostgreSQL): rows, audit, events.

No mocks: rows are counted, audit rows read back, events recorded by a real handler.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select, text, update
from sqlalchemy.engine import make_url

from scheduler.commands.loading import load_registry
from scheduler.errors import (
    DatabaseUnavailable,
    InvalidField,
    InvalidInput,
    InvalidSchedule,
    InvalidTimezone,
    NameTaken,
    PermissionDenied,
    TaskNotFound,
    UnknownCommand,
)
from scheduler.observability.events import EVENT_NAMES, TASK_EVENT
from scheduler.records import as_utc
from scheduler.redaction import REDACTED
from scheduler.rules.validation import validate_new_task
from scheduler.service import SchedulerService
from scheduler.settings import Settings
from scheduler.storage import db_now, translate_db_errors
from scheduler.storage.db import make_engine
from scheduler.storage.tables import audit, executions, tasks
from scheduler.storage.tasks import insert_task

SECRET_DATA = {"password": "hunter2", "nested": {"api_key": "k-123", "region": "eu"}, "plain": 1}
SETTINGS = Settings(commands={"backup:db": ["/bin/echo", "{target}"]})


class Recorder:
    """Collects every task event as (event, payload)."""

    def __init__(self, service: SchedulerService) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        for name in EVENT_NAMES:
            if name != TASK_EVENT:
                service.on(name, self._handler(name))

    def _handler(self, name: str) -> Callable[[dict[str, Any]], None]:
        def handle(payload: dict[str, Any]) -> None:
            self.events.append((name, payload))

        return handle

    def names(self) -> list[str]:
        return [name for name, _ in self.events]


@pytest.fixture
def service(engine: Engine) -> SchedulerService:
    return SchedulerService(engine, SETTINGS, commands=load_registry(SETTINGS), actor="alice")


@pytest.fixture
def recorder(service: SchedulerService) -> Recorder:
    return Recorder(service)


def counts(engine: Engine) -> tuple[int, int]:
    with engine.connect() as connection:
        task_count = connection.execute(select(func.count()).select_from(tasks)).scalar_one()
        audit_count = connection.execute(select(func.count()).select_from(audit)).scalar_one()
    return task_count, audit_count


def audit_rows(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(select(audit).order_by(audit.c.id)))


def now_of(engine: Engine) -> datetime:
    with engine.connect() as connection:
        return db_now(connection)


def create(service: SchedulerService, name: str = "backup", **fields: Any) -> Any:
    return service.create_task(name=name, command=fields.pop("command", "test:echo"), **fields)


# ------------------------------------------------------------------------------------------------ create


def test_create_stores_the_task_with_an_audit_row_and_one_event(
    service: SchedulerService, recorder: Recorder, engine: Engine
) -> None:
    before = now_of(engine)
    task = create(service, schedule="5m", data=SECRET_DATA, retries=2)
    assert task.id > 0
    assert (task.name, task.schedule_kind, task.status, task.retries) == ("backup", "interval", "active", 2)
    assert task.data == SECRET_DATA  # the command gets its data intact
    assert task.next_run_at == task.anchor_at + timedelta(minutes=5)
    assert before <= task.created_at <= now_of(engine)
    [row] = audit_rows(engine)
    assert (row.actor, row.action, row.task_id, row.task_name, row.before) == (
        "alice",
        "create",
        task.id,
        "backup",
        None,
    )
    assert row.after["data"] == {
        "password": REDACTED,
        "nested": {"api_key": REDACTED, "region": "eu"},
        "plain": 1,
    }
    assert row.after["schedule"] == "5m"
    [(name, payload)] = recorder.events
    assert name == "task-created"
    assert payload["task"]["id"] == task.id
    assert payload["task"]["data"]["password"] == REDACTED
    with engine.connect() as connection:
        stored = connection.execute(select(tasks.c.data).where(tasks.c.id == task.id)).scalar_one()
    assert stored == SECRET_DATA


def test_create_merges_a_spec_mapping_with_keyword_fields(service: SchedulerService) -> None:
    task = service.create_task({"name": "spec", "command": "test:echo", "retries": 1}, retries=4)
    assert (task.name, task.retries, task.schedule_kind) == ("spec", 4, "manual")


def test_create_once_stores_a_once_schedule_at_the_first_fire_time(service: SchedulerService) -> None:
    task = create(service, schedule="0 3 * * *", once=True, timezone="Europe/Berlin")
    assert task.schedule_kind == "once"
    assert task.next_run_at is not None
    assert task.schedule == task.next_run_at.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"schedule": "61 * * * *"}, InvalidSchedule),
        ({"schedule": "5x"}, InvalidSchedule),
        ({"schedule": ""}, InvalidSchedule),
        ({"schedule": "@fortnightly"}, InvalidSchedule),
        ({"schedule": "0 0 30 2 *"}, InvalidSchedule),
        ({"schedule": "*/0 * * * *"}, InvalidSchedule),
        ({"timezone": "Mars/Olympus"}, InvalidTimezone),
        ({"data": [1, 2]}, InvalidField),
        ({"data": {"blob": "x" * (64 * 1024)}}, InvalidField),
        ({"name": ""}, InvalidField),
        ({"name": "n" * 201}, InvalidField),
        ({"name": "bad\x1bname"}, InvalidField),
        ({"command": "rm -rf /"}, UnknownCommand),
        ({"command": "backup:nothing"}, UnknownCommand),
        ({"command": "backup:db", "data": {}}, InvalidField),
        ({"retries": -1}, InvalidField),
        ({"timeout_ms": 0}, InvalidField),
        ({"data": {"nul": "\x00"}}, InvalidField),
    ],
    ids=lambda value: str(value)[:40] if isinstance(value, dict) else value.__name__,
)
def test_bad_input_stores_nothing_and_fires_no_event(
    service: SchedulerService,
    recorder: Recorder,
    engine: Engine,
    fields: dict[str, Any],
    error: type[Exception],
) -> None:
    create(service, "existing")
    recorder.events.clear()
    before = counts(engine)
    with pytest.raises(error):
        service.create_task({"name": "new", "command": "test:echo", "schedule": "5m", **fields})
    assert counts(engine) == before
    assert recorder.events == []


@pytest.mark.parametrize("name", ["existing", "  existing  "])
def test_a_taken_name_is_rejected(
    service: SchedulerService, recorder: Recorder, engine: Engine, name: str
) -> None:
    create(service, "existing")
    recorder.events.clear()
    before = counts(engine)
    with pytest.raises(NameTaken) as error:
        create(service, name)
    assert isinstance(error.value, InvalidInput)
    assert counts(engine) == before
    assert recorder.events == []


# ------------------------------------------------------------------------------------------------- reads


def test_get_finds_a_task_by_id_by_name_and_by_digit_string(service: SchedulerService) -> None:
    task = create(service)
    assert service.get_task(task.id) == task
    assert service.get_task("backup") == task
    assert service.get_task(f" {task.id} ") == task
    for missing in (task.id + 100, "nope", str(task.id + 100)):
        with pytest.raises(TaskNotFound) as error:
            service.get_task(missing)
        assert isinstance(error.value, LookupError)


def test_list_filters_by_status_and_limits(service: SchedulerService) -> None:
    second = [create(service, name) for name in ("a", "b", "c")][1]
    service.pause(second.id)
    assert [task.name for task in service.list_tasks()] == ["a", "b", "c"]
    assert [task.name for task in service.list_tasks(status="paused")] == ["b"]
    assert [task.name for task in service.list_tasks(status="active", limit=1)] == ["a"]
    with pytest.raises(InvalidField):
        service.list_tasks(status="sleeping")
    with pytest.raises(InvalidField):
        service.list_tasks(limit=0)


def test_a_listed_task_carries_every_stored_field_with_its_next_run_and_last_outcome(
    service: SchedulerService,
) -> None:
    create(service, "a", schedule=["5m", "0 3 * * *"], data=SECRET_DATA, jitter_ms=1_000)
    paused = create(service, "b", schedule="1h", data={"list": [1, {"x": 2}]})
    service.pause(paused.id)
    listed = {task.name: task for task in service.list_tasks()}
    for name, moved in (("a", False), ("b", True)):
        stored, shown = service.get_task(name), listed[name]
        assert type(shown).__name__ == "ListedTask" and shown.last_outcome is None
        for field in dataclasses.fields(stored):
            if field.name != "next_run_at":
                assert getattr(shown, field.name) == getattr(stored, field.name), field.name
        assert (shown.next_run_at is None) == moved
    assert listed["a"].data == service.get_task("a").data  # secrets as stored: list output redacts them
    assert listed["a"].schedules == ["5m", "0 3 * * *"] and listed["a"].jitter_ms == 1_000


# ------------------------------------------------------------------------------------------------ update


def test_update_changes_fields_audits_before_and_after_and_fires_one_event(
    service: SchedulerService, recorder: Recorder, engine: Engine
) -> None:
    task = create(service, schedule="5m", data=SECRET_DATA)
    recorder.events.clear()
    updated = service.update_task("backup", name="backup-v2", retries=0, data={"token": "t2"})
    assert (updated.id, updated.name, updated.retries, updated.data) == (
        task.id,
        "backup-v2",
        0,
        {"token": "t2"},
    )
    assert updated.next_run_at == task.next_run_at  # timing untouched
    row = audit_rows(engine)[-1]
    assert (row.action, row.actor, row.task_name) == ("update", "alice", "backup-v2")
    assert (row.before["name"], row.before["retries"], row.before["data"]["password"]) == (
        "backup",
        3,
        REDACTED,
    )
    assert (row.after["name"], row.after["data"]) == ("backup-v2", {"token": REDACTED})
    assert recorder.names() == ["task-updated"]
    assert recorder.events[0][1]["task"]["data"] == {"token": REDACTED}


def test_update_with_nothing_new_writes_nothing(
    service: SchedulerService, recorder: Recorder, engine: Engine
) -> None:
    task = create(service, retries=2)
    recorder.events.clear()
    before = counts(engine)
    assert service.update_task(task.id, retries=2, name=" backup ") == task
    assert counts(engine) == before
    assert recorder.events == []


def test_update_of_the_schedule_recomputes_the_next_run(service: SchedulerService, engine: Engine) -> None:
    task = create(service, schedule="5m")
    updated = service.update_task(task.id, schedule="0 0 1 1 *")
    assert updated.schedule_kind == "cron"
    assert updated.next_run_at == datetime(now_of(engine).year + 1, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"schedule": "61 * * * *"}, InvalidSchedule),
        ({"timezone": "Mars/Olympus"}, InvalidTimezone),
        ({"data": [1, 2]}, InvalidField),
        ({"name": ""}, InvalidField),
        ({"name": "taken"}, NameTaken),
        ({"command": "rm -rf /"}, UnknownCommand),
        ({"retries": -1}, InvalidField),
        ({"timeout_ms": 0}, InvalidField),
        ({"once": True}, InvalidField),
    ],
    ids=lambda value: str(value)[:30] if isinstance(value, dict) else value.__name__,
)
def test_a_bad_update_changes_nothing_and_fires_no_event(
    service: SchedulerService,
    recorder: Recorder,
    engine: Engine,
    changes: dict[str, Any],
    error: type[Exception],
) -> None:
    task = create(service)
    create(service, "taken")
    recorder.events.clear()
    before = counts(engine)
    with pytest.raises(error):
        service.update_task(task.id, **changes)
    assert counts(engine) == before
    assert service.get_task(task.id) == task
    assert recorder.events == []


@pytest.mark.parametrize("action", ["update", "delete", "pause", "resume", "run"])
def test_an_unknown_task_is_not_found(
    service: SchedulerService, recorder: Recorder, engine: Engine, action: str
) -> None:
    create(service)
    recorder.events.clear()
    before = counts(engine)
    calls: dict[str, Callable[[], object]] = {
        "update": lambda: service.update_task(999, retries=1),
        "delete": lambda: service.delete_task("ghost"),
        "pause": lambda: service.pause(999),
        "resume": lambda: service.resume("ghost"),
        "run": lambda: service.run_task_now(999),
    }
    with pytest.raises(TaskNotFound):
        calls[action]()
    assert counts(engine) == before
    assert recorder.events == []


# ------------------------------------------------------------------------------------------------ delete


def test_delete_removes_the_task_cancels_its_open_executions_and_keeps_history(
    service: SchedulerService, recorder: Recorder, engine: Engine
) -> None:
    task = create(service, data=SECRET_DATA)
    other = create(service, "other")
    now = now_of(engine)
    with engine.begin() as connection:
        for offset, status, task_id in [
            (1, "pending", task.id), (2, "queued", task.id), (3, "running", task.id),
            (4, "completed", task.id), (5, "retrying", task.id), (6, "pending", other.id),
        ]:  # fmt: skip
            connection.execute(
                insert(executions).values(
                    task_id=task_id, task_name="x", command="test:echo", status=status,
                    scheduled_for=now - timedelta(minutes=offset), created_at=now,
                )
            )  # fmt: skip
    recorder.events.clear()
    deleted = service.delete_task("backup")
    assert deleted == task
    with pytest.raises(TaskNotFound):
        service.get_task(task.id)
    with engine.connect() as connection:
        rows = connection.execute(
            select(executions.c.task_id, executions.c.status, executions.c.reason).order_by(executions.c.id)
        ).all()
    assert [tuple(row) for row in rows] == [
        (None, "cancelled", "task deleted"),
        (None, "cancelled", "task deleted"),
        (None, "running", None),
        (None, "completed", None),
        (None, "cancelled", "task deleted"),
        (other.id, "pending", None),
    ]
    row = audit_rows(engine)[-1]
    assert (row.action, row.task_id, row.task_name, row.after) == ("delete", task.id, "backup", None)
    assert row.before["data"]["nested"] == {"api_key": REDACTED, "region": "eu"}
    assert recorder.names() == ["task-deleted"]
    assert [entry.action for entry in service.audit(task="backup")] == ["delete", "create"]
    assert [entry.action for entry in service.audit(task=task.id)] == ["delete", "create"]


# ------------------------------------------------------------------------------------------ pause/resume


def test_pause_one_task_records_the_reason_and_pausing_again_is_a_no_op(
    service: SchedulerService, recorder: Recorder, engine: Engine
) -> None:
    task = create(service, schedule="5m")
    recorder.events.clear()
    [paused] = service.pause("backup", reason="  maintenance  ")
    assert (paused.status, paused.status_reason, paused.next_run_at) == (
        "paused",
        "maintenance",
        task.next_run_at,
    )
    row = audit_rows(engine)[-1]
    assert (row.action, row.before["status"], row.after["status"]) == ("pause", "active", "paused")
    assert recorder.names() == ["task-paused"]
    before = counts(engine)
    assert service.pause(task.id) == []
    assert counts(engine) == before
    assert recorder.names() == ["task-paused"]


def test_pause_all_pauses_only_active_tasks(
    service: SchedulerService, recorder: Recorder, engine: Engine
) -> None:
    _, b, _, done = (create(service, name, schedule="5m") for name in ("a", "b", "c", "done"))
    service.pause(b.id)
    with engine.begin() as connection:
        connection.execute(update(tasks).where(tasks.c.id == done.id).values(status="completed"))
    recorder.events.clear()
    changed = service.pause(reason="freeze")
    assert [task.name for task in changed] == ["a", "c"]
    assert {task.name: task.status for task in service.list_tasks()} == {
        "a": "paused", "b": "paused", "c": "paused", "done": "completed",
    }  # fmt: skip
    assert [payload["task"]["name"] for _, payload in recorder.events] == ["a", "c"]
    assert [row.action for row in audit_rows(engine)[-2:]] == ["pause", "pause"]
    assert service.pause() == []
    assert service.pause(done.id) == []


def test_resume_recomputes_the_next_run_from_now_without_replaying_the_pause(
    service: SchedulerService, recorder: Recorder, engine: Engine
) -> None:
    task = create(service, schedule="5m")
    service.pause(task.id)
    week_ago = task.anchor_at - timedelta(days=7)
    with engine.begin() as connection:  # as if paused for a week: anchor and pending slot far in the past
        connection.execute(
            update(tasks)
            .where(tasks.c.id == task.id)
            .values(anchor_at=week_ago, next_run_at=week_ago + timedelta(minutes=5), consecutive_failures=4)
        )
    recorder.events.clear()
    [resumed] = service.resume("backup")
    now = now_of(engine)
    assert resumed.status == "active"
    assert resumed.status_reason is None
    assert resumed.consecutive_failures == 0
    assert resumed.next_run_at is not None
    assert now - timedelta(minutes=5) < resumed.next_run_at <= now + timedelta(minutes=5)
    assert (resumed.next_run_at - week_ago) % timedelta(minutes=5) == timedelta(0)  # still on the anchor grid
    assert audit_rows(engine)[-1].action == "resume"
    assert recorder.names() == ["task-resumed"]
    assert service.resume(task.id) == []
    assert recorder.names() == ["task-resumed"]


def test_resume_all_resumes_only_paused_tasks(service: SchedulerService) -> None:
    a, b = create(service, "a", schedule="5m"), create(service, "b", schedule="5m")
    service.pause(a.id)
    assert [task.name for task in service.resume()] == ["a"]
    assert service.resume() == []
    assert {task.status for task in service.list_tasks()} == {"active"}
    assert b.status == "active"


def test_a_once_task_whose_time_passed_while_paused_completes_on_resume(
    service: SchedulerService, engine: Engine
) -> None:
    task = create(service, schedule="now")
    service.pause(task.id)
    with engine.begin() as connection:
        connection.execute(update(tasks).where(tasks.c.id == task.id).values(schedule="2020-01-01T00:00:00Z"))
    [resumed] = service.resume(task.id)
    assert (resumed.status, resumed.next_run_at) == ("completed", None)


def test_a_manual_task_resumes_as_active(service: SchedulerService) -> None:
    task = create(service)
    service.pause(task.id)
    [resumed] = service.resume(task.id)
    assert (resumed.status, resumed.next_run_at) == ("active", None)


# ------------------------------------------------------------------------------------------------- actor


def test_the_actor_is_the_argument_else_the_setting_else_the_os_user(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = load_registry(SETTINGS)
    assert SchedulerService(engine, SETTINGS, commands=registry, actor="bob").actor == "bob"
    configured = Settings(actor="ops-bot")
    assert SchedulerService(engine, configured, commands=registry).actor == "ops-bot"
    monkeypatch.setattr("getpass.getuser", lambda: "os-user")
    service = SchedulerService(engine, SETTINGS, commands=registry)
    assert service.actor == "os-user"
    service.create_task(name="who", command="test:echo")
    assert audit_rows(engine)[-1].actor == "os-user"


def test_from_settings_builds_a_working_service_on_the_embedded_database(tmp_path: Any) -> None:
    settings = Settings(home=tmp_path / "home")
    service = SchedulerService.from_settings(settings, actor="carol")
    try:
        task = service.create_task(name="embedded", command="test:echo", schedule="1h")
        assert service.get_task("embedded") == task
    finally:
        service.engine.dispose()


# -------------------------------------------------------------------------------------- database errors


def test_an_unreachable_database_is_database_unavailable() -> None:
    engine = make_engine("postgresql+psycopg2://postgres@127.0.0.1:1/nothing")
    service = SchedulerService(engine, SETTINGS, commands=load_registry(SETTINGS), actor="x")
    with pytest.raises(DatabaseUnavailable) as error:
        service.list_tasks()
    assert error.value.exit_code == 69
    with pytest.raises(DatabaseUnavailable):
        service.create_task(name="n", command="test:echo")


@pytest.fixture
def read_only_role(pg_url: str) -> Iterator[str]:
    """A URL for ``pg_url``'s database as a role that may read but not write the scheduler tables."""
    role = f"reader_{uuid.uuid4().hex[:8]}"
    admin = make_engine(pg_url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        connection.execute(text(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"'))
    yield make_url(pg_url).set(username=role).render_as_string(hide_password=False)
    with admin.begin() as connection:
        connection.execute(text(f'DROP OWNED BY "{role}"'))
        connection.execute(text(f'DROP ROLE "{role}"'))
    admin.dispose()


def test_a_role_without_write_privilege_gets_permission_denied(read_only_role: str) -> None:
    engine = make_engine(read_only_role)
    service = SchedulerService(engine, SETTINGS, commands=load_registry(SETTINGS), actor="x")
    try:
        assert service.list_tasks() == []
        with pytest.raises(PermissionDenied) as error:
            service.create_task(name="n", command="test:echo")
        assert error.value.exit_code == 77
    finally:
        engine.dispose()


def test_times_come_back_aware_in_utc(service: SchedulerService) -> None:
    task = create(
        service, schedule="5m", start_at=datetime(2031, 1, 1, 12, tzinfo=UTC), end_at="2032-01-01T00:00+02:00"
    )
    again = service.get_task(task.id)
    for value in (
        again.created_at,
        again.updated_at,
        again.anchor_at,
        again.next_run_at,
        again.start_at,
        again.end_at,
    ):
        assert value is not None
        assert value.utcoffset() == timedelta(0)
    assert again.end_at == datetime(2031, 12, 31, 22, tzinfo=UTC)
    assert as_utc(again.start_at) == again.next_run_at


def test_a_failing_listener_does_not_undo_or_fail_the_change(
    service: SchedulerService, engine: Engine
) -> None:
    def broken(payload: dict[str, Any]) -> None:
        raise RuntimeError("listener bug")

    service.on("task-created", broken)
    task = create(service)
    assert service.get_task(task.id) == task
    assert counts(engine) == (1, 1)


def test_a_name_race_lost_at_the_unique_constraint_is_name_taken(engine: Engine) -> None:
    definition = validate_new_task(
        {"name": "raced", "command": "test:echo"}, settings=SETTINGS, commands=load_registry(SETTINGS),
        now=now_of(engine),
    )  # fmt: skip
    with engine.begin() as connection:
        insert_task(connection, definition.columns(), now=now_of(engine))
    with (
        pytest.raises(NameTaken) as error,
        translate_db_errors(task_name="raced"),
        engine.begin() as connection,
    ):
        insert_task(connection, definition.columns(), now=now_of(engine))
    assert error.value.name == "raced"
    assert counts(engine) == (1, 0)


def test_create_rejects_a_spec_that_is_not_a_mapping(service: SchedulerService, engine: Engine) -> None:
    with pytest.raises(InvalidField):
        service.create_task(["name", "x"])  # type: ignore[arg-type]
    assert counts(engine) == (0, 0)
