"""Backfills, per-run data, timed pauses and skips through the real ``systemprompt`` executable: what a person
reads in a table, what a script reads in JSON, and one-line errors (exit 2, nothing stored) for bad input.

Each verb of this module (backfill, backfills with --follow, pause --until, skip, planner --once, run --data)
runs as the real executable at least once on each database; the other calls of a test (set-up, read-backs,
most of the bad input) run the same click application in-process (``Cli.invoke``), which has the same error
policy and exit codes without a process start each."""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_cli_runner import Cli, assert_one_line_error

from tests.support.processes import wait_for
from tests.support.serving import clean_env, serving
from tests.support.serving import cli as run_cli

FALL_BACK = (
    "--from",
    "2026-11-01T04:00:00Z",
    "--to",
    "2026-11-01T08:00:00Z",
)  # New York, EDT -> EST at 06:00Z


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def cli(request: pytest.FixtureRequest, tmp_path: Path) -> Cli:
    url = None if request.param == "sqlite" else request.getfixturevalue("pg_url")
    cli = Cli(url, tmp_path)
    cli.create("ny", "--schedule", "30 * * * *", "--timezone", "America/New_York")
    return cli


def test_the_dry_run_lists_each_slot_of_a_fall_back_night_once_with_its_dst_notes(cli: Cli) -> None:
    table = cli.run("scheduler:backfill", "--id", "ny", *FALL_BACK, "--dry-run")
    slots = cli.json("scheduler:backfill", "--id", "ny", *FALL_BACK, "--dry-run")

    assert table.code == 0, table.describe()
    assert [s["at"] for s in slots] == [f"2026-11-01T0{h}:30:00Z" for h in (4, 5, 6, 7)]
    assert [s["local"] for s in slots] == [
        "2026-11-01 00:30:00 EDT (-04:00)", "2026-11-01 01:30:00 EDT (-04:00)",
        "2026-11-01 01:30:00 EST (-05:00)", "2026-11-01 02:30:00 EST (-05:00)",
    ]  # fmt: skip
    assert slots[1]["dst_note"] == "first of two 01:30 (clocks go back)"
    assert slots[2]["dst_note"].startswith("second of two 01:30")
    assert {s["execution_id"] for s in slots} == {None}
    assert "4 slot(s): 4 would run, 0 have an execution already" in table.stdout
    assert "second of two 01:30 (clocks go back); clock change before this run: EDT -> EST" in table.stdout
    assert cli.json("scheduler:backfills") == []  # a dry run stores nothing


def test_a_backfill_is_created_once_listed_and_cancelled(cli: Cli) -> None:
    first = cli.json(
        "scheduler:backfill", "--id", "ny", *FALL_BACK, "--max-parallel", "2", "--data", '{"k": 1}', real=True
    )
    again = cli.json("scheduler:backfill", "--id", "ny", *FALL_BACK)
    preview = cli.json("scheduler:backfill", "--id", "ny", *FALL_BACK, "--dry-run")

    assert (first["status"], first["slots"], first["created"], first["progress"]) == (
        "running",
        4,
        4,
        {"waiting": 4},
    )
    assert (again["status"], again["created"]) == ("completed", 0)
    assert [s["execution_status"] for s in preview] == ["waiting"] * 4
    rows = cli.json("scheduler:history")
    assert {(r["trigger"], r["status"], r["backfill_id"]) for r in rows} == {
        ("backfill", "waiting", first["id"])
    }
    listed = cli.invoke("scheduler:backfills")
    assert listed.code == 0 and "0/4 done, 4 waiting" in listed.stdout, listed.describe()

    cancelled = cli.json("scheduler:backfills", "--cancel", str(first["id"]))
    follow = cli.run("scheduler:backfills", "--follow", str(first["id"]))

    assert cancelled["status"] == "cancelled" and cancelled["progress"] == {"cancelled": 4}
    assert follow.code == 1 and "cancelled, 4/4 done (4 cancelled)" in follow.stdout, follow.describe()
    assert [e["action"] for e in cli.json("scheduler:audit", "--task", "ny")][:3] == [
        "cancel-backfill", "backfill", "backfill",
    ]  # fmt: skip


BAD_INPUT = [
    (
        ("scheduler:backfill", "--id", "ny", "--from", "2026-11-02T00:00Z", "--to", "2026-11-01T00:00Z"),
        "reversed",
    ),
    (
        ("scheduler:backfill", "--id", "ny", "--from", "2026-11-01T00:00Z", "--to", "2999-01-01T00:00Z"),
        "future",
    ),
    (
        ("scheduler:backfill", "--id", "ny", "--from", "2020-01-01T00:00Z", "--to", "2026-01-01T00:00Z"),
        "--force",
    ),
    (("scheduler:backfill", "--id", "ny", *FALL_BACK, "--data", "[1, 2]"), "JSON object"),
    (("scheduler:backfill", "--id", "ny", *FALL_BACK, "--data", json.dumps({"x": "y" * 70_000})), "bytes"),
    (("scheduler:backfill", "--id", "ny", *FALL_BACK, "--max-parallel", "0"), "max_parallel"),
    (("scheduler:run", "--id", "ny", "--data", '"text"'), "JSON object"),
    (("scheduler:run", "--id", "ny", "--data", json.dumps({"x": "y" * 70_000})), "bytes"),
    (("scheduler:pause", "--id", "ny", "--until", "2020-01-01T00:00:00Z"), "not in the future"),
    (("scheduler:skip", "--id", "ny", "--count", "0"), "count"),
]


@pytest.mark.parametrize(("args", "words"), BAD_INPUT, ids=[words for _, words in BAD_INPUT])
def test_bad_input_is_one_line_exit_2_and_nothing_is_stored(
    cli: Cli, args: tuple[str, ...], words: str
) -> None:
    # In-process but for the 70 kB arguments: those go through a real process start (exec's argument list).
    result = cli.run(*args) if words == "bytes" else cli.invoke(*args)

    assert_one_line_error(result, 2)
    assert words in result.stderr_lines[0], result.describe()
    assert cli.json("scheduler:backfills") == [] and cli.json("scheduler:history") == []
    (task,) = cli.tasks()
    assert (task["status"], task["paused_until"]) == ("active", None)


def test_a_timed_pause_and_skips_show_in_list_and_history(cli: Cli) -> None:
    paused = cli.json(
        "scheduler:pause", "--id", "ny", "--until", "2999-01-01T00:00:00Z", "--note", "freeze", real=True
    )
    listed = cli.invoke("scheduler:list")
    cli.ok("scheduler:resume", "--id", "ny")
    skipped = cli.json("scheduler:skip", "--id", "ny", "--count", "2", "--note", "holiday", real=True)
    shown = cli.invoke("scheduler:history", "--task", "ny")

    assert paused[0]["paused_until"] == "2999-01-01T00:00:00Z" and paused[0]["status_reason"] == "freeze"
    assert "paused until 2999-01-01 00:00:00 UTC (freeze)" in listed.stdout, listed.describe()
    assert [(s["status"], s["reason"]) for s in skipped] == [("skipped", "skipped_by_user")] * 2
    assert skipped[0]["scheduled_for"] < skipped[1]["scheduled_for"]
    assert shown.stdout.count("skipped (skipped_by_user)") == 2, shown.describe()
    assert shown.stdout.count(": holiday") == 2, shown.describe()
    upcoming = cli.json("scheduler:next", "--task", "ny", "--count", "3")
    assert (
        skipped[0]["scheduled_for"] == upcoming[0]["at"]
    )  # the slot stays in the schedule; the planner skips it


def test_next_marks_the_slots_a_user_skipped_with_who_and_why(cli: Cli) -> None:
    skipped = cli.json("scheduler:skip", "--id", "ny", "--count", "2", "--note", "holiday")
    upcoming = cli.json("scheduler:next", "--task", "ny", "--count", "3")
    table = cli.invoke("scheduler:next", "--task", "ny", "--count", "3")

    assert [run["slot"] for run in upcoming[:2]] == [s["scheduled_for"] for s in skipped]
    assert [run["skipped"] for run in upcoming] == [skipped[0]["error"], skipped[1]["error"], None]
    assert skipped[0]["error"].endswith(": holiday"), skipped[0]
    assert table.stdout.count("holiday") == 2, table.describe()


@pytest.mark.timeout(180)
def test_serve_runs_a_backfill_and_a_run_with_its_own_data(tmp_path: Path) -> None:
    def real(*args: str) -> Any:
        result = run_cli(tmp_path, *args, "--format", "json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    cli = Cli(None, tmp_path)  # in-process, on the same embedded database and broker as serve below
    cli.create("berlin", "--schedule", "30 * * * *", "--timezone", "Europe/Berlin", "--overlap", "allow",
               "--data", '{"a": 1, "b": 2}')  # fmt: skip
    # A 200 ms tick (serve's own setting, default 1 s): the backfill's second pair of slots is released by the
    # tick after the first pair ended, so the follow below waits for fewer idle ticks.
    env = clean_env(SCHEDULER_TICK_INTERVAL="200")
    with serving(tmp_path, env=env, wait_ready=True) as process:
        run = real(
            "scheduler:run",
            "--id",
            "berlin",
            "--wait",
            "--timeout",
            "60",
            "--data",
            '{"b": 3, "api_token": "t0p"}',
        )
        assert run["status"] == "completed" and run["result"] == {"a": 1, "b": 3, "api_token": "t0p"}
        assert run["data"] == {"b": 3, "api_token": "***"}
        logs = cli.json("scheduler:logs", "--execution", str(run["id"]))
        assert any(
            "per-run data" in line["message"] and '"api_token": "***"' in line["message"] for line in logs
        )
        assert not any("t0p" in line["message"] for line in logs)

        night = ("--from", "2026-10-24T23:00:00Z", "--to", "2026-10-25T03:00:00Z")
        backfill = cli.json(
            "scheduler:backfill", "--id", "berlin", *night, "--max-parallel", "2", "--data", '{"c": 4}'
        )
        follow = run_cli(tmp_path, "scheduler:backfills", "--follow", str(backfill["id"]), timeout_s=120)
        assert follow.returncode == 0, follow.stdout + follow.stderr
        assert (
            follow.stdout.splitlines()[-1]
            == f"backfill {backfill['id']} (berlin): completed, 4/4 done (4 completed)"
        )
        # Serve's warm shutdown (seconds) runs while the rows are read; its exit code is checked last.
        process.send_signal(signal.SIGTERM)
        rows = wait_for(
            lambda: [r for r in cli.json("scheduler:history") if r["trigger"] == "backfill"],
            10,
            "no backfill rows",
        )
        assert sorted(r["scheduled_for"] for r in rows) == [
            "2026-10-24T23:30:00Z", "2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z", "2026-10-25T02:30:00Z",
        ]  # fmt: skip
        assert {r["status"] for r in rows} == {"completed"}
        assert all(r["result"] == {"a": 1, "b": 2, "c": 4} for r in rows)
        assert process.wait(30) == 0


def test_the_planner_lifts_a_timed_pause_at_its_end_and_audits_it(cli: Cli) -> None:
    cli.json("scheduler:pause", "--id", "ny", "--until", "2999-01-01T00:00:00Z", "--note", "deploy")
    early = cli.json("scheduler:planner", "--once")  # a tick before the pause's end leaves the task paused
    assert early["resumed"] == 0 and cli.tasks()[0]["status"] == "paused"

    # The pause is cut short to end 1.5 s from now (in-process: no process start before it is stored); the
    # tick after its end is the real executable.
    until = datetime.now(UTC) + timedelta(seconds=1.5)
    cli.json("scheduler:pause", "--id", "ny", "--until", until.isoformat(), "--note", "deploy")
    wait_for(lambda: datetime.now(UTC) > until + timedelta(milliseconds=200), 10, "the pause did not end")
    tick = cli.json("scheduler:planner", "--once", real=True)
    said = cli.ok("scheduler:planner", "--once").stdout

    (task,) = cli.tasks()
    assert tick["resumed"] == 1 and "resumed after a timed pause" not in said  # only the tick that did it
    assert (task["status"], task["paused_until"], task["status_reason"]) == ("active", None, None)
    assert task["next_run_at"] >= until.isoformat().replace("+00:00", "Z")  # the first slot after the pause
    entry = cli.json("scheduler:audit", "--task", "ny")[0]
    assert (entry["action"], entry["actor"]) == ("resume", "planner")
    assert entry["before"]["status_reason"] == "deploy" and entry["after"]["status"] == "active"
