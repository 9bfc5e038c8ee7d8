"""scheduler.rules.alerts: which conditions hold, defaults, rule validation, repeats and retry delays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduler.errors import InvalidField
from scheduler.records import AlertRules, TaskFacts
from scheduler.rules.alerts import (
    active_conditions,
    check_rules,
    effective_rules,
    repeat_due,
    retry_delay_ms,
)
from scheduler.settings import Settings

NOW = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
ALL_ON = AlertRules(on_failure=2, late_ms=30_000, missing_ms=120_000, long_ms=600_000, recovered=True)


def facts(**values: Any) -> TaskFacts:
    base: dict[str, Any] = {
        "task_id": 1,
        "task_name": "t",
        "watched": True,
        "consecutive_failures": 0,
        "stored_rules": {},
        "due_slot": None,
        "oldest_unstarted": None,
        "running_since": None,
    }
    return TaskFacts(**{**base, **values})


def ago(**delta: float) -> datetime:
    return NOW - timedelta(**delta)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, set()),
        ({"consecutive_failures": 1}, set()),
        ({"consecutive_failures": 2}, {"failure"}),
        ({"oldest_unstarted": ago(seconds=30)}, set()),  # exactly S late is not late yet
        ({"oldest_unstarted": ago(seconds=31)}, {"late"}),
        ({"due_slot": ago(seconds=119)}, set()),
        ({"due_slot": ago(seconds=121)}, {"missing"}),
        ({"due_slot": ago(seconds=121), "watched": False}, set()),  # paused by a person: nothing is missing
        ({"running_since": ago(minutes=11)}, {"long"}),
        ({"running_since": ago(minutes=9)}, set()),
        (
            {"consecutive_failures": 5, "due_slot": ago(hours=1), "running_since": ago(hours=1)},
            {"failure", "missing", "long"},
        ),
    ],
)
def test_conditions_that_hold(given: dict[str, Any], expected: set[str]) -> None:
    assert set(active_conditions(facts(**given), ALL_ON, NOW)) == expected


def test_a_rule_that_is_off_never_holds() -> None:
    off = AlertRules(on_failure=0, late_ms=None, missing_ms=None, long_ms=None, recovered=True)
    stuck = facts(consecutive_failures=99, due_slot=ago(days=9), oldest_unstarted=ago(days=9),
                  running_since=ago(days=9))  # fmt: skip
    assert active_conditions(stuck, off, NOW) == {}


def test_details_say_what_happened() -> None:
    details = active_conditions(
        facts(consecutive_failures=3, due_slot=datetime(2026, 12, 7, 2, 0, tzinfo=UTC)), ALL_ON, NOW
    )
    assert details["failure"] == "3 consecutive failed executions"
    assert (
        details["missing"] == "no successful run since the slot 2026-12-07T02:00:00Z was due (2 min allowed)"
    )


def test_a_tasks_own_rules_win_and_the_settings_fill_the_rest() -> None:
    settings = Settings(alert_on_failure=3, alert_missing=60_000, alert_recovered=False)
    assert effective_rules({}, settings) == AlertRules(
        on_failure=3, late_ms=None, missing_ms=60_000, long_ms=None, recovered=False
    )
    own = effective_rules({"on_failure": 0, "missing_ms": 0, "long_ms": 5000, "recovered": True}, settings)
    assert own == AlertRules(on_failure=0, late_ms=None, missing_ms=None, long_ms=5000, recovered=True)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "invalid alerts: must be a mapping of rules, not list"),
        (
            {"late": 5},
            "invalid alerts: unknown rule 'late'; one of on_failure, late_ms, missing_ms, long_ms,",
        ),
        ({"late_ms": -1}, "invalid alerts.late_ms: must be between 0 and"),
        ({"on_failure": True}, "invalid alerts.on_failure: must be a whole number, not bool"),
        ({"on_failure": 1.5}, "invalid alerts.on_failure: must be a whole number, not float"),
        ({"on_failure": 10_001}, "invalid alerts.on_failure: must be between 0 and 10000, not 10001"),
        ({"recovered": "yes"}, "invalid alerts.recovered: must be true or false"),
    ],
)
def test_bad_rules_are_refused_naming_the_rule(raw: object, message: str) -> None:
    with pytest.raises(InvalidField) as caught:
        check_rules(raw)
    assert str(caught.value).startswith(message)


def test_good_rules_pass_and_none_means_the_default() -> None:
    assert check_rules({"on_failure": 0, "late_ms": None, "recovered": False}) == {
        "on_failure": 0,
        "late_ms": None,
        "recovered": False,
    }


def test_repeats_come_after_the_interval_and_never_with_zero() -> None:
    assert not repeat_due(ago(minutes=59), 3_600_000, NOW)
    assert repeat_due(ago(minutes=60), 3_600_000, NOW)
    assert not repeat_due(ago(days=30), 0, NOW)
    assert not repeat_due(None, 1000, NOW)  # never told (silenced): not a repeat


def test_retry_delays_double_and_are_capped() -> None:
    assert [retry_delay_ms(n, 1000) for n in (1, 2, 3, 4)] == [1000, 2000, 4000, 8000]
    assert retry_delay_ms(40, 1000) == 300_000
