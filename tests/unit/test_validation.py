"""Task validation rules, pure: raw fields in, a normalised definition or a typed error out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.commands.loading import load_registry
from scheduler.commands.registry import CommandRegistry
from scheduler.errors import (
    InvalidField,
    InvalidInput,
    InvalidSchedule,
    InvalidTimezone,
    SchedulerError,
    UnknownCommand,
)
from scheduler.records import Task, TaskDefinition
from scheduler.rules.validation import (
    CREATABLE,
    UPDATABLE,
    validate_changes,
    validate_new_task,
)
from scheduler.settings import Settings

NOW = datetime(2030, 6, 12, 10, 30, 15, 250000, tzinfo=UTC)  # a Wednesday
SETTINGS = Settings(commands={"backup:db": ["/bin/echo", "--target={target}", "{level}"]})
REGISTRY = load_registry(SETTINGS)
BASE: dict[str, Any] = {"name": "nightly", "command": "test:echo", "schedule": "5m"}
DEEP: list[Any] = []
for _ in range(150):
    DEEP = [DEEP]


def make(**fields: Any) -> TaskDefinition:
    return validate_new_task({**BASE, **fields}, settings=SETTINGS, commands=REGISTRY, now=NOW)


def as_task(definition: TaskDefinition, **overrides: Any) -> Task:
    """A stored task as the repository would return it for ``definition``."""
    values = definition.columns() | {"id": 1, "status_reason": None, "last_run_at": None, "run_count": 0}
    values |= {"consecutive_failures": 0, "created_at": NOW, "updated_at": NOW}
    return replace(Task(**values), **overrides)


def change(task: Task, now: datetime = NOW, **changes: Any) -> dict[str, Any]:
    return validate_changes(task, changes, settings=SETTINGS, commands=REGISTRY, now=now)


# ---------------------------------------------------------------------------------------------- accepted


def test_it_fills_defaults_from_settings() -> None:
    custom = Settings(
        default_retries=7, retry_delay=1234, retry_backoff=3.0, task_timeout=60_000,
        overlap_policy="forbid", misfire_policy="skip", default_queue="batch",
    )  # fmt: skip
    task = validate_new_task(BASE, settings=custom, commands=REGISTRY, now=NOW)
    assert (task.retries, task.retry_delay_ms, task.retry_backoff, task.timeout_ms) == (7, 1234, 3.0, 60_000)
    assert (task.overlap_policy, task.misfire_policy, task.queue) == ("forbid", "skip", "batch")
    assert (task.timezone, task.data, task.status, task.misfire_grace_ms) == ("UTC", {}, "active", None)


def test_an_interval_is_anchored_at_now_and_first_fires_one_interval_later() -> None:
    task = make(schedule=" 5m ")
    assert (task.schedule, task.schedule_kind) == ("5m", "interval")
    assert task.anchor_at == NOW
    assert task.next_run_at == NOW + timedelta(minutes=5)


def test_a_future_start_anchors_the_interval_and_is_the_first_fire() -> None:
    start = NOW + timedelta(days=1)
    task = make(start_at=start)
    assert task.anchor_at == start
    assert task.next_run_at == start


def test_a_past_start_anchors_the_interval_but_the_first_fire_is_in_the_future() -> None:
    start = NOW - timedelta(minutes=7)
    task = make(start_at=start)
    assert task.anchor_at == start
    assert task.next_run_at == start + timedelta(minutes=10)


def test_a_cron_start_is_inclusive() -> None:
    start = datetime(2030, 6, 13, 2, 0, tzinfo=UTC)
    assert make(schedule="0 2 * * *", start_at=start).next_run_at == start


def test_cron_is_evaluated_in_the_task_time_zone() -> None:
    task = make(schedule="0 2 * * *", timezone="Europe/Berlin")
    assert task.timezone == "Europe/Berlin"
    assert task.next_run_at == datetime(2030, 6, 13, 0, 0, tzinfo=UTC)  # 02:00 CEST


@pytest.mark.parametrize("schedule", [None, "manual", " MANUAL "])
def test_no_schedule_or_manual_means_manual(schedule: str | None) -> None:
    task = make(schedule=schedule)
    assert (task.schedule, task.schedule_kind, task.next_run_at) == ("manual", "manual", None)


def test_now_is_stored_as_a_fixed_instant() -> None:
    task = make(schedule="now")
    assert task.schedule_kind == "once"
    assert task.schedule == "2030-06-12T10:30:15.250000Z"
    assert task.next_run_at == NOW


def test_once_turns_a_cron_schedule_into_its_first_fire_time() -> None:
    task = make(schedule="0 2 * * *", once=True)
    assert (task.schedule_kind, task.schedule) == ("once", "2030-06-13T02:00:00Z")
    assert task.next_run_at == datetime(2030, 6, 13, 2, 0, tzinfo=UTC)


def test_an_iso_instant_up_to_60_seconds_old_still_fires() -> None:
    at = NOW - timedelta(seconds=59)
    assert make(schedule=at.isoformat()).next_run_at == at


def test_a_local_iso_instant_is_wall_time_in_the_task_zone() -> None:
    task = make(schedule="2030-07-01T09:00", timezone="America/New_York")
    assert task.schedule == "2030-07-01T13:00:00Z"


def test_datetimes_are_normalised_to_utc_and_iso_strings_accepted() -> None:
    plus_two = timezone(timedelta(hours=2))
    task = make(start_at=datetime(2030, 7, 1, 12, 0, tzinfo=plus_two), end_at="2030-08-01T00:00:00Z")
    assert task.start_at == datetime(2030, 7, 1, 10, 0, tzinfo=UTC)
    assert task.start_at.tzinfo is UTC
    assert task.end_at == datetime(2030, 8, 1, tzinfo=UTC)


def test_names_are_stripped_and_may_be_200_characters_of_any_script() -> None:
    assert make(name="  backup  ").name == "backup"
    assert make(name="é" * 200).name == "é" * 200
    assert make(name="数据 备份 🚀").name == "数据 备份 🚀"


def test_an_external_command_gets_its_placeholders_from_data() -> None:
    task = make(command="backup:db", data={"target": "db1; rm -rf /", "level": 3})
    assert task.command == "backup:db"
    assert task.data == {"target": "db1; rm -rf /", "level": 3}


def test_data_comes_back_as_plain_json() -> None:
    assert make(data={"a": (1, 2), "b": {"c": None}}).data == {"a": [1, 2], "b": {"c": None}}


def test_boundary_values_are_accepted() -> None:
    task = make(
        retries=100, retry_delay_ms=86_400_000, retry_backoff=10, timeout_ms=604_800_000,
        misfire_grace_ms=0, auto_pause_after=1, max_runs=1, queue="a" * 100,
    )  # fmt: skip
    assert (task.retries, task.retry_backoff, task.timeout_ms, task.max_runs) == (100, 10.0, 604_800_000, 1)
    assert make(retries=0, retry_delay_ms=0, retry_backoff=1, timeout_ms=1).retries == 0


def test_data_of_exactly_64_kib_is_accepted() -> None:
    overhead = len('{"k":""}')
    assert len(make(data={"k": "x" * (65536 - overhead)}).data["k"]) == 65536 - overhead


# ---------------------------------------------------------------------------------------------- rejected


@pytest.mark.parametrize(
    "schedule", ["61 * * * *", "5x", "", "   ", "@fortnightly", "0 0 30 2 *", "*/0 * * * *"]
)
def test_it_rejects_bad_schedules(schedule: str) -> None:
    with pytest.raises(InvalidSchedule):
        make(schedule=schedule)


def test_it_rejects_an_unknown_time_zone() -> None:
    with pytest.raises(InvalidTimezone):
        make(timezone="Mars/Olympus")


def test_it_rejects_a_json_array_as_data() -> None:
    with pytest.raises(InvalidField) as error:
        make(data=[1, 2])
    assert (error.value.field, error.value.reason) == ("data", "must be a JSON object")


@pytest.mark.parametrize(
    "data",
    [
        {"k": "x" * 65536},
        {1: "integer key"},
        {"nested": {2: "integer key"}},
        {"x": float("nan")},
        {"x": float("inf")},
        {"x": object()},
        {"x": "nul\x00"},
        {"lone\ud800": 1},
        {"deep": DEEP},
        "text",
    ],
    ids=[
        "over-64KiB",
        "int-key",
        "nested-int-key",
        "nan",
        "inf",
        "object",
        "nul",
        "surrogate",
        "deep",
        "text",
    ],
)
def test_it_rejects_data_that_is_not_a_small_json_object(data: Any) -> None:
    with pytest.raises(InvalidField) as error:
        make(data=data)
    assert error.value.field == "data"


@pytest.mark.parametrize(
    "name",
    [
        "",
        "   ",
        "x" * 201,
        "bell\x07",
        "tab\tinside",
        "zero\u200bwidth",
        "line\u2028sep",
        "para\u2029graph",
        "12345",
        7,
    ],
    ids=["empty", "blank", "201", "bell", "tab", "zwsp", "line-sep", "para-sep", "digits", "not-text"],
)
def test_it_rejects_bad_names(name: Any) -> None:
    with pytest.raises(InvalidField) as error:
        make(name=name)
    assert error.value.field == "name"


@pytest.mark.parametrize("command", ["rm -rf /", "test:nope", "TEST:ECHO", "$(id)", ""])
def test_it_rejects_unregistered_commands(command: str) -> None:
    with pytest.raises(UnknownCommand):
        make(command=command)


def test_it_rejects_an_external_command_missing_a_placeholder() -> None:
    with pytest.raises(InvalidField) as error:
        make(command="backup:db", data={"target": "db1"})
    assert error.value.field == "data"
    assert "level" in error.value.reason


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("retries", -1), ("retries", 101), ("retries", True), ("retries", 1.5), ("retries", "3"),
        ("timeout_ms", 0), ("timeout_ms", 604_800_001),
        ("retry_delay_ms", -1), ("retry_delay_ms", 86_400_001),
        ("retry_backoff", 0.5), ("retry_backoff", 11), ("retry_backoff", float("nan")),
        ("retry_backoff", False),
        ("overlap_policy", "sometimes"), ("misfire_policy", "RUN_ALL"), ("misfire_grace_ms", -1),
        ("auto_pause_after", 0), ("max_runs", 0), ("max_runs", 2**40), ("queue", "a b"), ("queue", ""),
        ("queue", "x" * 101), ("queue", "é"), ("start_at", datetime(2030, 1, 1)), ("start_at", "tomorrow"),
        ("end_at", NOW - timedelta(days=1)), ("once", "yes"), ("status", "paused"), ("colour", "blue"),
    ],
)  # fmt: skip
def test_it_rejects_bad_field_values(field: str, value: Any) -> None:
    with pytest.raises(InvalidField):
        make(**{field: value})


def test_it_rejects_an_integer_too_long_to_print() -> None:
    with pytest.raises(InvalidField, match="far too large"):
        make(retries=10**5000)


def test_it_rejects_a_start_not_before_the_end() -> None:
    with pytest.raises(InvalidField) as error:
        make(start_at=NOW + timedelta(hours=2), end_at=NOW + timedelta(hours=1))
    assert error.value.field == "end_at"


def test_it_rejects_an_iso_instant_more_than_60_seconds_in_the_past() -> None:
    with pytest.raises(InvalidSchedule, match="in the past"):
        make(schedule=(NOW - timedelta(seconds=61)).isoformat())


def test_it_rejects_once_with_a_schedule_that_never_fires() -> None:
    with pytest.raises(InvalidSchedule):
        make(schedule="manual", once=True)
    with pytest.raises(InvalidSchedule):
        make(schedule="0 2 * * *", once=True, end_at=NOW + timedelta(hours=1))


def test_it_rejects_a_task_whose_first_fire_is_after_its_end() -> None:
    with pytest.raises(InvalidField) as error:
        make(schedule="@yearly", end_at=NOW + timedelta(days=1))
    assert error.value.field == "end_at"


@pytest.mark.parametrize("missing", ["name", "command"])
def test_name_and_command_are_required(missing: str) -> None:
    with pytest.raises(InvalidField) as error:
        fields = {k: v for k, v in BASE.items() if k != missing}
        validate_new_task(fields, settings=SETTINGS, commands=REGISTRY, now=NOW)
    assert error.value.field == missing


# ------------------------------------------------------------------------------------------------ updates


def test_an_update_returns_only_the_columns_that_change() -> None:
    task = as_task(make())
    assert change(task, name="nightly", retries=3) == {}
    assert change(task, name=" renamed ", retries=5) == {"name": "renamed", "retries": 5}


def test_a_new_schedule_recomputes_the_next_run_and_the_anchor() -> None:
    task = as_task(make())
    later = NOW + timedelta(hours=1)
    columns = change(task, later, schedule="10m")
    assert columns == {"schedule": "10m", "anchor_at": later, "next_run_at": later + timedelta(minutes=10)}


def test_a_timezone_change_keeps_the_interval_anchor() -> None:
    task = as_task(make(schedule="0 2 * * *"))
    columns = change(task, timezone="Asia/Tokyo")
    assert columns["timezone"] == "Asia/Tokyo"
    assert columns["next_run_at"] == datetime(2030, 6, 12, 17, 0, tzinfo=UTC)
    assert "anchor_at" not in columns


def test_an_end_in_the_past_completes_an_active_task() -> None:
    task = as_task(make(), next_run_at=NOW + timedelta(minutes=5))
    columns = change(task, NOW + timedelta(hours=1), end_at=NOW + timedelta(minutes=30))
    assert columns["status"] == "completed"
    assert columns["next_run_at"] is None


@pytest.mark.parametrize(
    ("status", "reason"), [("completed", "no further fire time"), ("failed", "execution 3 failed")]
)
def test_a_new_schedule_reactivates_a_completed_or_failed_task(status: str, reason: str) -> None:
    task = as_task(make(), status=status, status_reason=reason, next_run_at=None)
    columns = change(task, schedule="@daily")
    assert (columns["status"], columns["status_reason"]) == ("active", None)
    assert columns["next_run_at"] == datetime(2030, 6, 13, tzinfo=UTC)


def test_an_update_checks_the_merged_command_and_data() -> None:
    task = as_task(make(command="backup:db", data={"target": "a", "level": 1}))
    with pytest.raises(InvalidField):
        change(task, data={"target": "a"})
    with pytest.raises(InvalidField):
        change(task, name=None)


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [("once", True, InvalidField), ("schedule", "61 * * * *", InvalidSchedule),
     ("command", "rm -rf /", UnknownCommand), ("retries", -1, InvalidField), ("timeout_ms", 0, InvalidField),
     ("timezone", "Mars/Olympus", InvalidTimezone), ("run_count", 0, InvalidField),
     ("start_at", NOW + timedelta(days=400), InvalidField)],
)  # fmt: skip
def test_an_update_rejects_what_a_create_rejects(field: str, value: Any, error: type[Exception]) -> None:
    task = as_task(make(end_at=NOW + timedelta(days=365)))
    with pytest.raises(error):
        change(task, **{field: value})


# ------------------------------------------------------------------------------------------------- fuzzing

NASTY_TEXT = st.sampled_from(
    [
        "'; DROP TABLE scheduled_tasks; --", "1 OR 1=1", "$(rm -rf /)", "`id`", "a; b | c && d > /etc/passwd",
        "../../etc/passwd", "\x00", "\ud800", "{target}", "%s%s%n", "\u202e", "0 0 * * * *", "@reboot",
        "9999-12-31T23:59:59+14:00", "0001-01-01T00:00:00-14:00", "1" * 400, "5 m", "2h 1h", "now", " ",
    ]
)  # fmt: skip
JUNK: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.text(alphabet=st.characters(codec=None), max_size=300),
    NASTY_TEXT,
    st.lists(st.integers(), max_size=3),
    st.dictionaries(
        st.text(max_size=10), st.one_of(st.integers(), st.text(max_size=10), st.none()), max_size=4
    ),
    st.datetimes(),
    st.datetimes(timezones=st.timezones()),
)


def _only_typed_errors(call: Any) -> None:
    try:
        call()
    except SchedulerError as error:
        assert isinstance(error, InvalidInput)
        assert str(error)  # one line a user can act on


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(sorted(CREATABLE)), value=JUNK)
def test_any_value_of_any_field_creates_a_task_or_raises_a_typed_error(field: str, value: Any) -> None:
    _only_typed_errors(lambda: make(**{field: value}))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=st.dictionaries(st.sampled_from(sorted(CREATABLE)), JUNK, max_size=6))
def test_any_combination_of_fields_creates_a_task_or_raises_a_typed_error(fields: dict[str, Any]) -> None:
    _only_typed_errors(lambda: validate_new_task(fields, settings=SETTINGS, commands=REGISTRY, now=NOW))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(sorted(UPDATABLE)), value=JUNK)
def test_any_update_of_any_field_succeeds_or_raises_a_typed_error(field: str, value: Any) -> None:
    task = as_task(make())
    _only_typed_errors(lambda: change(task, **{field: value}))


@settings(max_examples=400, deadline=None)
@given(schedule=st.text(alphabet="0123456789*/,-@ abcdefghijklmnopqrstuvwxyzJANFEBMONSUN:T+Z.", max_size=40))
def test_any_cron_like_text_is_a_schedule_or_a_typed_error(schedule: str) -> None:
    _only_typed_errors(lambda: make(schedule=schedule))


@settings(max_examples=200, deadline=None)
@given(
    data=st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text()),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
        max_leaves=30,
    )
)
def test_any_json_like_data_is_accepted_as_an_object_or_rejected_with_a_typed_error(data: Any) -> None:
    _only_typed_errors(lambda: make(data=data, command="test:echo"))


def test_a_registry_without_the_command_rejects_it() -> None:
    with pytest.raises(UnknownCommand):
        validate_new_task(BASE, settings=SETTINGS, commands=CommandRegistry(), now=NOW)
