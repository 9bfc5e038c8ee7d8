"""A new user's mistakes and questions, through the real CLI: input rules that were too lax or too terse,
deleted tasks in the history, "did you mean", the messages of migrate, the schema check and the planner, and
``--version``."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from test_cli_reports import record_execution
from test_cli_runner import Cli, assert_one_line_error

from scheduler.storage.schema import head_revision
from tests.support.alert_receivers import http_receiver
from tests.support.services import PG_ADMIN_URL, create_pg_database, drop_pg_database, require

ACCEPTED_INTERVALS = "'30s', '5m', '1h30m', '1d', '1w'"


@pytest.fixture
def cli(sqlite_url: str, tmp_path: Path) -> Cli:
    workdir = tmp_path / "work"
    workdir.mkdir()
    return Cli(sqlite_url, workdir)


def create_args(name: str, *options: str) -> tuple[str, ...]:
    return ("scheduler:create", "--name", name, "--command", "test:echo", *options)


# ------------------------------------------------------------------------------------------- input rules


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        ("*/61 * * * *", "minute field (0-59): a step can be 1-60"),
        ("0 */25 * * *", "hour field (0-23): a step can be 1-24"),
        ("0 0 */32 * *", "day-of-month field (1-31): a step can be 1-31"),
        ("0 0 1-20/40 * *", "day-of-month field (1-31): a step can be 1-31"),
        ("0 0 * */13 *", "month field (1-12): a step can be 1-12"),
        ("0 0 * * */9", "day-of-week field (0-7): a step can be 1-8"),
    ],
)
def test_a_step_beyond_the_fields_range_is_refused_not_read_as_hourly(
    cli: Cli, schedule: str, field: str
) -> None:
    for args in (
        create_args("steps", "--schedule", schedule),
        ("scheduler:validate", "--schedule", schedule),
    ):
        refused = cli.invoke(*args)
        assert_one_line_error(refused, 2)
        assert field in refused.stderr
    assert cli.tasks() == []


@pytest.mark.parametrize(
    ("schedule", "hint"),
    [
        ("5M", "unknown unit 'M' (minutes are '5m'; months need a cron expression"),
        ("5 mins", "unknown unit 'mins' (write '5m')"),
    ],
)
def test_interval_mistakes_are_refused_with_the_accepted_forms(cli: Cli, schedule: str, hint: str) -> None:
    refused = cli.invoke(*create_args("every-five", "--schedule", schedule))
    assert_one_line_error(refused, 2)
    assert hint in refused.stderr and ACCEPTED_INTERVALS in refused.stderr
    assert cli.tasks() == []


def test_a_legacy_zone_is_accepted_with_a_warning_naming_the_likely_zone(cli: Cli) -> None:
    warning = "warning: time zone 'EST' has no daylight saving (UTC-05:00 all year); for US Eastern time use "
    created = cli.invoke(*create_args("eastern", "--schedule", "0 2 * * *", "--timezone", "EST"))
    assert created.code == 0, created.describe()
    assert created.stderr_lines == [warning + "'America/New_York'"]
    updated = cli.invoke("scheduler:update", "--id", "eastern", "--timezone", "EST5EDT", "--format", "json")
    assert updated.code == 0 and "for US Eastern time use 'America/New_York'" in updated.stderr
    checked = cli.invoke("scheduler:validate", "--schedule", "0 2 * * *", "--timezone", "EST")
    assert checked.code == 0 and checked.stderr_lines == [warning + "'America/New_York'"]
    fine = cli.invoke(*create_args("new-york", "--schedule", "0 2 * * *", "--timezone", "America/New_York"))
    assert fine.code == 0 and fine.stderr == ""


def test_validate_refuses_an_instant_in_the_past_as_create_does(cli: Cli) -> None:
    past = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    validated = cli.invoke("scheduler:validate", "--schedule", past)
    created = cli.invoke(*create_args("yesterday", "--schedule", past))
    assert_one_line_error(validated, 2)
    assert_one_line_error(created, 2)
    assert validated.stderr == created.stderr
    assert "more than 60 seconds in the past" in validated.stderr
    soon = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert cli.json("scheduler:validate", "--schedule", soon)["fire_times"] == [soon]


# ------------------------------------------------------------------------------------ task references


def test_history_finds_the_executions_of_a_deleted_task_by_its_name_or_id(cli: Cli, sqlite_url: str) -> None:
    gone = cli.create("gone-task", "--schedule", "5m")
    kept = cli.create("kept-task", "--schedule", "5m")
    ran = record_execution(sqlite_url, gone)
    record_execution(sqlite_url, kept)
    cli.ok("scheduler:delete", "--id", "gone-task", "--confirm")

    by_name = cli.json("scheduler:history", "--task", "gone-task")
    assert [(e["id"], e["task_id"], e["task_name"]) for e in by_name] == [(ran, None, "gone-task")]
    assert [e["id"] for e in cli.json("scheduler:history", "--task", str(gone["id"]))] == [ran]
    assert "gone-task" in cli.ok("scheduler:history", "--task", "gone-task").stdout
    assert_one_line_error(cli.invoke("scheduler:history", "--task", "never-existed"), 3)


def test_an_unknown_task_name_suggests_the_close_ones(cli: Cli) -> None:
    cli.create("nightly-backup")
    cli.create("weekly-cleanup")
    for args in (
        ("scheduler:update", "--id", "nightly-bakup", "--retries", "1"),
        ("scheduler:history", "--task", "nightly-bakup"),
        ("scheduler:pause", "--id", "nightly-bakup"),
    ):
        missing = cli.invoke(*args)
        assert_one_line_error(missing, 3)
        assert missing.stderr_lines[0].endswith("did you mean 'nightly-backup'?"), missing.describe()
    far = cli.invoke("scheduler:stats", "--task", "zzz")
    assert_one_line_error(far, 3)
    assert "did you mean" not in far.stderr


# --------------------------------------------------------------------------------------------- messages


def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    result = Cli(None, tmp_path).run("--version")
    assert result.code == 0, result.describe()
    assert (
        result.stdout.strip() == f"systemprompt (systemprompt-scheduler) {version('systemprompt-scheduler')}"
    )


def test_migrate_says_what_it_did_in_words(tmp_path: Path) -> None:
    cli = Cli(f"sqlite:///{tmp_path / 'fresh.db'}", tmp_path)
    head = head_revision()
    first, second = cli.ok("scheduler:migrate").stdout, cli.ok("scheduler:migrate").stdout
    assert first.rstrip().endswith(f": created the scheduler tables (schema revision {head})")
    assert second.rstrip().endswith(f": the schema is already at revision {head}, the newest: nothing to do")
    assert " - " not in first and "->" not in first


@pytest.mark.postgres
def test_a_database_without_tables_is_named_as_such(tmp_path: Path) -> None:
    require("PostgreSQL", PG_ADMIN_URL, 5432)
    name, url = create_pg_database(None)
    try:
        refused = Cli(url, tmp_path).invoke("scheduler:list")
        assert_one_line_error(refused, 69)
        assert refused.stderr_lines == [
            "error: the database has no scheduler tables yet (a new database?): run 'systemprompt "
            "scheduler:migrate' to create them"
        ]
    finally:
        drop_pg_database(name)


def test_a_schema_newer_than_this_version_says_so_in_every_verb_and_migrate(tmp_path: Path) -> None:
    database = tmp_path / "newer.db"
    cli = Cli(f"sqlite:///{database}", tmp_path)
    cli.ok("scheduler:migrate")
    engine = create_engine(f"sqlite:///{database}")
    with engine.begin() as connection:  # what a later release's migration leaves behind
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    newer = (
        f"error: the database schema is at revision 9999, newer than this version knows (it needs "
        f"{head_revision()}): a newer systemprompt-scheduler migrated it; "
        "run that version or upgrade this one"
    )
    for argv in (("scheduler:list",), ("scheduler:migrate",)):
        refused = cli.run(*argv)
        assert_one_line_error(refused, 69)
        assert refused.stderr_lines == [newer], refused.describe()
    health = cli.run("scheduler:health", "--check", "database")
    assert health.code == 1, health.describe()
    assert "schema 9999 is newer than this version (it needs" in health.stderr, health.describe()
    assert "migrate" not in health.stderr, health.describe()


def test_planner_once_prints_a_sentence_not_a_repr(cli: Cli) -> None:
    cli.create("due-now", "--schedule", "now")
    said = cli.ok("scheduler:planner", "--once").stdout.strip()
    assert said.startswith("one tick as the leader ("), said
    assert "1 due task(s)" in said and "1 execution(s) created" in said
    assert "True" not in said and "None" not in said and "duration_s" not in said


# --------------------------------------------------------------------------------------------- --format

DOCS_CLI = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def verbs() -> dict[str, Any]:
    """Every verb (its ``scheduler:`` spelling) by its bare name."""
    from cli.main import PREFIX, cli

    return {
        name.removeprefix(PREFIX): command
        for name, command in cli.commands.items()
        if name.startswith(PREFIX)
    }


def verbs_without_format() -> set[str]:
    return {
        name
        for name, command in verbs().items()
        if not any("--format" in getattr(param, "opts", ()) for param in command.params)
    }


def test_the_docs_name_exactly_the_verbs_without_format_json() -> None:
    convention = (
        DOCS_CLI.read_text(encoding="utf-8").split("- **`--format table|json`**", 1)[1].split("\n- ")[0]
    )
    documented = set(re.findall(r"`(\w+)`", convention.split("all but", 1)[1].split(";", 1)[0]))
    assert documented == verbs_without_format() == {"worker", "serve", "flower", "web", "events"}


def test_every_verb_that_prints_data_prints_json(cli: Cli, sqlite_url: str) -> None:
    task = cli.create("data", "--schedule", "5m")
    execution = record_execution(sqlite_url, task)
    (cli.workdir / "tasks.yaml").write_text("source: s\ntasks: []\n", encoding="utf-8")
    invocations = [
        ("scheduler:list",), ("scheduler:update", "--id", "data", "--retries", "1"),
        ("scheduler:pause", "--id", "data"), ("scheduler:resume", "--id", "data"),
        ("scheduler:history",), ("scheduler:logs", "--execution", str(execution)), ("scheduler:stats",),
        ("scheduler:audit",), ("scheduler:next",), ("scheduler:validate", "--schedule", "5m"),
        ("scheduler:commands",), ("scheduler:config",), ("scheduler:migrate",),
        ("scheduler:health", "--check", "database"), ("scheduler:cleanup",), ("scheduler:planner", "--once"),
        ("scheduler:alerts",), ("scheduler:silence", "--id", "data", "--for", "1h"), ("scheduler:silences",),
        ("scheduler:alert-test", "--channel", "hook"),
        ("scheduler:run", "--id", "data"), ("scheduler:skip", "--id", "data"),
        ("scheduler:backfill", "--id", "data", "--from", "2026-01-01T00:00Z", "--to", "2026-01-02T00:00Z",
         "--dry-run"),
        ("scheduler:backfills",), ("scheduler:plan", "-f", "tasks.yaml"),
        ("scheduler:apply", "-f", "tasks.yaml"), ("scheduler:export",),
        ("scheduler:versions", "--id", "data"), ("scheduler:diff", "--id", "data"),
        ("scheduler:rollback", "--id", "data", "--to", "1"),
        ("scheduler:delete", "--id", "data", "--confirm"), ("scheduler:calendar", "list"),
    ]  # fmt: skip
    covered = {args[0].removeprefix("scheduler:") for args in invocations} | {"create"}
    assert covered | verbs_without_format() == set(verbs())
    with http_receiver() as hook:
        cli.own_env["SCHEDULER_ALERT_CHANNELS"] = json.dumps({"hook": {"type": "webhook", "url": hook.url}})
        for args in invocations:
            result = cli.invoke(*args, "--format", "json")
            assert result.code == 0, result.describe()
            json.loads(result.stdout)
