"""``systemprompt`` reading and admin verbs end to end: validate, next, history, logs, stats, audit, commands,
config, migrate.

Each verb tested here runs as the real executable at least once; the other calls run the same click
application in-process (``Cli.invoke``: same error policy and exit codes, no process start each)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from test_cli_runner import Cli, assert_one_line_error

from scheduler.storage.db import make_engine
from scheduler.storage.schema import current_revision, head_revision, upgrade
from scheduler.storage.tables import executions, logs
from tests.support.services import PG_ADMIN_URL, create_pg_database, drop_pg_database, require


@pytest.fixture
def cli(sqlite_url: str, tmp_path: Path) -> Cli:
    workdir = tmp_path / "work"
    workdir.mkdir()
    return Cli(sqlite_url, workdir)


def record_execution(database_url: str, task: dict[str, Any], **columns: Any) -> int:
    """Insert an execution row as a worker would have left it; return its id."""
    values = {
        "task_id": task["id"], "task_name": task["name"], "command": task["command"], "trigger": "schedule",
        "status": "completed", "attempt": 1, "max_attempts": 4, "queue": "default",
        "scheduled_for": datetime(2026, 1, 1, tzinfo=UTC), **columns,
    }  # fmt: skip
    engine = make_engine(database_url)
    try:
        with engine.begin() as connection:
            execution_id: int = connection.execute(
                insert(executions).values(**values).returning(executions.c.id)
            ).scalar_one()
    finally:
        engine.dispose()
    return execution_id


def record_logs(database_url: str, execution_id: int, *lines: tuple[str, str]) -> None:
    engine = make_engine(database_url)
    base = datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    try:
        with engine.begin() as connection:
            for n, (level, message) in enumerate(lines):
                connection.execute(
                    insert(logs).values(
                        execution_id=execution_id, attempt=1, level=level, message=message,
                        at=base + timedelta(seconds=n),
                    )
                )  # fmt: skip
    finally:
        engine.dispose()


def test_validate_shows_fire_times_across_the_spring_forward_gap(tmp_path: Path) -> None:
    cli = Cli(None, tmp_path)  # validate needs no database: none is created
    args = ["scheduler:validate", "--schedule", "0 2 * * *", "--timezone", "Europe/Berlin",
            "--from", "2026-03-28T00:00:00Z", "--count", "3"]  # fmt: skip
    as_json = cli.run(*args, "--format", "json")
    as_table, bad = cli.invoke(*args), cli.invoke("scheduler:validate", "--schedule", "5x")
    assert as_json.json() == {
        "schedule": "0 2 * * *",
        "kind": "cron",
        "timezone": "Europe/Berlin",
        "from": "2026-03-28T00:00:00Z",
        # 02:00 CET; the 29th has no 02:00: the first instant after the gap (03:00 CEST); 02:00 CEST
        "fire_times": ["2026-03-28T01:00:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:00:00Z"],
        "slots": [
            {"at": at, "schedule": "0 2 * * *", "excluded": None}
            for at in ("2026-03-28T01:00:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:00:00Z")
        ],
    }
    assert "2026-03-29 01:00:00 UTC" in as_table.stdout and "2026-03-29 03:00:00 CEST" in as_table.stdout
    assert_one_line_error(bad, 2)
    assert not (tmp_path / ".scheduler").exists()


def test_next_lists_the_soonest_fire_times_of_active_tasks(cli: Cli) -> None:
    every_day = cli.create("daily", "--schedule", "0 6 * * *")
    cli.create("never", "--schedule", "manual")
    runs = cli.json("scheduler:next", "--from", "2030-05-01T00:00:00Z", "--count", "3", real=True)
    assert runs == [
        {
            "task_id": every_day["id"],
            "task_name": "daily",
            "at": f"2030-05-0{day}T06:00:00Z",
            "slot": f"2030-05-0{day}T06:00:00Z",  # no jitter: the slot itself
            "schedule": "0 6 * * *",
            "excluded": None,
            "skipped": None,
        }
        for day in (1, 2, 3)
    ]
    table = cli.ok("scheduler", "next", "--task", "daily", "--from", "2030-05-01T07:00", "--count", "1")
    assert "2030-05-02 06:00:00 UTC" in table.stdout


def test_history_stats_and_logs_show_recorded_executions(cli: Cli, sqlite_url: str) -> None:
    task = cli.create("worked", "--schedule", "5m")
    other = cli.create("other", "--schedule", "5m")
    start = datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    done = record_execution(
        sqlite_url, task, started_at=start, finished_at=start + timedelta(milliseconds=1500),
        duration_ms=1500, result={"ok": True},
    )  # fmt: skip
    failed = record_execution(
        sqlite_url, task, status="failed", scheduled_for=datetime(2026, 1, 1, 0, 5, tzinfo=UTC),
        started_at=start, finished_at=start, duration_ms=10, error="RuntimeError: boom",
    )  # fmt: skip
    record_execution(sqlite_url, other)
    record_logs(sqlite_url, done, ("INFO", "echo: {}"), ("WARNING", "careful [red]markup[/red]"))

    # history runs as the real executable in test_history_and_stats_on_postgresql
    executions = cli.json("scheduler:history", "--task", "worked")
    assert [(e["id"], e["status"], e["error"]) for e in executions] == [
        (failed, "failed", "RuntimeError: boom"),
        (done, "completed", None),
    ]
    assert executions[1]["duration_ms"] == 1500 and executions[1]["started_at"] == "2026-01-01T00:00:01Z"
    assert [e["id"] for e in cli.json("scheduler:history", "--status", "failed")] == [failed]
    assert len(cli.json("scheduler:history", "--limit", "1")) == 1
    table = cli.ok("scheduler:history")
    assert "RuntimeError: boom" in table.stdout and "1.5 s" in table.stdout and "1/4" in table.stdout

    stats = cli.json("scheduler:stats", "--task", "worked", real=True)
    assert (stats["task_id"], stats["total"], stats["completed"], stats["failed"]) == (task["id"], 2, 1, 1)
    assert stats["success_rate"] == pytest.approx(0.5)
    assert cli.json("scheduler:stats")["total"] == 3
    assert "50.0%" in cli.ok("scheduler:stats", "--task", "worked").stdout

    lines = cli.json("scheduler:logs", "--execution", str(done), real=True)
    assert [(line["level"], line["message"]) for line in lines] == [
        ("INFO", "echo: {}"),
        ("WARNING", "careful [red]markup[/red]"),
    ]
    assert lines[0]["at"] == "2026-01-01T00:00:01Z" and lines[0]["execution_id"] == done
    assert "careful [red]markup[/red]" in cli.ok("scheduler:logs", "--execution", str(done)).stdout
    assert "no log lines" in cli.ok("scheduler:logs", "--execution", str(failed)).stdout
    assert_one_line_error(cli.invoke("scheduler:logs", "--execution", "999999"), 3)
    assert_one_line_error(cli.invoke("scheduler:logs", "--execution", "abc"), 2)


def test_commands_lists_the_registered_commands(cli: Cli) -> None:
    commands = {c["name"]: c for c in cli.json("scheduler:commands", real=True)}
    assert {"test:echo", "test:sleep", "test:fail"} <= commands.keys()
    assert commands["test:echo"]["kind"] == "python" and commands["test:echo"]["argv"] is None
    assert "test:sleep" in cli.ok("scheduler", "commands").stdout


def test_config_shows_each_value_with_its_source_and_masks_passwords(tmp_path: Path) -> None:
    (tmp_path / "module.yaml").write_text("config:\n  tickInterval: 250\n", encoding="utf-8")
    url = "postgresql+psycopg2://sched:hunter2@db.example:5432/sched"
    cli = Cli(url, tmp_path, SCHEDULER_DEFAULT_RETRIES="7", SCHEDULER_FLOWER_BASIC_AUTH="admin:pa55")
    shown, table = cli.run("scheduler:config", "--format", "json"), cli.invoke("scheduler", "config")
    config = shown.json()
    settings = {row["name"]: row for row in config["settings"]}
    assert config["config_file"] == "module.yaml"
    assert (settings["tick_interval"]["value"], settings["tick_interval"]["source"]) == (250, "module.yaml")
    assert settings["default_retries"]["value"] == 7
    assert settings["default_retries"]["source"] == "env SCHEDULER_DEFAULT_RETRIES"
    assert settings["history_retention_days"]["source"] == "default"
    assert settings["tick_interval"]["key"] == "tickInterval"
    assert settings["tick_interval"]["env"] == "SCHEDULER_TICK_INTERVAL"
    assert config["database_url"] == "postgresql+psycopg2://sched:***@db.example:5432/sched"
    assert settings["flower_basic_auth"]["value"] == "admin:***"
    for output in (shown.stdout, table.stdout):
        assert "hunter2" not in output and "pa55" not in output
    assert "env SCHEDULER_DEFAULT_RETRIES" in table.stdout


def test_a_bad_setting_is_one_line_and_exits_2(tmp_path: Path) -> None:
    cli = Cli(None, tmp_path, SCHEDULER_TICK_INTERVAL="fast")
    result = cli.invoke("scheduler:list")
    assert_one_line_error(result, 2)
    assert "tick_interval" in result.stderr


def test_migrate_upgrades_an_empty_sqlite_database_once(tmp_path: Path) -> None:
    cli = Cli(f"sqlite:///{tmp_path / 'fresh.db'}", tmp_path)
    first = cli.json("scheduler:migrate", real=True)
    assert (first["from"], first["to"], first["changed"]) == (None, head_revision(), True)
    second = cli.ok("scheduler:migrate")
    assert f"already at revision {head_revision()}" in second.stdout


def at_first_revision(url: str) -> None:
    """Bring the empty database at ``url`` to revision 0001 only: what an older release left behind."""
    engine = make_engine(url)
    try:
        upgrade(engine, "0001")
        assert current_revision(engine) == "0001" != head_revision()
    finally:
        engine.dispose()


def revision_of(url: str) -> str | None:
    engine = make_engine(url)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


def test_a_read_verb_upgrades_an_older_embedded_schema_before_reading(tmp_path: Path) -> None:
    # The schema check is one SELECT of the version row; when it differs, the embedded database is upgraded.
    url = f"sqlite:///{tmp_path / 'older.db'}"
    at_first_revision(url)
    listed = Cli(url, tmp_path).invoke("scheduler:list", "--format", "json")
    assert listed.code == 0, listed.describe()
    assert json.loads(listed.stdout) == []
    assert revision_of(url) == head_revision()


@pytest.mark.postgres
def test_a_read_verb_refuses_an_older_postgresql_schema_and_changes_nothing(tmp_path: Path) -> None:
    require("PostgreSQL", PG_ADMIN_URL, 5432)
    name, url = create_pg_database(None)
    try:
        at_first_revision(url)
        cli = Cli(url, tmp_path)
        for verb in ("scheduler:list", "scheduler:history", "scheduler:next"):
            refused = cli.run(verb) if verb == "scheduler:list" else cli.invoke(verb)
            assert_one_line_error(refused, 69)
            assert refused.stderr_lines == [
                f"error: the database schema is at revision 0001, this version needs {head_revision()}: "
                "run 'systemprompt scheduler:migrate' to upgrade it"
            ], refused.describe()
        assert revision_of(url) == "0001"
    finally:
        drop_pg_database(name)


@pytest.mark.postgres
def test_migrate_brings_an_empty_postgresql_database_to_head_and_then_list_works(tmp_path: Path) -> None:
    require("PostgreSQL", PG_ADMIN_URL, 5432)
    name, url = create_pg_database(None)
    try:
        cli = Cli(url, tmp_path)
        outdated = cli.invoke("scheduler:list")
        assert_one_line_error(outdated, 69)
        assert "scheduler:migrate" in outdated.stderr  # the message names the command to run
        migrated = cli.json("scheduler:migrate", real=True)
        assert (migrated["from"], migrated["to"]) == (None, head_revision())
        assert cli.tasks() == []
    finally:
        drop_pg_database(name)


@pytest.mark.postgres
def test_history_and_stats_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    cli = Cli(pg_url, tmp_path)
    task = cli.create("pg-worked", "--schedule", "1h")
    execution = record_execution(pg_url, task, duration_ms=200, finished_at=datetime.now(UTC))
    record_logs(pg_url, execution, ("INFO", "hello"))
    history, stats, logs = (
        cli.json("scheduler:history", real=True),
        cli.json("scheduler:stats", "--task", "pg-worked"),
        cli.json("scheduler:logs", "--execution", str(execution)),
    )
    assert [e["id"] for e in history] == [execution]
    assert stats["completed"] == 1
    assert [line["message"] for line in logs] == ["hello"]
    assert json.loads(json.dumps(history))[0]["scheduled_for"] == "2026-01-01T00:00:00Z"
