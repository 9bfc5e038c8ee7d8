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

from scheduler.storage.tables import audit, executions, tasks

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
    "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z",
)  # fmt: skip
TIMEZONES = ("UTC", "Europe/Berlin", "America/New_York", "Mars/Olympus", "../../etc/passwd", "utc", "EST5EDT")
COMMANDS = ("test:echo", "test:sleep", "test:fail", "system:health", "nope:missing", "TEST:ECHO")


def plausible_options() -> dict[str, st.SearchStrategy[str]]:
    """Per ``scheduler:create``/``update`` option: values that are (mostly) valid, so that a hostile value in
    another option is what decides the outcome."""
    return {
        "--name": st.from_regex(r"[a-z][a-z0-9_.-]{0,16}", fullmatch=True),
        "--command": st.sampled_from(COMMANDS[:2]),
        "--schedule": st.sampled_from(["5m", "1h30m", "@daily", "0 2 * * *", "*/15 * * * *", "manual"]),
        "--data": st.dictionaries(st.text(ARGV_CHARACTERS, max_size=10), JSON_VALUES, max_size=4).map(
            lambda value: json.dumps(value, ensure_ascii=False)
        ),
        "--timezone": st.sampled_from(TIMEZONES[:3]),
        "--retries": st.integers(0, 100).map(str),
        "--retry-delay": st.integers(0, 86_400_000).map(str),
        "--retry-backoff": st.floats(1.0, 10.0).map(repr),
        "--timeout": st.integers(1, 604_800_000).map(str),
        "--overlap": st.sampled_from(["allow", "forbid", "replace"]),
        "--misfire": st.sampled_from(["skip", "run_once", "run_all"]),
        "--misfire-grace": st.integers(0, 86_400_000).map(str),
        "--auto-pause": st.integers(1, 2**31 - 1).map(str),
        "--queue": st.from_regex(r"[A-Za-z0-9_.:-]{1,30}", fullmatch=True),
        "--start": st.sampled_from(["2030-01-01T00:00:00Z", "2031-06-01T12:00:00+02:00"]),
        "--end": st.sampled_from(["2040-01-01T00:00:00Z", "2041-01-01"]),
        "--max-runs": st.integers(1, 2**31 - 1).map(str),
        "--actor": st.sampled_from(["alice", "ops@example.com", "ci-bot"]),
    }


def hostile_options(*, argv: bool = True) -> dict[str, st.SearchStrategy[str]]:
    """Per option: edge values of its kind, or hostile text (as argv strings)."""
    text = hostile_text(argv=argv)

    def number() -> st.SearchStrategy[str]:
        edges = st.sampled_from(["-1", "0", "2147483648", "9223372036854775808", "1_000", "0x10", " 5 "])
        return st.one_of(edges, st.integers(min_value=-(2**80), max_value=2**80).map(str), text)

    return {
        "--name": text,
        "--command": st.one_of(st.sampled_from(COMMANDS), text),
        "--schedule": st.one_of(st.sampled_from(SCHEDULES), text),
        "--data": st.one_of(
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
            st.floats(allow_nan=True, allow_infinity=True).map(repr),
            st.sampled_from(["nan", "inf", "-0"]),
            text,
        ),
        "--timeout": number(),
        "--overlap": text,
        "--misfire": text,
        "--misfire-grace": number(),
        "--auto-pause": number(),
        "--queue": st.one_of(st.sampled_from(["q" * 101, "a b", "q/../x"]), text),
        "--start": st.one_of(st.sampled_from(INSTANTS), text),
        "--end": st.one_of(st.sampled_from(INSTANTS), text),
        "--max-runs": number(),
        "--actor": text,
    }


@st.composite
def argv_options(draw: st.DrawFn, required: tuple[str, ...], optional: tuple[str, ...]) -> dict[str, str]:
    """Options with plausible values, one or two of them (sometimes none) hostile."""
    chosen = [*required, *draw(st.lists(st.sampled_from(optional), unique=True))]
    hostile = set(draw(st.lists(st.sampled_from(chosen), max_size=2, unique=True))) if chosen else set()
    plausible, bad = plausible_options(), hostile_options()
    return {option: draw(bad[option] if option in hostile else plausible[option]) for option in chosen}


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


PLAUSIBLE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "name": st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True),
    "command": st.sampled_from(COMMANDS[:2]),
    "schedule": st.sampled_from(["5m", "@daily", "0 2 * * *", "manual", None]),
    "data": st.dictionaries(st.text(ARGV_CHARACTERS, max_size=8), JSON_VALUES, max_size=4),
    "timezone": st.sampled_from(TIMEZONES[:3]),
    "retries": st.integers(0, 100),
    "retry_delay_ms": st.integers(0, 86_400_000),
    "retry_backoff": st.floats(1.0, 10.0),
    "timeout_ms": st.integers(1, 604_800_000),
    "overlap_policy": st.sampled_from(["allow", "forbid", "replace"]),
    "misfire_policy": st.sampled_from(["skip", "run_once", "run_all"]),
    "misfire_grace_ms": st.one_of(st.none(), st.integers(0, 86_400_000)),
    "auto_pause_after": st.one_of(st.none(), st.integers(1, 10)),
    "queue": st.sampled_from(["default", "reports"]),
    "start_at": st.sampled_from([None, datetime(2030, 1, 1, tzinfo=UTC)]),
    "end_at": st.sampled_from([None, datetime(2040, 1, 1, tzinfo=UTC)]),
    "max_runs": st.one_of(st.none(), st.integers(1, 1000)),
    "once": st.booleans(),
}


@st.composite
def api_fields(
    draw: st.DrawFn, required: tuple[str, ...], optional: tuple[str, ...], *, unknown: bool = True
) -> dict[str, Any]:
    """Keyword arguments with plausible values, one or two of them (sometimes none) any Python value; now and
    then a field the service does not know."""
    chosen = [*required, *draw(st.lists(st.sampled_from(optional), unique=True))]
    hostile = set(draw(st.lists(st.sampled_from(chosen), max_size=2, unique=True))) if chosen else set()
    fields = {name: draw(python_values() if name in hostile else PLAUSIBLE_FIELDS[name]) for name in chosen}
    if unknown and draw(st.integers(0, 20)) == 0:
        fields[draw(st.sampled_from(["bogus", "id", "status", "next_run_at", "run_count"]))] = draw(
            python_values()
        )
    return fields


# ------------------------------------------------------------------------------------------ snapshots


def snapshot(engine: Engine) -> tuple[list[tuple[Any, ...]], int, int]:
    """(every task row in full, audit row count, execution row count)."""
    with engine.connect() as connection:
        rows = [tuple(row) for row in connection.execute(select(tasks).order_by(tasks.c.id))]
        audits = connection.execute(select(func.count()).select_from(audit)).scalar_one()
        runs = connection.execute(select(func.count()).select_from(executions)).scalar_one()
    return rows, int(audits), int(runs)
