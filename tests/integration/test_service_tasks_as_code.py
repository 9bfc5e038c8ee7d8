"""Tasks as code through the Python API (SchedulerService) on SQLite and PostgreSQL: ownership recorded per
task, events per changed task, nothing written on a failed apply, versions and rollback."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from scheduler.commands.loading import load_registry
from scheduler.errors import InvalidInput
from scheduler.observability.events import TASK_CREATED, TASK_DELETED, TASK_UPDATED
from scheduler.rules.taskfile import dump_document
from scheduler.service import SchedulerService
from scheduler.settings import Settings
from scheduler.storage.tables import audit, tasks

SETTINGS = Settings()
FILE = b"""\
source: svc
tasks:
  - {key: a, name: alpha, command: test:echo, schedule: 1h, data: {token: t1}}
  - {key: b, name: beta, command: test:echo, schedule: "0 4 * * *"}
"""


@pytest.fixture
def service(engine: Engine) -> SchedulerService:
    return SchedulerService(engine, SETTINGS, commands=load_registry(SETTINGS), actor="deployer")


def rows(engine: Engine) -> tuple[int, int]:
    with engine.connect() as connection:
        return (
            connection.execute(select(func.count()).select_from(tasks)).scalar_one(),
            connection.execute(select(func.count()).select_from(audit)).scalar_one(),
        )


def test_api_tasks_are_owned_by_api_and_file_tasks_by_their_source(service: SchedulerService) -> None:
    made = service.create_task(name="by-api", command="test:echo", schedule="1h")
    assert (made.source, made.key) == ("api", None)
    events: list[tuple[str, Any]] = []
    for name in (TASK_CREATED, TASK_UPDATED, TASK_DELETED):
        service.on(name, lambda payload, name=name: events.append((name, payload["task"]["name"])))
    plan = service.apply_tasks_file(FILE, path="f.yaml")
    assert plan.summary()["create"] == 2 and sorted(events) == [
        (TASK_CREATED, "alpha"),
        (TASK_CREATED, "beta"),
    ]
    owned = {task.name: (task.source, task.key) for task in service.list_tasks()}
    assert owned == {"by-api": ("api", None), "alpha": ("svc", "a"), "beta": ("svc", "b")}

    events.clear()
    smaller = FILE.replace(b'  - {key: b, name: beta, command: test:echo, schedule: "0 4 * * *"}\n', b"")
    service.apply_tasks_file(smaller.replace(b"1h", b"2h"), path="f.yaml", prune=True)
    assert sorted(events) == [(TASK_DELETED, "beta"), (TASK_UPDATED, "alpha")]
    assert sorted(task.name for task in service.list_tasks()) == ["alpha", "by-api"]


def test_a_failed_apply_writes_nothing(service: SchedulerService, engine: Engine) -> None:
    service.create_task(name="beta", command="test:echo")
    before = rows(engine)
    with pytest.raises(InvalidInput, match=r"f\.yaml:4: task 'b': invalid name: 'beta' is taken by task 1"):
        service.apply_tasks_file(FILE, path="f.yaml")
    assert rows(engine) == before
    with pytest.raises(InvalidInput, match="'cli' is reserved"):
        service.plan_tasks_file(FILE, path="f.yaml", source="cli")
    with pytest.raises(InvalidInput, match="'web' is reserved"):  # the web console's tasks are by hand too
        service.apply_tasks_file(FILE, path="f.yaml", source="web")
    assert rows(engine) == before


def test_export_round_trip_and_rollback_through_the_api(service: SchedulerService, engine: Engine) -> None:
    service.apply_tasks_file(FILE, path="f.yaml")
    document = service.export_tasks(source="svc")
    assert document["tasks"][0]["data"] == {"token": "t1"}
    for output_format in ("yaml", "json"):
        again = service.apply_tasks_file(dump_document(document, output_format).encode(), path="export")
        assert not again.has_changes
    alpha = service.get_task("alpha")
    service.update_task("alpha", schedule="30m", data={"token": "t2"})
    service.update_task("alpha", retries=4)
    versions = service.task_versions("alpha")
    assert [(v.number, v.action) for v in versions] == [(1, "apply:create"), (2, "update"), (3, "update")]
    before, after, changes = service.diff_task_versions("alpha", from_version=1)
    assert (before.number, after.number) == (1, 3)
    assert [(c.field, c.before, c.after) for c in changes] == [("schedule", "1h", "30m"), ("retries", 3, 4)]

    rolled = service.rollback_task("alpha", to=1)
    assert (rolled.id, rolled.schedule, rolled.retries) == (alpha.id, "1h", 3)
    assert rolled.data == {"token": "t2"}  # the audit keeps the secret redacted: the current value stays
    assert service.task_versions("alpha")[-1].action == "rollback"
    plan = service.plan_tasks_file(FILE, path="f.yaml")
    [drifted] = plan.drifted
    assert [(d.actor, d.action) for d in drifted.drift] == [("deployer", "update")] * 2 + [
        ("deployer", "rollback")
    ]
    assert [c.field for c in drifted.changes] == ["data"]  # the file's token differs from the kept one


def test_a_large_apply_writes_every_task_and_a_valid_audit_chain(
    service: SchedulerService, engine: Engine
) -> None:
    """150 tasks: on PostgreSQL the tasks and their audit rows go in as one statement each (bulk.py)."""
    entries = "".join(
        f"  - {{key: k{i}, name: n{i}, command: test:echo, schedule: {1 + i % 50}m, "
        f"data: {{i: {i}, token: s}}}}\n"
        for i in range(150)
    )
    content = f"source: big\ntasks:\n{entries}".encode()
    service.create_task(name="by-hand", command="test:echo")
    assert service.apply_tasks_file(content, path="big.yaml").summary()["create"] == 150
    stored = {task.key: task for task in service.list_tasks() if task.source == "big"}
    assert (
        len(stored) == 150 and stored["k42"].name == "n42" and stored["k42"].data == {"i": 42, "token": "s"}
    )
    assert stored["k42"].schedule == "43m" and stored["k42"].next_run_at is not None
    entries_by_task = {
        entry.task_id: entry for entry in service.audit(limit=1000) if entry.action == "apply:create"
    }
    assert len(entries_by_task) == 150
    after = entries_by_task[stored["k7"].id].after or {}
    assert (after["name"], after["key"], after["data"]) == ("n7", "k7", {"i": 7, "token": "***"})
    assert {entry.actor for entry in entries_by_task.values()} == {"deployer"}
    verdict = service.verify_audit()
    assert verdict.intact and verdict.rows == 151, verdict
    assert not service.plan_tasks_file(content, path="big.yaml").has_changes


def test_a_name_passing_between_tasks_in_one_apply_is_refused_naming_the_task(
    service: SchedulerService,
) -> None:
    service.apply_tasks_file(FILE, path="f.yaml")

    def names(a: str, b: str) -> bytes:
        marked = FILE.replace(b"name: alpha", b"name: @A").replace(b"name: beta", b"name: @B")
        return marked.replace(b"@A", a.encode()).replace(b"@B", b.encode())

    with pytest.raises(
        InvalidInput, match=r"f\.yaml:3: task 'a': invalid name: 'beta' is still task 2 \(key 'b'\)"
    ):
        service.apply_tasks_file(names("beta", "alpha"), path="f.yaml")
    for step in (names("tmp", "beta"), names("tmp", "alpha"), names("beta", "alpha")):  # one rename at a time
        service.apply_tasks_file(step, path="f.yaml")
    assert {task.key: (task.id, task.name) for task in service.list_tasks()} == {
        "a": (1, "beta"),
        "b": (2, "alpha"),
    }
