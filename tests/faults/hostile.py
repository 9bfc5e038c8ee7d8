"""Hostile input for the fuzz tests: strategies of what users (and attackers) type, and database snapshots.

Every value is either plausible for its option (so validation gets deep) or hostile: random Unicode
(surrogates, controls, right-to-left marks, emoji), SQL fragments, shell metacharacters, format strings,
rich markup, huge numbers and very long text.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from scheduler.repository.tables import audit, executions, tasks

FRAGMENTS = (
    "'; DROP TABLE scheduled_tasks; --",
    "' OR '1'='1",
    '" OR ""="',
    "1; DELETE FROM task_audit",
    "%s%s%s",
    "%(name)s",
    "{name}{0}",
    "$(touch /tmp/pwned)",
    "`id`",
    "; rm -rf / #",
    "| cat /etc/passwd",
    "&& echo pwned",
    "../../../../etc/passwd",
    "\\",
    "'",
    '"',
    "null",
    "NaN",
    "-Infinity",
    "1e309",
    "9" * 400,
    "-" + "9" * 30,
    "\t",
    "\n",
    "\r\n",
    " ",
    "",
    "[red]boom[/red]",
    "\x1b[31mred\x1b[0m",
    "\u202eevil",
    "\ufeffbom",
    "💥" * 3,
    "\udcff",
    "a\u0301",
    "ǅ",
    "x" * 250,
)

# Text a real argv can carry: anything but NUL (lone surrogates arrive through surrogateescape).
ARGV_CHARACTERS = st.characters(exclude_categories=(), exclude_characters="\x00")
ANY_CHARACTERS = st.characters(exclude_categories=())


def hostile_text(*, argv: bool) -> st.SearchStrategy[str]:
    characters = ARGV_CHARACTERS if argv else ANY_CHARACTERS
    return st.one_of(
        st.sampled_from([f for f in FRAGMENTS if not (argv and "\x00" in f)]),
        st.text(characters, max_size=40),
        st.text(characters, min_size=200, max_size=3000),
        st.builds(lambda a, b: a + b, st.sampled_from(FRAGMENTS), st.text(characters, max_size=10)),
    )


JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(ARGV_CHARACTERS, max_size=30),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(ARGV_CHARACTERS, max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
SCHEDULES = (
    "5m", "30s", "1h30m", "1w", "0s", "99999999999d", "@daily", "@hourly", "@reboot", "0 2 * * *",
    "*/15 * * * *", "0 0 30 2 *", "60 * * * *", "0 0 * * 8", "* * * *", "now", "manual", "",
    "2030-01-01T00:00:00Z", "1999-01-01T00:00:00Z", "9999-12-31T23:59:59+00:00",
)  # fmt: skip
INSTANTS = (
    "now", "2030-01-01T00:00:00Z", "2030-01-01T00:00:00", "2030-01-01", "1999-12-31T23:59:59+14:00",
    "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2030-02-30T00:00:00Z", "yesterday",
)  # fmt: skip
TIMEZONES = ("UTC", "Europe/Berlin", "America/New_York", "Mars/Olympus", "../../etc/passwd", "utc", "EST5EDT")
COMMANDS = ("test:echo", "test:sleep", "test:fail", "system:health", "nope:missing", "TEST:ECHO")


def option_values(*, argv: bool = True) -> dict[str, st.SearchStrategy[str]]:
    """Per ``scheduler:create``/``update`` option: plausible values or hostile text (as argv strings)."""
    text = hostile_text(argv=argv)

    def number() -> st.SearchStrategy[str]:
        return st.one_of(st.integers(min_value=-(2**80), max_value=2**80).map(str), text)

    return {
        "--name": st.one_of(st.from_regex(r"[a-z][a-z0-9 _.-]{0,20}", fullmatch=True), text),
        "--command": st.one_of(st.sampled_from(COMMANDS), text),
        "--schedule": st.one_of(st.sampled_from(SCHEDULES), text),
        "--data": st.one_of(
            st.dictionaries(st.text(ARGV_CHARACTERS, max_size=10), JSON_VALUES, max_size=5).map(
                lambda value: json.dumps(value, ensure_ascii=False)
            ),
            JSON_VALUES.map(json.dumps),
            st.sampled_from(['{"a":', "{'a': 1}", '{"a": NaN}', '{"\\u0000": 1}', '{"a": "\\ud800"}']),
            st.just('{"deep": ' * 150 + "1" + "}" * 150),
            st.just(json.dumps({"big": "x" * 70_000})),
            text,
        ),
        "--timezone": st.one_of(st.sampled_from(TIMEZONES), text),
        "--retries": number(),
        "--retry-delay": number(),
        "--retry-backoff": st.one_of(
            st.floats(allow_nan=True, allow_infinity=True).map(repr), st.sampled_from(["nan", "inf", "1.5"]), text
        ),
        "--timeout": number(),
        "--overlap": st.one_of(st.sampled_from(["allow", "forbid", "replace"]), text),
        "--misfire": st.one_of(st.sampled_from(["skip", "run_once", "run_all"]), text),
        "--misfire-grace": number(),
        "--auto-pause": number(),
        "--queue": st.one_of(st.sampled_from(["default", "q-1.a:b", "q" * 101, "a b"]), text),
        "--start": st.one_of(st.sampled_from(INSTANTS), text),
        "--end": st.one_of(st.sampled_from(INSTANTS), text),
        "--max-runs": number(),
        "--actor": text,
    }


# ------------------------------------------------------------------------------------- Python values


def python_values() -> st.SearchStrategy[Any]:
    """Any Python value a caller might pass to the service (right type or not)."""
    aware = st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    )
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**100), max_value=2**100),
        st.floats(allow_nan=True, allow_infinity=True),
        hostile_text(argv=False),
        st.binary(max_size=20),
        st.datetimes(),  # naive
        aware,
        st.sampled_from(
            [
                datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),
                datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-14))),
            ]
        ),
        st.timedeltas(),
        st.lists(JSON_LEAVES, max_size=3),
        st.dictionaries(st.text(ANY_CHARACTERS, max_size=8), JSON_VALUES, max_size=4),
        st.just(object()),
        st.just({1: "int key"}),
        st.just({"nested": {"deeper": [float("nan")]}}),
    )


def service_fields() -> dict[str, st.SearchStrategy[Any]]:
    """Per field of ``create_task``/``update_task``: a plausible value or any Python value."""
    anything = python_values()

    def plausible(*values: Any) -> st.SearchStrategy[Any]:
        return st.one_of(st.sampled_from(values), anything)

    return {
        "name": st.one_of(st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True), anything),
        "command": plausible(*COMMANDS),
        "schedule": plausible(*SCHEDULES),
        "data": st.one_of(st.dictionaries(st.text(ANY_CHARACTERS, max_size=8), JSON_VALUES, max_size=4), anything),
        "timezone": plausible(*TIMEZONES),
        "retries": plausible(0, 3, 100, 101, -1),
        "retry_delay_ms": plausible(0, 1000, 86_400_001),
        "retry_backoff": plausible(1.0, 2, 10.5, float("nan")),
        "timeout_ms": plausible(1, 60_000, 0),
        "overlap_policy": plausible("allow", "forbid", "replace"),
        "misfire_policy": plausible("skip", "run_once", "run_all"),
        "misfire_grace_ms": plausible(0, 60_000, None),
        "auto_pause_after": plausible(1, 3, None, 0),
        "queue": plausible("default", "reports"),
        "start_at": anything,
        "end_at": anything,
        "max_runs": plausible(1, 5, None),
        "once": plausible(True, False),
        "bogus_field": anything,
    }


# ------------------------------------------------------------------------------------------ snapshots


def snapshot(engine: Engine) -> tuple[list[tuple[Any, ...]], int, int]:
    """(every task row in full, audit row count, execution row count)."""
    with engine.connect() as connection:
        rows = [tuple(row) for row in connection.execute(select(tasks).order_by(tasks.c.id))]
        audits = connection.execute(select(func.count()).select_from(audit)).scalar_one()
        runs = connection.execute(select(func.count()).select_from(executions)).scalar_one()
    return rows, int(audits), int(runs)
