"""SchedulerService reads of executions on real databases: history, logs, stats, next runs, run_task_now.

Executions and logs are inserted with SQL here, so the figures the service reports can be checked by hand.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select, update

from scheduler.commands.loading import load_registry
from scheduler.errors import (
    BrokerUnavailable,
    ExecutionNotFound,
    InvalidField,
    InvalidSchedule,
    InvalidTimezone,
    TaskNotFound,
)
from scheduler.records import Dispatch, Task
from scheduler.service import SchedulerService
from scheduler.settings import Settings
from scheduler.storage import db_now
from scheduler.storage.tables import audit, executions, logs, tasks

SETTINGS = Settings()
MINUTE = timedelta(minutes=1)


class RecordingPublisher:
    """A publisher that keeps what it was given (or fails like an unreachable broker)."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.published: list[Dispatch] = []

    def publish(self, dispatches: Sequence[Dispatch]) -> None:
        if self.fail:
            raise BrokerUnavailable("connection refused")
        self.published.extend(dispatches)


def make_service(engine: Engine, publisher: RecordingPublisher | None = None) -> SchedulerService:
    return SchedulerService(
        engine, SETTINGS, commands=load_registry(SETTINGS), publisher=publisher, actor="ops"
    )


@pytest.fixture
def service(engine: Engine) -> SchedulerService:
    return make_service(engine)


def now_of(engine: Engine) -> datetime:
    with engine.connect() as connection:
        return db_now(connection)


def add_execution(engine: Engine, task: Task | None, scheduled_for: datetime, **values: Any) -> int:
    row = {
        "task_id": None if task is None else task.id,
        "task_name": "gone" if task is None else task.name,
        "command": "test:echo",
        "scheduled_for": scheduled_for,
        "created_at": scheduled_for,
        **values,
    }
    with engine.begin() as connection:
        return int(connection.execute(insert(executions).values(row).returning(executions.c.id)).scalar_one())


# ----------------------------------------------------------------------------------------------- history


def test_history_is_newest_first_and_filters_by_task_and_status(
    service: SchedulerService, engine: Engine
) -> None:
    a = service.create_task(name="a", command="test:echo")
    b = service.create_task(name="b", command="test:echo")
    now = now_of(engine)
    plan = [
        (a, "completed"),
        (b, "failed"),
        (a, "failed"),
        (b, "completed"),
        (a, "running"),
        (None, "completed"),
    ]
    ids = [
        add_execution(engine, task, now - i * MINUTE, status=status) for i, (task, status) in enumerate(plan)
    ]
    assert [e.id for e in service.history()] == ids[::-1]
    assert [e.id for e in service.history(task="a")] == [ids[4], ids[2], ids[0]]
    assert [e.id for e in service.history(task=b.id, status="completed")] == [ids[3]]
    assert [e.id for e in service.history(status="failed")] == [ids[2], ids[1]]
    assert [e.id for e in service.history(limit=2)] == [ids[5], ids[4]]
    assert service.history(status="skipped") == []
    first = service.get_execution(ids[0])
    assert (first.task_id, first.task_name, first.status, first.scheduled_for) == (
        a.id,
        "a",
        "completed",
        now,
    )
    with pytest.raises(InvalidField):
        service.history(status="exploded")
    with pytest.raises(InvalidField):
        service.history(limit=0)
    with pytest.raises(TaskNotFound):
        service.history(task="nobody")
    with pytest.raises(ExecutionNotFound):
        service.get_execution(10_000)


def test_logs_come_in_written_order_across_attempts(service: SchedulerService, engine: Engine) -> None:
    task = service.create_task(name="a", command="test:echo")
    now = now_of(engine)
    first = add_execution(engine, task, now, status="completed", attempt=2)
    second = add_execution(engine, task, now + MINUTE)
    lines = [
        (first, 1, now + timedelta(seconds=1), "INFO", "starting"),
        (first, 1, now + timedelta(seconds=2), "ERROR", "boom"),
        (second, 1, now + timedelta(seconds=2), "INFO", "other execution"),
        (first, 2, now + timedelta(seconds=5), "INFO", "retry worked ✓"),
    ]
    with engine.begin() as connection:
        for execution_id, attempt, at, level, message in reversed(lines):
            connection.execute(
                insert(logs).values(
                    execution_id=execution_id, attempt=attempt, at=at, level=level, message=message
                )
            )
    got = service.logs(first)
    assert [(line.attempt, line.level, line.message) for line in got] == [
        (1, "INFO", "starting"),
        (1, "ERROR", "boom"),
        (2, "INFO", "retry worked ✓"),
    ]
    assert got[0].at == now + timedelta(seconds=1)
    assert service.logs(add_execution(engine, task, now + 2 * MINUTE)) == []
    with pytest.raises(ExecutionNotFound):
        service.logs(10_000)


# ------------------------------------------------------------------------------------------------- stats


def test_stats_figures_match_a_hand_count(service: SchedulerService, engine: Engine) -> None:
    a = service.create_task(name="a", command="test:echo")
    b = service.create_task(name="b", command="test:echo")
    now = now_of(engine)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    week = day - timedelta(days=day.weekday())  # Monday
    month = day.replace(day=1)
    # Durations 100..2000 ms: 12 completed, 5 failed, 2 timed out, 1 lost, all of task a.
    statuses = ["completed"] * 12 + ["failed"] * 5 + ["timed_out"] * 2 + ["lost"]
    slots = (
        [day + timedelta(seconds=i) for i in range(8)]  # today
        + [day - timedelta(hours=1, seconds=i) for i in range(6)]  # yesterday
        + [week - timedelta(hours=2, seconds=i) for i in range(3)]  # before this week
        + [month - timedelta(days=1, hours=3, seconds=i) for i in range(3)]  # last month
    )
    started = [slot + timedelta(seconds=1) for slot in slots]
    for i, status in enumerate(statuses):
        add_execution(
            engine, a, slots[i], status=status, duration_ms=(i + 1) * 100, started_at=started[i],
            finished_at=started[i] + timedelta(milliseconds=(i + 1) * 100),
        )  # fmt: skip
    add_execution(engine, a, day + timedelta(minutes=30), status="skipped", reason="overlap")
    add_execution(engine, a, day + timedelta(minutes=31), status="running", started_at=day)
    add_execution(engine, b, day + timedelta(minutes=32), status="completed", duration_ms=5000)
    add_execution(engine, None, day + timedelta(minutes=33), status="failed", duration_ms=10)

    stats = service.get_task_stats("a")
    assert stats.task_id == a.id
    assert (stats.total, stats.completed, stats.failed, stats.timed_out) == (22, 12, 5, 2)
    assert (stats.skipped, stats.running) == (1, 1)
    assert stats.success_rate == pytest.approx(12 / 20)
    assert stats.avg_duration_ms == pytest.approx(1050.0)
    assert stats.p95_duration_ms == 1900.0  # 20 values: offset floor(0.95 * 19) = 18 -> the 19th smallest
    ran = [*slots, day + timedelta(minutes=31)]  # the skipped one did not run
    assert stats.runs_today == sum(slot >= day for slot in ran)
    assert stats.runs_this_week == sum(slot >= week for slot in ran)
    assert stats.runs_this_month == sum(slot >= month for slot in ran)
    assert stats.runs_today == 9
    assert stats.last_run_at == max(started)

    everything = service.get_task_stats()
    assert everything.task_id is None
    assert (everything.total, everything.completed, everything.failed) == (24, 13, 6)
    assert everything.success_rate == pytest.approx(13 / 22)
    assert everything.avg_duration_ms == pytest.approx((21_000 + 5000 + 10) / 22)
    # 22 values sorted: 10, 100, 200, ..., 2000, 5000; offset floor(0.95 * 21) = 19 -> 1900
    assert everything.p95_duration_ms == 1900.0
    assert everything.to_json()["last_run_at"].endswith("Z")


def test_stats_of_a_task_without_executions_are_zero_and_none(service: SchedulerService) -> None:
    task = service.create_task(name="idle", command="test:echo")
    stats = service.get_task_stats(task.id)
    assert (stats.total, stats.runs_today, stats.runs_this_week, stats.runs_this_month) == (0, 0, 0, 0)
    assert (stats.success_rate, stats.avg_duration_ms, stats.p95_duration_ms, stats.last_run_at) == (
        None,
    ) * 4
    with pytest.raises(TaskNotFound):
        service.get_task_stats("nobody")


# --------------------------------------------------------------------------------------------- next runs


def test_next_runs_of_an_interval_task_follow_its_anchor(service: SchedulerService) -> None:
    task = service.create_task(name="every5", command="test:echo", schedule="5m")
    assert task.next_run_at is not None
    runs = service.next_runs(task="every5", count=3)
    assert [run.at for run in runs] == [task.next_run_at + k * 5 * MINUTE for k in range(3)]
    assert {(run.task_id, run.task_name) for run in runs} == {(task.id, "every5")}
    later = service.next_runs(task=task.id, count=2, after=task.next_run_at + MINUTE)
    assert [run.at for run in later] == [task.next_run_at + 5 * MINUTE, task.next_run_at + 10 * MINUTE]


def test_next_runs_of_a_cron_task_are_on_the_hour(service: SchedulerService, engine: Engine) -> None:
    service.create_task(name="hourly", command="test:echo", schedule="0 * * * *")
    runs = [run.at for run in service.next_runs(task="hourly", count=4)]
    top = now_of(engine).replace(minute=0, second=0, microsecond=0)
    assert runs == [top + timedelta(hours=k) for k in range(1, 5)]


def test_next_runs_of_once_manual_paused_and_bounded_tasks(service: SchedulerService, engine: Engine) -> None:
    at = now_of(engine).replace(microsecond=0) + timedelta(days=2)
    once = service.create_task(name="once", command="test:echo", schedule=at.isoformat())
    assert [run.at for run in service.next_runs(task=once.id, count=5)] == [at]
    service.create_task(name="manual", command="test:echo")
    assert service.next_runs(task="manual") == []
    paused = service.create_task(name="paused", command="test:echo", schedule="1m")
    service.pause(paused.id)
    assert service.next_runs(task="paused") == []
    bounded = service.create_task(name="bounded", command="test:echo", schedule="5m")
    assert bounded.next_run_at is not None
    with engine.begin() as connection:
        connection.execute(
            update(tasks).where(tasks.c.id == bounded.id).values(end_at=bounded.next_run_at + 5 * MINUTE)
        )
    assert len(service.next_runs(task="bounded", count=10)) == 2
    with engine.begin() as connection:
        connection.execute(
            update(tasks).where(tasks.c.id == bounded.id).values(end_at=None, max_runs=3, run_count=2)
        )
    assert len(service.next_runs(task="bounded", count=10)) == 1
    with pytest.raises(InvalidField):
        service.next_runs(count=0)
    with pytest.raises(InvalidField):
        service.next_runs(after=datetime(2030, 1, 1))


def test_next_runs_of_all_tasks_merge_the_soonest(service: SchedulerService) -> None:
    made = [
        service.create_task(name=name, command="test:echo", schedule=schedule)
        for name, schedule in [("h", "1h"), ("seven", "7m"), ("ten", "10m"), ("slow", "1d"), ("m", "manual")]
    ]
    paused = service.create_task(name="paused", command="test:echo", schedule="1m")
    service.pause(paused.id)
    steps = {"h": timedelta(hours=1), "seven": 7 * MINUTE, "ten": 10 * MINUTE, "slow": timedelta(days=1)}
    grid = sorted(
        (task.next_run_at + k * steps[task.name], task.name)
        for task in made
        if task.next_run_at is not None
        for k in range(20)
    )
    runs = service.next_runs(count=6)
    assert [(run.at, run.task_name) for run in runs] == grid[:6]
    assert [run.task_name for run in runs] == ["seven", "ten", "seven", "ten", "seven", "seven"]
    after = grid[0][0] + 30 * MINUTE
    later = service.next_runs(count=3, after=after)
    assert [(run.at, run.task_name) for run in later] == [item for item in grid if item[0] > after][:3]


def test_validate_schedule_lists_fire_times_without_storing_anything(
    service: SchedulerService, engine: Engine
) -> None:
    start = datetime(2030, 3, 31, 0, 50, tzinfo=UTC)
    assert service.validate_schedule("*/15 * * * *", count=3, after=start) == [
        datetime(2030, 3, 31, 1, 0, tzinfo=UTC),
        datetime(2030, 3, 31, 1, 15, tzinfo=UTC),
        datetime(2030, 3, 31, 1, 30, tzinfo=UTC),
    ]
    assert service.validate_schedule("0 2 * * *", timezone="Europe/Berlin", count=1, after=start) == [
        datetime(
            2030, 3, 31, 1, 0, tzinfo=UTC
        )  # 02:00 does not exist that day: the first instant after the gap
    ]
    assert service.validate_schedule("now", after=start) == [start]
    with pytest.raises(InvalidSchedule):
        service.validate_schedule("61 * * * *")
    with pytest.raises(InvalidTimezone):
        service.validate_schedule("@daily", timezone="Mars/Olympus")
    with pytest.raises(InvalidField):
        service.validate_schedule("@daily", count=0)
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(tasks)).scalar_one() == 0


# ------------------------------------------------------------------------------------------ run_task_now


def test_run_now_publishes_and_marks_the_execution_queued(engine: Engine) -> None:
    publisher = RecordingPublisher()
    service = make_service(engine, publisher)
    task = service.create_task(
        name="job", command="test:echo", retries=2, queue="batch", data={"token": "t"}, timeout_ms=90_000
    )
    before = now_of(engine)
    execution = service.run_task_now("job")
    assert (execution.status, execution.trigger, execution.attempt, execution.max_attempts) == (
        "queued", "manual", 1, 3,
    )  # fmt: skip
    assert (execution.task_id, execution.task_name, execution.command, execution.queue) == (
        task.id, "job", "test:echo", "batch",
    )  # fmt: skip
    assert before <= execution.scheduled_for <= now_of(engine)
    assert execution.enqueued_at is not None and execution.enqueued_at >= execution.scheduled_for
    assert publisher.published == [Dispatch(execution.id, "batch", "test:echo", "job", timeout_s=90.0)]
    with engine.connect() as connection:
        row = connection.execute(select(audit).order_by(audit.c.id.desc()).limit(1)).one()
    assert (row.action, row.actor, row.task_id, row.before) == ("run", "ops", task.id, None)
    assert row.after["execution_id"] == execution.id
    assert service.history(task=task.id) == [execution]


def test_run_now_without_a_publisher_leaves_the_execution_pending(service: SchedulerService) -> None:
    service.create_task(name="job", command="test:echo")
    execution = service.run_task_now("job")
    assert (execution.status, execution.enqueued_at) == ("pending", None)


def test_run_now_stamps_the_task_last_run_at_with_the_runs_slot(service: SchedulerService) -> None:
    task = service.create_task(name="job", command="test:echo", schedule="manual")
    assert task.last_run_at is None
    first = service.run_task_now("job")
    assert service.get_task(task.id).last_run_at == first.scheduled_for
    second = service.run_task_now("job")
    assert service.get_task(task.id).last_run_at == second.scheduled_for > first.scheduled_for


def test_run_now_with_an_unreachable_broker_leaves_it_pending_for_the_relay(engine: Engine) -> None:
    service = make_service(engine, RecordingPublisher(fail=True))
    service.create_task(name="job", command="test:echo")
    assert service.run_task_now("job").status == "pending"


def test_two_quick_runs_are_two_executions_and_a_paused_task_can_run(service: SchedulerService) -> None:
    task = service.create_task(name="job", command="test:echo", schedule="1h")
    service.pause(task.id)
    runs = [service.run_task_now(task.id) for _ in range(5)]
    assert len({run.id for run in runs}) == 5
    assert len({run.scheduled_for for run in runs}) == 5
    assert service.get_task(task.id).status == "paused"


def test_run_now_rejects_bad_per_run_data_and_stores_nothing(
    service: SchedulerService, engine: Engine
) -> None:
    # Issue 15 made per-run data valid (it used to be refused whatever it was); data that is not a JSON object
    # or is over 64 KiB is still refused, with nothing stored.
    service.create_task(name="job", command="test:echo")
    for bad in (["x"], "x", {"x": "y" * 70_000}, {1: "not a string key"}):
        with pytest.raises(InvalidField, match="data"):
            service.run_task_now("job", data=bad)  # type: ignore[arg-type]
    assert service.history() == []
    assert service.run_task_now("job", data={"x": 1}).data == {"x": 1}


def test_run_now_with_wait_returns_the_finished_execution(engine: Engine) -> None:
    service = make_service(engine, RecordingPublisher())
    service.create_task(name="job", command="test:echo")

    def worker() -> None:  # a stand-in worker: claim and finish the published execution through SQL
        time.sleep(0.3)
        with engine.begin() as connection:
            connection.execute(
                update(executions).values(
                    status="completed", duration_ms=5, result={"ok": True}, finished_at=now
                )
            )

    now = now_of(engine)
    thread = threading.Thread(target=worker)
    thread.start()
    started = time.monotonic()
    execution = service.run_task_now("job", wait=True, timeout_s=10)
    thread.join()
    assert execution.status == "completed"
    assert execution.result == {"ok": True}
    assert 0.25 <= time.monotonic() - started < 5


def test_run_now_with_wait_gives_up_after_the_timeout(service: SchedulerService) -> None:
    service.create_task(name="job", command="test:echo")
    started = time.monotonic()
    execution = service.run_task_now("job", wait=True, timeout_s=0.3)
    assert execution.status == "pending"
    assert 0.3 <= time.monotonic() - started < 3
