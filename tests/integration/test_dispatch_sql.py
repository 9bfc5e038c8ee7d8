"""The planner's bulk statements on PostgreSQL: JSON row parameters, the bulk insert and advance through both
drivers, the one-statement fence."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine, text

from scheduler.planning.lease import Lease
from scheduler.records import TaskAdvance
from scheduler.storage.db import make_engine
from scheduler.storage.dispatch import advance_tasks, insert_executions, json_rows
from scheduler.storage.transactions import write_transaction

NEW_TASK = """
    INSERT INTO scheduled_tasks (name, command, schedule, schedule_kind, timezone, data, status, queue,
        retries, retry_delay_ms, retry_backoff, timeout_ms, overlap_policy, misfire_policy, anchor_at,
        run_count, consecutive_failures, created_at, updated_at)
    VALUES ('t', 'test:echo', '1h', 'interval', 'UTC', '{}', 'active', 'q', 0, 0, 1, 1000, 'allow',
        'run_once', now(), 0, 0, now(), now())
    RETURNING id
"""
TRICKY = ["plain", "", "NULL", 'quote " inside', "back\\slash", "{braces},commas", "  spaces  ", "ünï\ncode"]


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture
def driver_engine(pg_driver_url: str) -> Iterator[Engine]:
    """An engine on each PostgreSQL driver (psycopg2 sends the JSON rows as a quoted literal, psycopg 3 as one
    bound text value)."""
    engine = make_engine(pg_driver_url)
    yield engine
    engine.dispose()


def test_json_row_parameters_round_trip_every_value(driver_engine: Engine) -> None:
    moments = [datetime(2026, 3, 29, 1, 30, 0, 123456, tzinfo=UTC), None, datetime(1999, 12, 31, tzinfo=UTC)]
    plus_two = datetime(2026, 3, 29, 3, 30, 0, 1, tzinfo=timezone(timedelta(hours=2)))
    cases = [
        ("text", [*TRICKY, None]),
        ("varchar", [*TRICKY, None]),
        ("bigint", [1, None, 2**40]),
        ("timestamptz", [*moments, plus_two]),
        ("timestamptz", [None, None]),
        ("integer", []),
    ]
    with driver_engine.connect() as connection:
        for sql_type, values in cases:
            query = text(
                f"SELECT coalesce(array_agg(v.a ORDER BY v.n), '{{}}') "
                f"FROM json_to_recordset(CAST(:rows AS json)) AS v(n integer, a {sql_type})"
            )
            rows = json_rows([{"n": n, "a": value} for n, value in enumerate(values)])
            assert connection.execute(query, {"rows": rows}).scalar_one() == values, sql_type
    with pytest.raises(ValueError, match="naive"):
        json_rows([{"a": None}, {"a": datetime(2026, 1, 1)}])


def test_the_bulk_advance_writes_every_value(driver_engine: Engine) -> None:
    with driver_engine.begin() as connection:
        first, second = (
            connection.execute(text(NEW_TASK.replace("'t'", f"'t{n}'"))).scalar_one() for n in (1, 2)
        )
    slot = datetime(2026, 1, 1, 0, 0, 0, 500, tzinfo=UTC)
    advances = [
        TaskAdvance(first, slot + timedelta(hours=1), 7, slot, "active", None),
        TaskAdvance(second, None, 2**31 - 1, None, "completed", TRICKY[3] + TRICKY[4] + TRICKY[7]),
    ]
    with write_transaction(driver_engine) as connection:
        advance_tasks(connection, advances)
    with driver_engine.connect() as connection:
        stored = connection.execute(
            text(
                "SELECT id, next_run_at, run_count, last_run_at, status, status_reason FROM scheduled_tasks "
                "ORDER BY id"
            )
        ).all()
    assert [TaskAdvance(*row) for row in stored] == advances


def test_the_bulk_insert_skips_existing_slots_and_keeps_nulls(driver_engine: Engine) -> None:
    with driver_engine.begin() as connection:
        task_id = connection.execute(text(NEW_TASK)).scalar_one()
    slot = datetime(2026, 1, 1, tzinfo=UTC)

    def row(offset: int, **extra: object) -> dict[str, object]:
        base = {
            "task_id": task_id,
            "task_name": 'name "with" \\ odd {chars}',
            "command": "test:echo",
            "scheduled_for": slot + timedelta(hours=offset),
            "trigger": "schedule",
            "status": "pending",
            "reason": None,
            "attempt": 1,
            "max_attempts": 2,
            "queue": "q",
            "created_at": slot,
        }
        return {**base, **extra}

    with write_transaction(driver_engine) as connection:
        first = insert_executions(connection, [row(0), row(1, status="skipped", reason="overlap")])
    with write_transaction(driver_engine) as connection:
        again = insert_executions(connection, [row(0), row(2, finished_at=slot)])
    assert [(task, status) for _, task, status in first] == [(task_id, "pending"), (task_id, "skipped")]
    assert [(task, status) for _, task, status in again] == [(task_id, "pending")]  # slot 0 existed
    with driver_engine.connect() as connection:
        stored = connection.execute(
            text(
                "SELECT task_name, reason, finished_at, max_attempts FROM task_executions "
                "WHERE task_id = :t ORDER BY scheduled_for"
            ),
            {"t": task_id},
        ).all()
    assert [tuple(r) for r in stored] == [
        ('name "with" \\ odd {chars}', None, None, 2),
        ('name "with" \\ odd {chars}', "overlap", None, 2),
        ('name "with" \\ odd {chars}', None, slot, 2),
    ]


def test_fence_returns_the_database_clock_only_to_the_holder(pg_engine: Engine) -> None:
    holder = Lease(pg_engine, ttl=timedelta(seconds=10), holder="a")
    other = Lease(pg_engine, ttl=timedelta(seconds=10), holder="b")
    assert holder.acquire_or_renew() and not other.acquire_or_renew()
    with write_transaction(pg_engine) as connection:
        now = holder.fence(connection)
        clock = connection.execute(text("SELECT clock_timestamp()")).scalar_one()
        assert (
            now is not None and now.tzinfo is not None and timedelta(0) <= clock - now < timedelta(seconds=5)
        )
        assert other.fence(connection) is None
    with write_transaction(pg_engine) as connection:
        assert holder.fence(connection, idle_timeout_ms=4321) is not None
        shown = connection.execute(text("SHOW idle_in_transaction_session_timeout")).scalar_one()
        assert shown == "4321ms"  # SET LOCAL, as write_transaction(idle_timeout_ms=...) does
    with pg_engine.connect() as connection:
        assert connection.execute(text("SHOW idle_in_transaction_session_timeout")).scalar_one() == "0"
    with pg_engine.begin() as connection:
        connection.execute(text("UPDATE scheduler_leases SET expires_at = now() - interval '1 second'"))
    with write_transaction(pg_engine) as connection:
        assert holder.fence(connection) is None  # expired in the database although trusted locally
    holder.forget()
    assert holder.needs_renewal()


def test_tasks_from_rows_maps_like_task_from_row(engine: Engine) -> None:
    from planner_support import make_service, make_settings
    from sqlalchemy import select

    from scheduler.storage.mapping import task_from_row, tasks_from_rows
    from scheduler.storage.tables import tasks

    service = make_service(engine, make_settings())
    service.create_task(name="plain", command="test:echo", schedule="*/5 * * * *")
    service.create_task(
        name="bounded",
        command="test:echo",
        schedule="1h",
        data={"k": [1, 2]},
        timezone="Europe/Berlin",
        max_runs=3,
        misfire_grace_ms=60_000,
        auto_pause_after=2,
        end_at="2099-01-01T00:00:00Z",
    )
    with engine.connect() as connection:
        rows = connection.execute(select(tasks).order_by(tasks.c.id)).all()
        result = connection.execute(select(tasks).order_by(tasks.c.id))
        fast = tasks_from_rows(list(result.keys()), result)
        reordered = connection.execute(select(*reversed(list(tasks.c))).order_by(tasks.c.id))
        fallback = tasks_from_rows(list(reordered.keys()), reordered)
    assert fast == fallback == [task_from_row(row) for row in rows]
    assert len(fast) == 2


def test_due_tasks_read_each_planner_field_as_the_stored_task_holds_it(engine: Engine) -> None:
    """The planner's narrow read (DueTask) agrees with the whole task, field by field, on either database:
    several schedules, jitter, calendars, bounds and a finished run included; times aware in UTC."""
    from planner_support import make_service, make_settings
    from sqlalchemy import select, update

    from scheduler.storage.dispatch import due_tasks
    from scheduler.storage.mapping import task_from_row
    from scheduler.storage.tables import tasks

    service = make_service(engine, make_settings())
    service.create_calendar("holiday", ["2026-12-25"])
    service.create_task(name="plain", command="test:echo", schedule="*/5 * * * *")
    service.create_task(
        name="everything",
        command="test:echo",
        schedule=["0 9 * * *", "1h"],
        timezone="Europe/Berlin",
        jitter_ms=60_000,
        exclude=["holiday"],
        max_runs=3,
        misfire_grace_ms=60_000,
        misfire_policy="run_all",
        overlap_policy="forbid",
        retries=2,
        timeout_ms=5_000,
        end_at="2099-01-01T00:00:00Z",
        queue="elsewhere",
    )
    service.create_task(name="only", command="test:echo", schedule="1m", only_in=["holiday"])
    due_at = datetime(2026, 1, 1, 12, 0, 0, 250, tzinfo=UTC)
    with engine.begin() as connection:
        changes = {"next_run_at": due_at, "last_run_at": due_at - timedelta(hours=1), "run_count": 2}
        connection.execute(update(tasks).values(changes))
        connection.execute(update(tasks).where(tasks.c.name == "plain").values(status_reason="a note"))
    with engine.connect() as connection:
        due = due_tasks(connection, due_at, 10)
        stored = {row.id: task_from_row(row) for row in connection.execute(select(tasks))}
    assert sorted(task.name for task in due) == ["everything", "only", "plain"]
    for task in due:
        whole = stored[task.id]
        assert task._asdict() == {name: getattr(whole, name) for name in task._fields}
        assert task.next_run_at == due_at and task.next_run_at.tzinfo is UTC
        assert task.anchor_at.tzinfo is UTC
