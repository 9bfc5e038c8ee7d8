"""Issue 15's richer schedules through the real `systemprompt` executable: exclusion calendars (create, list,
show, delete, ICS import, audit), --exclude/--only-in, --jitter, several --schedule options, what next and
validate show, what the planner records, and the bad input each refuses in one line with exit 2.

The verbs of this module (calendar create and delete, next, validate) run as the real executable at least once
on each database; the other calls run the same click application in-process (``Cli.invoke``: same error
policy and exit codes, no process start each)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_cli_runner import Cli, Result, assert_one_line_error

from scheduler.rules.calendars import local_day
from tests.support.processes import wait_for

ICS = (
    "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//e2e//holidays//EN\r\n"
    "BEGIN:VEVENT\r\nUID:1\r\nDTSTART;VALUE=DATE:20261225\r\nDTEND;VALUE=DATE:20261227\r\nEND:VEVENT\r\n"
    "END:VCALENDAR\r\n"
)
ZONE = "Pacific/Kiritimati"  # UTC+14
HOLIDAY = "excluded by calendar 'holiday' (2030-06-14)"
CREATE = ("scheduler:create", "--name", "t", "--command", "test:echo", "--schedule")


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> Cli:
    workdir = tmp_path / "work"
    workdir.mkdir()
    return Cli(db_url, workdir, SCHEDULER_ACTOR="e2e-tester")


@pytest.fixture
def sqlite_cli(sqlite_url: str, tmp_path: Path) -> Cli:
    workdir = tmp_path / "work"
    workdir.mkdir()
    return Cli(sqlite_url, workdir, SCHEDULER_ACTOR="e2e-tester")


def test_calendars_are_created_listed_shown_audited_and_deleted_only_when_unused(cli: Cli) -> None:
    (cli.workdir / "holidays.ics").write_text(ICS, encoding="utf-8")
    created = cli.json(
        "scheduler:calendar", "create", "holidays", "2026-11-01", "2026-12-31..2027-01-01", "sun",
        "--ics", "holidays.ics", real=True,
    )  # fmt: skip
    assert created["name"] == "holidays"
    assert created["days"] == {
        "dates": ["2026-11-01"],
        "ranges": [["2026-12-25", "2026-12-26"], ["2026-12-31", "2027-01-01"]],
        "weekdays": ["sun"],
    }
    table = cli.ok("scheduler:calendar", "list").stdout
    assert "holidays" in table and "2026-12-25..2026-12-26" in table

    task = cli.create("business", "--schedule", "0 9 * * *", "--timezone", ZONE, "--exclude", "holidays")
    assert task["exclude"] == ["holidays"] and task["only_in"] is None
    shown = cli.json("scheduler:calendar", "show", "holidays")
    assert shown["tasks"] == ["business"]

    refused = cli.run("scheduler:calendar", "delete", "holidays")
    assert_one_line_error(refused, 2)
    assert refused.stderr_lines == [
        "error: invalid calendar: 'holidays' is used by task 'business'; detach it first"
    ]
    cli.json("scheduler:update", "--id", "business", "--clear", "exclude")
    deleted = cli.json("scheduler:calendar", "delete", "holidays")
    assert deleted["name"] == "holidays"
    assert cli.json("scheduler:calendar", "list") == []

    audit = cli.json("scheduler:audit")
    actions = [(entry["action"], entry["actor"]) for entry in audit]
    assert actions[0] == ("calendar_delete", "e2e-tester") and ("calendar_create", "e2e-tester") in actions
    assert audit[0]["before"]["calendar"] == "holidays" and audit[0]["after"] is None
    create_entry = next(entry for entry in audit if entry["action"] == "calendar_create")
    assert create_entry["after"]["days"] == created["days"]


def test_next_and_validate_show_jittered_times_the_schedule_and_excluded_slots(cli: Cli) -> None:
    # A holiday on the local date of 2030-06-14 in Kiritimati, which starts at 10:00 UTC on 13 June.
    cli.ok("scheduler:calendar", "create", "holiday", "2030-06-14")
    task = cli.create(
        "two-schedules", "--schedule", "0 9 * * 1-5", "--schedule", "0 12 * * 6,0", "--timezone", ZONE,
        "--jitter", "10m", "--exclude", "holiday", "--start", "2030-06-12T00:00:00Z",
    )  # fmt: skip
    assert task["schedules"] == ["0 9 * * 1-5", "0 12 * * 6,0"] and task["jitter_ms"] == 600_000
    runs = cli.json("scheduler:next", "--task", "two-schedules", "--count", "4", real=True)
    slots = [(run["slot"], run["schedule"], run["excluded"]) for run in runs]
    assert slots == [
        ("2030-06-12T19:00:00Z", "0 9 * * 1-5", None),  # Thursday 13 June, 09:00 +14
        ("2030-06-13T19:00:00Z", "0 9 * * 1-5", "excluded by calendar 'holiday' (2030-06-14)"),
        ("2030-06-14T22:00:00Z", "0 12 * * 6,0", None),  # Saturday 15 June, 12:00 +14
        ("2030-06-15T22:00:00Z", "0 12 * * 6,0", None),
    ]
    for run in runs:
        offset = datetime.fromisoformat(run["at"]) - datetime.fromisoformat(run["slot"])
        assert timedelta(0) <= offset < timedelta(minutes=10)
    assert len({run["at"] for run in runs}) == 4
    again = cli.json("scheduler:next", "--task", "two-schedules", "--count", "4")
    assert again == runs  # the same real times on every call: the offsets are a hash of task and slot
    table = cli.ok("scheduler:next", "--task", "two-schedules", "--count", "4").stdout
    assert "excluded by calendar 'holiday' (2030-06-14)" in table and "0 12 * * 6,0" in table

    validated = cli.json(
        "scheduler:validate", "--schedule", "0 9 * * 1-5", "--schedule", "0 12 * * 6,0", "--timezone", ZONE,
        "--exclude", "holiday", "--from", "2030-06-12T00:00:00Z", "--count", "3", real=True,
    )  # fmt: skip
    assert validated["schedule"] == ["0 9 * * 1-5", "0 12 * * 6,0"]
    assert validated["slots"] == [
        {"at": "2030-06-12T19:00:00Z", "schedule": "0 9 * * 1-5", "excluded": None},
        {"at": "2030-06-13T19:00:00Z", "schedule": "0 9 * * 1-5", "excluded": HOLIDAY},
        {"at": "2030-06-14T22:00:00Z", "schedule": "0 12 * * 6,0", "excluded": None},
    ]  # fmt: skip
    listed = cli.ok("scheduler:list").stdout
    assert "0 9 * * 1-5 | 0 12 * * 6,0 ~10 min" in listed


def test_the_planner_records_excluded_slots_and_the_schedule_of_each_run(cli: Cli) -> None:
    today = local_day(datetime.now(UTC), ZONE)
    days = [today.isoformat(), (today + timedelta(days=1)).isoformat()]  # a tick may cross local midnight
    cli.ok("scheduler:calendar", "create", "today", *days)
    # run_all: slots the (slow) ticks miss run late rather than being recorded misfired; so every row is
    # the calendar's decision.
    excluded = cli.create(
        "excluded", "--schedule", "1s", "--timezone", ZONE, "--exclude", "today", "--misfire", "run_all"
    )
    both = cli.create("both", "--schedule", "2s", "--schedule", "1s", "--misfire", "run_all")

    def history(task: str) -> list[dict[str, Any]]:
        cli.ok("scheduler:planner", "--once")  # a tick in-process (the real executable's: test_cli_backfill)
        rows: list[dict[str, Any]] = cli.json("scheduler:history", "--task", task)
        return rows if len(rows) >= 3 else []

    skipped = wait_for(lambda: history("excluded"), 30, "fewer than 3 rows", interval_s=0.1)
    assert {(row["status"], row["reason"]) for row in skipped} == {("skipped", "excluded")}
    assert all(row["error"].startswith("excluded by calendar 'today' (") for row in skipped)
    table = cli.ok("scheduler:history", "--task", "excluded", real=True).stdout
    assert "skipped (excluded)" in table and "excluded by calendar 'today'" in table

    rows = wait_for(lambda: history("both"), 30, "fewer than 3 rows", interval_s=0.1)
    anchor = datetime.fromisoformat(both["anchor_at"])
    assert len({row["scheduled_for"] for row in rows}) == len(rows)  # one execution per instant
    for row in rows:
        seconds = (datetime.fromisoformat(row["scheduled_for"]) - anchor).total_seconds()
        assert row["schedule"] == ("2s" if seconds % 2 == 0 else "1s"), row
    listed = {task["name"]: task for task in cli.tasks()}
    assert listed["excluded"]["run_count"] == 0 and listed["excluded"]["id"] == excluded["id"]
    assert listed["both"]["run_count"] == sum(1 for row in rows if row["status"] != "skipped")


def _refused(cli: Cli, *args: str) -> Result:
    result = cli.invoke(*args)
    assert_one_line_error(result, 2)
    return result


def test_bad_input_is_one_line_exit_2_and_stores_nothing(sqlite_cli: Cli) -> None:
    cli = sqlite_cli
    (cli.workdir / "notes.ics").write_text("just some notes\n", encoding="utf-8")
    (cli.workdir / "bad-date.ics").write_text(ICS.replace("20261227", "20261332"), encoding="utf-8")
    cases = {
        ("scheduler:calendar", "create", "h", "2026-12-25", "2026-13-01"): (
            "error: invalid calendar: '2026-13-01' is not a date (month must be in 1..12)"
        ),
        ("scheduler:calendar", "create", "h", "--ics", "notes.ics"): (
            "error: invalid ics: not an iCalendar file (it must start with BEGIN:VCALENDAR)"
        ),
        ("scheduler:calendar", "create", "h", "--ics", "bad-date.ics"): (
            "error: invalid ics: line 7: '20261332' is not a date (month must be in 1..12)"
        ),
        ("scheduler:calendar", "create", "h", "--ics", "missing.ics"): (
            "error: invalid ics: missing.ics: No such file or directory"
        ),
        ("scheduler:calendar", "create", "h"): (
            "error: invalid calendar: no days given (dates, ranges A..B, weekdays or --ics FILE)"
        ),
        ("scheduler:calendar", "show", "nope"): (
            "error: unknown calendar 'nope' ('systemprompt scheduler:calendar list' lists them)"
        ),
        (*CREATE, "0 * * * *", "--exclude", "nope"): (
            "error: unknown calendar 'nope' ('systemprompt scheduler:calendar list' lists them)"
        ),
        (*CREATE, "0 * * * *", "--jitter", "2h"): (
            "error: invalid jitter: 2h is longer than the schedule's interval (1h, the shortest gap between "
            "its slots)"
        ),
        (*CREATE, "0 * * * *", "--jitter", "soon"): (
            "error: invalid jitter: 'soon': not an interval; an interval is a number and a lower-case "
            "unit s, m, h, d or w (seconds, minutes, hours, days, weeks), alone or combined: '30s', "
            "'5m', '1h30m', '1d', '1w'"
        ),
        (*CREATE, "0 9 * * *", "--schedule", "manual"): (
            "error: invalid schedule 'manual': a task with several schedules takes only cron and "
            "interval ones"
        ),
        ("scheduler:validate", "--schedule", "*/5 * * * *", "--jitter", "6m"): (
            "error: invalid jitter: 6m is longer than the schedule's interval (5m, the shortest gap "
            "between its slots)"
        ),
    }  # fmt: skip
    # Each in-process; two of them (a calendar's, validate's) through the real executable too.
    real = [args for args in cases if args[0] == "scheduler:validate" or "2026-13-01" in args]
    results = [cli.invoke(*args) for args in cases] + cli.run_many([list(args) for args in real])
    expected = [*cases.items(), *((args, cases[args]) for args in real)]
    assert len(real) == 2
    for result, (args, line) in zip(results, expected, strict=True):
        assert_one_line_error(result, 2)
        assert result.stderr_lines == [line], result.describe()
        assert result.args == args
    cli.ok("scheduler:calendar", "create", "fine", "sat")
    _refused(cli, "scheduler:calendar", "create", "fine", "sun")  # the name is taken
    assert [c["name"] for c in cli.json("scheduler:calendar", "list")] == ["fine"]
    assert cli.json("scheduler:calendar", "show", "fine")["days"]["weekdays"] == ["sat"]
    assert cli.tasks() == []
    assert [entry["action"] for entry in cli.json("scheduler:audit")] == ["calendar_create"]
    assert json.loads(cli.ok("scheduler:next", "--format", "json").stdout) == []
