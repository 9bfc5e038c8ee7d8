"""Alert rules: which conditions of a task hold now (docs/alerts.md). Pure: facts and the time are passed in.

- ``failure``: at least ``on_failure`` consecutive failed executions;
- ``late``: a scheduled execution has not started ``late_ms`` after its slot;
- ``missing``: no success within ``missing_ms`` after a slot was due, whatever the reason (dead-man's switch);
- ``long``: an execution has been running longer than ``long_ms``.

A condition that no longer holds resolves its incident; ``recovered`` says whether that is notified.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from scheduler.errors import InvalidField
from scheduler.settings import Settings

# Records of scheduler.records.DEFERRED: imported where they are built, so importing this module does not
# define them (the read verbs never do).
if TYPE_CHECKING:
    from scheduler.records import AlertRules, TaskFacts

ALERTS = "alerts"  # the field of a task (create/update, a tasks file, its audited JSON) holding its rules
RULE_FIELDS: tuple[str, ...] = ("on_failure", "late_ms", "missing_ms", "long_ms", "recovered")
MAX_RULE_MS = 366 * 24 * 3600 * 1000
MAX_ON_FAILURE = 10_000


def check_rules(raw: object) -> dict[str, Any]:
    """Validate rule changes given to create/update (``alerts={...}``): field -> value; None restores the
    setting's default, 0 (or False for ``recovered``) turns the rule off. Raises :class:`InvalidField`."""
    if not isinstance(raw, Mapping):
        raise InvalidField("alerts", f"must be a mapping of rules, not {type(raw).__name__}")
    checked: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in RULE_FIELDS:
            from difflib import get_close_matches

            close = get_close_matches(str(key), RULE_FIELDS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InvalidField("alerts", f"unknown rule {key!r}; one of {', '.join(RULE_FIELDS)}{hint}")
        checked[key] = _check_rule(key, value)
    return checked


def _check_rule(key: str, value: object) -> int | bool | None:
    if value is None:
        return None
    if key == "recovered":
        if not isinstance(value, bool):
            raise InvalidField(f"alerts.{key}", "must be true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidField(f"alerts.{key}", f"must be a whole number, not {type(value).__name__}")
    high = MAX_ON_FAILURE if key == "on_failure" else MAX_RULE_MS
    if not 0 <= value <= high:
        raise InvalidField(f"alerts.{key}", f"must be between 0 and {high}, not {value}")
    return value


def effective_rules(stored: Mapping[str, Any], settings: Settings) -> AlertRules:
    """A task's rules: its own where set, else the settings' defaults."""

    from scheduler.records import AlertRules

    def pick(key: str, default: Any) -> Any:
        value = stored.get(key)
        return default if value is None else value

    return AlertRules(
        on_failure=pick("on_failure", settings.alert_on_failure),
        late_ms=pick("late_ms", settings.alert_late) or None,
        missing_ms=pick("missing_ms", settings.alert_missing) or None,
        long_ms=pick("long_ms", settings.alert_long) or None,
        recovered=pick("recovered", settings.alert_recovered),
    )


def active_conditions(facts: TaskFacts, rules: AlertRules, now: datetime) -> dict[str, str]:
    """Condition -> a one-line detail, for every condition of the task that holds at ``now``."""
    active: dict[str, str] = {}
    failures = facts.consecutive_failures
    if rules.on_failure and failures >= rules.on_failure:
        active["failure"] = f"{failures} consecutive failed execution{'s' if failures != 1 else ''}"
    if rules.late_ms and _older_than(facts.oldest_unstarted, rules.late_ms, now):
        active["late"] = f"an execution for {_iso(facts.oldest_unstarted)} has not started"
    if rules.missing_ms and facts.watched and _older_than(facts.due_slot, rules.missing_ms, now):
        active["missing"] = (
            f"no successful run since the slot {_iso(facts.due_slot)} was due "
            f"({_duration(rules.missing_ms)} allowed)"
        )
    if rules.long_ms and _older_than(facts.running_since, rules.long_ms, now):
        active["long"] = f"running since {_iso(facts.running_since)} (over {_duration(rules.long_ms)})"
    return active


def repeat_due(notified_at: datetime | None, repeat_ms: int, now: datetime) -> bool:
    """Whether an open, notified incident is notified again (``repeat_ms`` 0: never)."""
    return (
        bool(repeat_ms) and notified_at is not None and now - notified_at >= timedelta(milliseconds=repeat_ms)
    )


def retry_delay_ms(attempts: int, base_ms: int, cap_ms: int = 300_000) -> int:
    """Delay before attempt ``attempts + 1`` of a delivery: ``base_ms`` doubled per failed attempt, capped."""
    return int(min(cap_ms, base_ms * 2 ** max(0, min(attempts - 1, 30))))


def _older_than(instant: datetime | None, limit_ms: int, now: datetime) -> bool:
    return instant is not None and now - instant > timedelta(milliseconds=limit_ms)


def _iso(instant: datetime | None) -> str:
    return "-" if instant is None else instant.strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(ms: int) -> str:
    seconds = ms / 1000
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 7200:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"
