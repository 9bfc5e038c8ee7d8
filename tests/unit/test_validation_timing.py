"""Fire-time placement (scheduler.rules.timing) and secret redaction (scheduler.redaction), pure."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduler.errors import InvalidSchedule
from scheduler.planning.batch import ScheduleCache
from scheduler.records import Task
from scheduler.redaction import REDACTED, public_task, redact
from scheduler.rules.schedules import parse_schedule
from scheduler.rules.timing import first_fire, plan_schedule, preview_schedule, upcoming_runs

NOW = datetime(2030, 6, 12, 10, 30, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def task(**overrides: Any) -> Task:
    values: dict[str, Any] = dict(
        id=1, name="t", command="test:echo", schedule="5m", schedule_kind="interval", timezone="UTC", data={},
        status="active", status_reason=None, queue="default", retries=0, retry_delay_ms=0, retry_backoff=2.0,
        timeout_ms=1000, overlap_policy="allow", misfire_policy="run_once", misfire_grace_ms=None,
        auto_pause_after=None, start_at=None, end_at=None, max_runs=None, anchor_at=NOW,
        next_run_at=NOW + 5 * MINUTE, last_run_at=None, run_count=0, consecutive_failures=0, created_at=NOW,
        updated_at=NOW,
    )  # fmt: skip
    return replace(Task(**values), **overrides)


def test_upcoming_runs_start_at_the_pending_slot_and_follow_the_anchor() -> None:
    assert upcoming_runs(task(), 3) == [NOW + 5 * MINUTE, NOW + 10 * MINUTE, NOW + 15 * MINUTE]


def test_upcoming_runs_include_an_overdue_slot() -> None:
    overdue = task(next_run_at=NOW - 5 * MINUTE)
    assert upcoming_runs(overdue, 2) == [NOW - 5 * MINUTE, NOW]


def test_upcoming_runs_after_an_instant_are_strictly_after_it() -> None:
    assert upcoming_runs(task(), 2, after=NOW + 10 * MINUTE) == [NOW + 15 * MINUTE, NOW + 20 * MINUTE]


def test_upcoming_runs_stop_at_end_and_at_max_runs() -> None:
    assert upcoming_runs(task(end_at=NOW + 10 * MINUTE), 5) == [NOW + 5 * MINUTE, NOW + 10 * MINUTE]
    assert upcoming_runs(task(max_runs=3, run_count=2), 5) == [NOW + 5 * MINUTE]
    assert upcoming_runs(task(max_runs=3, run_count=3), 5) == []


def test_paused_completed_and_manual_tasks_have_no_upcoming_runs() -> None:
    assert upcoming_runs(task(status="paused"), 5) == []
    assert upcoming_runs(task(status="completed"), 5) == []
    assert upcoming_runs(task(schedule="manual", schedule_kind="manual", next_run_at=None), 5) == []


def test_a_once_task_has_one_upcoming_run() -> None:
    once = task(
        schedule="2030-06-13T00:00:00Z", schedule_kind="once", next_run_at=datetime(2030, 6, 13, tzinfo=UTC)
    )
    assert upcoming_runs(once, 5) == [datetime(2030, 6, 13, tzinfo=UTC)]


def test_first_fire_of_a_once_schedule_that_ran_is_none() -> None:
    schedule = parse_schedule("now", anchor=NOW)
    assert first_fire(schedule, now=NOW) == NOW
    assert first_fire(schedule, now=NOW, run_count=1) is None
    assert first_fire(schedule, now=NOW + 2 * MINUTE) is None


def test_first_fire_respects_the_end_inclusively() -> None:
    schedule = parse_schedule("5m", anchor=NOW)
    assert first_fire(schedule, now=NOW, end_at=NOW + 5 * MINUTE) == NOW + 5 * MINUTE
    assert first_fire(schedule, now=NOW, end_at=NOW + 4 * MINUTE) is None


def test_preview_refuses_an_instant_in_the_past_as_create_does() -> None:
    past = "2030-06-12T10:00:00Z"  # 30 minutes before NOW
    with pytest.raises(InvalidSchedule) as by_create:
        plan_schedule(past, timezone="UTC", now=NOW)
    with pytest.raises(InvalidSchedule) as by_preview:
        preview_schedule(past, timezone="UTC", now=NOW, count=5)
    assert str(by_preview.value) == str(by_create.value)
    assert "more than 60 seconds in the past" in str(by_preview.value)


def test_preview_shows_a_just_passed_instant_firing_as_create_would_place_it() -> None:
    just_passed = NOW - timedelta(seconds=30)  # within the 60 s grace: create accepts it, it fires at once
    plan = plan_schedule(just_passed.isoformat(), timezone="UTC", now=NOW)
    preview = preview_schedule(just_passed.isoformat(), timezone="UTC", now=NOW, count=5)
    assert preview.fire_times == [plan.next_run_at] == [just_passed]


def test_preview_starts_at_the_first_run_or_after_the_given_instant() -> None:
    assert preview_schedule("5m", timezone="UTC", now=NOW, count=2).fire_times == [
        NOW + 5 * MINUTE,
        NOW + 10 * MINUTE,
    ]
    later = NOW + 60 * MINUTE
    assert preview_schedule("0 * * * *", timezone="UTC", now=NOW, count=2, after=later).fire_times == [
        later + 30 * MINUTE,
        later + 90 * MINUTE,
    ]


def test_a_stored_interval_with_upper_case_units_still_runs() -> None:
    # Units were case-insensitive before; new text must be lower case, stored text keeps its meaning.
    stored = task(schedule="1H30M", next_run_at=NOW + 90 * MINUTE)
    assert upcoming_runs(stored, 2) == [NOW + 90 * MINUTE, NOW + 180 * MINUTE]
    planned = ScheduleCache().get(stored)  # what the planner plans with
    assert planned.next_after(NOW) == NOW + 90 * MINUTE


def test_redact_hides_secret_looking_keys_at_any_depth_without_touching_the_input() -> None:
    data = {
        "password": "p", "DB_PASSWD": "p", "apiKey": "k", "api_key": "k", "Authorization": "Bearer x",
        "refresh_token": {"nested": "t"}, "client_secret": 1, "credentials": ["a"], "host": "db1",
        "list": [{"token": "t", "ok": 1}], "count": 3,
    }  # fmt: skip
    out = redact(data)
    hidden = ["password", "DB_PASSWD", "apiKey", "api_key", "Authorization", "refresh_token", "client_secret"]
    assert all(out[key] == REDACTED for key in [*hidden, "credentials"])
    assert (out["host"], out["count"], out["list"]) == ("db1", 3, [{"token": REDACTED, "ok": 1}])
    assert data["password"] == "p"
    assert data["list"] == [{"token": "t", "ok": 1}]


def test_public_task_redacts_only_the_data() -> None:
    payload = public_task(task(data={"token": "t", "x": 1}))
    assert payload["data"] == {"token": REDACTED, "x": 1}
    assert payload["next_run_at"] == "2030-06-12T10:35:00Z"
