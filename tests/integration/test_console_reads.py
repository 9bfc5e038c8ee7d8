"""The web console's reads (scheduler.storage.console through SchedulerService) on SQLite and PostgreSQL:
keyset pages visit every matching task exactly once in the requested order, whatever the sort key and
direction; filters; who paused; duration percentiles; log lines after a position."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, update

from scheduler.commands.loading import load_registry
from scheduler.errors import ExecutionNotFound, InvalidField
from scheduler.service import SchedulerService
from scheduler.settings import Settings
from scheduler.storage.console import SORT_KEYS, TaskFilter, sort_value
from scheduler.storage.tables import executions
from scheduler.storage.transactions import write_transaction

SETTINGS = Settings()


@pytest.fixture
def service(engine: Engine) -> SchedulerService:
    return SchedulerService(engine, SETTINGS, commands=load_registry(SETTINGS), actor="alice")


def populate(service: SchedulerService) -> list[Any]:
    specs = [
        ("b-report", "0 3 * * *", "q1"), ("a-sync", "5m", "q2"), ("c-sync", "manual", "q1"),
        ("e-backup", "0 1 * * *", "q2"), ("d-REPORT", "10m", "q1"), ("f_under", "manual", "q3"),
        ("g-100%", "0 2 * * *", "q3"),
    ]  # fmt: skip
    # Every other task is owned by another source (as if made with scheduler:create): the source filter.
    by_hand = SchedulerService(service.engine, SETTINGS, commands=service.commands, actor="bob", source="cli")
    created = [
        (by_hand if i % 2 else service).create_task(name=n, command="test:echo", schedule=s, queue=q)
        for i, (n, s, q) in enumerate(specs)
    ]
    service.pause(created[0].id, reason="disk")
    service.pause(created[3].id)
    return [service.get_task(task.id) for task in created]


def walk(service: SchedulerService, where: TaskFilter, sort: str, descending: bool) -> list[int]:
    seen: list[int] = []
    after = None
    for _ in range(20):
        page = service.task_page(where, sort=sort, descending=descending, after=after, limit=2)
        seen += [row.task.id for row in page]
        if len(page) < 2:
            return seen
        last = page[-1].task
        after = (sort_value(last, sort), last.id)
    raise AssertionError("pagination did not end")


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("sort", SORT_KEYS)
def test_keyset_pages_visit_every_task_once_in_order(
    service: SchedulerService, sort: str, descending: bool
) -> None:
    tasks = populate(service)
    expected = sorted(tasks, key=lambda t: (sort_value(t, sort), t.id), reverse=descending)
    assert walk(service, TaskFilter(), sort, descending) == [t.id for t in expected]
    for source in ("api", "cli"):  # keyset pages within a source filter
        owned = [t.id for t in expected if t.source == source]
        assert len(owned) >= 3 and walk(service, TaskFilter(source=source), sort, descending) == owned


def test_filters_by_status_queue_and_text_with_like_wildcards_taken_literally(
    service: SchedulerService,
) -> None:
    tasks = populate(service)
    by_name = {t.name: t.id for t in tasks}

    def names(**where: Any) -> set[str]:
        rows = service.task_page(TaskFilter(**where), limit=50)
        return {row.task.name for row in rows}

    assert names(status="paused") == {"b-report", "e-backup"}
    assert names(queue="q1") == {"b-report", "c-sync", "d-REPORT"}
    assert names(text="report") == {"b-report", "d-REPORT"}  # case-insensitive
    assert names(text="report", status="active") == {"d-REPORT"}
    assert names(text="_") == {"f_under"} and names(text="%") == {"g-100%"}  # not wildcards
    assert names(text="TEST:ECHO") == set(by_name)  # the command matches too
    assert names(source="cli") == {"a-sync", "e-backup", "f_under"}
    assert names(source="cli", queue="q2") == {"a-sync", "e-backup"} and names(source="web") == set()
    assert service.task_sources() == ["api", "cli"]
    with pytest.raises(InvalidField):
        service.task_page(TaskFilter(status="bogus"))


def test_page_rows_carry_the_last_outcome_and_paused_tasks_who_paused(service: SchedulerService) -> None:
    tasks = populate(service)
    paused = service.paused_by([t.id for t in tasks])
    assert set(paused) == {tasks[0].id, tasks[3].id}
    assert {actor for actor, _ in paused.values()} == {"alice"}
    assert service.as_actor("web:bob").pause(tasks[1].id)  # the latest pause wins, under its actor
    assert service.paused_by([tasks[1].id])[tasks[1].id][0] == "web:bob"
    execution = service.run_task_now(tasks[2].id)
    with write_transaction(service.engine) as connection:
        connection.execute(
            update(executions)
            .where(executions.c.id == execution.id)
            .values(status="failed", finished_at=execution.created_at, duration_ms=40)
        )
    row = next(r for r in service.task_page(TaskFilter(), limit=50) if r.task.id == tasks[2].id)
    assert row.last_outcome == "failed" and row.last_finished_at == execution.created_at


def test_duration_percentiles_are_the_nearest_lower_rank(service: SchedulerService) -> None:
    task = populate(service)[5]
    assert service.duration_percentiles(task.id, (0.5, 0.95)) == {0.5: None, 0.95: None}
    for duration in (10, 20, 30, 40, 1000):
        execution = service.run_task_now(task.id)
        with write_transaction(service.engine) as connection:
            connection.execute(
                update(executions).where(executions.c.id == execution.id).values(duration_ms=duration)
            )
    assert service.duration_percentiles(task.id, (0.5, 0.95)) == {0.5: 30.0, 0.95: 40.0}
    assert service.runs_per_day(task.id, days=7) == pytest.approx(5 / 7)
    assert service.runs_per_day("a-sync", days=1) == 0.0


def test_logs_after_a_position_and_unknown_executions(service: SchedulerService) -> None:
    from scheduler.storage.tables import logs

    task = populate(service)[2]
    execution = service.run_task_now(task.id)
    with write_transaction(service.engine) as connection:
        for n in range(5):
            connection.execute(
                logs.insert().values(execution_id=execution.id, level="INFO", message=f"line {n}")
            )
    assert [line.message for line in service.logs_after(execution.id, 3)] == ["line 3", "line 4"]
    assert service.logs_after(execution.id, 5) == []
    assert [line.message for line in service.logs_after(execution.id, -4)][:1] == ["line 0"]
    with pytest.raises(ExecutionNotFound):
        service.logs_after(987654321, 0)
