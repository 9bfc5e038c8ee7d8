"""`systemprompt` task verbs end to end, as a real subprocess: create, list, update, delete, pause, resume.

Each verb runs as the real executable at least once; the other calls run the same click application
in-process (``Cli.invoke``: same error policy and exit codes, no process start each)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from test_cli_runner import Cli, assert_one_line_error


@pytest.fixture
def cli(sqlite_url: str, tmp_path: Path) -> Cli:
    workdir = tmp_path / "work"
    workdir.mkdir()
    return Cli(sqlite_url, workdir, SCHEDULER_ACTOR="e2e-tester")


def test_create_prints_the_task_and_list_shows_it(cli: Cli) -> None:
    task = cli.create(
        "nightly-backup",
        "--schedule", "0 2 * * *", "--timezone", "Europe/Berlin", "--data", '{"type": "full"}',
        "--retries", "5", "--retry-delay", "1000", "--timeout", "60000", "--overlap", "forbid",
        "--misfire", "skip", "--misfire-grace", "30000", "--auto-pause", "3", "--queue", "backups",
        "--start", "2030-01-01T00:00:00", "--end", "2031-01-01T00:00:00+01:00", "--max-runs", "10",
        real=True,
    )  # fmt: skip
    assert task["name"] == "nightly-backup" and task["command"] == "test:echo"
    assert (task["schedule"], task["schedule_kind"], task["timezone"]) == (
        "0 2 * * *",
        "cron",
        "Europe/Berlin",
    )
    assert task["data"] == {"type": "full"}
    assert (task["retries"], task["retry_delay_ms"], task["timeout_ms"]) == (5, 1000, 60000)
    assert (task["overlap_policy"], task["misfire_policy"], task["misfire_grace_ms"]) == (
        "forbid",
        "skip",
        30000,
    )
    assert (task["auto_pause_after"], task["queue"], task["max_runs"]) == (3, "backups", 10)
    assert task["start_at"] == "2030-01-01T00:00:00Z"  # no offset means UTC
    assert task["end_at"] == "2030-12-31T23:00:00Z"
    assert task["next_run_at"] == "2030-01-01T01:00:00Z"  # 02:00 in Berlin (CET) on the first allowed day
    assert task["status"] == "active"

    listed = cli.tasks()
    assert [t["id"] for t in listed] == [task["id"]]
    assert listed[0] == {
        **task,
        "last_outcome": None,
    }  # the task object, and how its last run ended: none yet
    table = cli.ok("scheduler:list", real=True)
    assert "nightly-backup" in table.stdout and "2030-01-01 01:00:00 UTC" in table.stdout
    by_subgroup = cli.ok("scheduler", "list", "--format", "json", real=True)
    assert json.loads(by_subgroup.stdout) == listed
    table_create = cli.ok("scheduler:create", "--name", "manual-one", "--command", "test:echo")
    assert "manual-one" in table_create.stdout and "manual" in table_create.stdout
    assert [t["name"] for t in cli.json("scheduler:list", "--status", "active")] == [
        "nightly-backup",
        "manual-one",
    ]


def test_update_changes_only_the_given_fields_and_clear_unsets(cli: Cli) -> None:
    task = cli.create("report", "--schedule", "5m", "--end", "2100-01-01T00:00:00Z", "--max-runs", "7")
    updated = cli.json(
        "scheduler:update",
        "--id",
        "report",
        "--retries",
        "9",
        "--clear",
        "end",
        "--name",
        "report2",
        real=True,
    )
    assert (updated["id"], updated["name"], updated["retries"]) == (task["id"], "report2", 9)
    assert updated["end_at"] is None and updated["max_runs"] == 7
    assert updated["schedule"] == "5m" and updated["command"] == task["command"]
    by_id = cli.json("scheduler", "update", "--id", str(task["id"]), "--schedule", "@hourly")
    assert (by_id["schedule"], by_id["schedule_kind"]) == ("@hourly", "cron")
    nothing = cli.invoke("scheduler:update", "--id", "report2")
    assert_one_line_error(nothing, 2)


def test_every_bad_input_exits_2_or_3_with_one_line_and_changes_nothing(cli: Cli) -> None:
    cli.create("taken", "--schedule", "@daily")
    before_tasks = cli.tasks()
    before_audit = cli.json("scheduler:audit")

    def create(*options: str, name: str = "fresh", command: str = "test:echo") -> list[str]:
        return ["scheduler:create", "--name", name, "--command", command, *options]

    big = json.dumps({"blob": "x" * (64 * 1024)})
    cases: list[tuple[str, list[str], int]] = [
        *[(f"schedule {s!r}", create("--schedule", s), 2)
          for s in ("61 * * * *", "5x", "", "@fortnightly", "0 0 30 2 *", "*/0 * * * *")],
        ("unknown time zone", create("--schedule", "@daily", "--timezone", "Mars/Olympus"), 2),
        ("data not JSON", create("--data", "{not json"), 2),
        ("data not an object", create("--data", "[1,2]"), 2),
        ("data over 64 KiB", create("--data", big), 2),
        ("empty name", create(name=""), 2),
        ("name over 200 characters", create(name="n" * 201), 2),
        ("name with a control character", create(name="bad\x07name"), 2),
        ("name taken", create("--schedule", "5m", name="taken"), 2),
        ("shell line as command", create(command="rm -rf /"), 2),
        ("unknown command", create(command="backup:nope"), 2),
        ("negative retries", create("--retries", "-1"), 2),
        ("zero timeout", create("--timeout", "0"), 2),
        ("start not a time", create("--start", "next tuesday"), 2),
        ("end before start", create("--start", "2030-01-02", "--end", "2030-01-01"), 2),
        ("bad overlap policy", create("--overlap", "sometimes"), 2),
        ("update bad schedule", ["scheduler:update", "--id", "taken", "--schedule", "61 * * * *"], 2),
        ("update unknown id", ["scheduler:update", "--id", "nope", "--retries", "1"], 3),
        ("update unknown numeric id", ["scheduler:update", "--id", "99999", "--retries", "1"], 3),
        ("delete unknown id", ["scheduler:delete", "--id", "nope", "--confirm"], 3),
        ("pause unknown id", ["scheduler:pause", "--id", "nope"], 3),
        ("resume unknown id", ["scheduler:resume", "--id", "nope"], 3),
        ("history of unknown task", ["scheduler:history", "--task", "nope"], 3),
    ]  # fmt: skip
    results = [cli.invoke(*argv) for _label, argv, _code in cases]
    real = ["schedule '61 * * * *'", "data not JSON", "name with a control character", "update unknown id"]
    results += cli.run_many([argv for label, argv, _code in cases if label in real])
    cases += [(f"{label} (real executable)", argv, code) for label, argv, code in cases if label in real]
    failures = []
    for (label, _argv, code), result in zip(cases, results, strict=True):
        try:
            assert_one_line_error(result, code)
        except AssertionError as error:
            failures.append(f"{label}: {error}")
    assert failures == []
    by_label = {label: result for (label, _argv, _code), result in zip(cases, results, strict=True)}
    assert by_label["data not JSON"].stderr.startswith("error: invalid data: not valid JSON")
    assert cli.tasks() == before_tasks
    assert cli.json("scheduler:audit") == before_audit


def test_delete_without_confirm_and_without_a_terminal_refuses(cli: Cli) -> None:
    task = cli.create("doomed", "--schedule", "5m")
    refused = cli.run("scheduler:delete", "--id", "doomed")  # stdin is /dev/null
    assert_one_line_error(refused, 2)
    assert "--confirm" in refused.stderr
    assert [t["name"] for t in cli.tasks()] == ["doomed"]

    deleted = cli.json("scheduler:delete", "--id", str(task["id"]), "--confirm")
    assert deleted["id"] == task["id"]
    assert cli.tasks() == []
    cli.create("doomed-too")
    table = cli.ok("scheduler", "delete", "--id", "doomed-too", "--confirm")
    assert "deleted task" in table.stdout
    assert cli.tasks() == []


def test_pause_and_resume_one_task_or_all(cli: Cli) -> None:
    cli.create("a", "--schedule", "5m")
    cli.create("b", "--schedule", "@hourly")
    paused = cli.json("scheduler:pause", "--id", "a", "--reason", "maintenance window", real=True)
    assert [(t["name"], t["status"], t["status_reason"]) for t in paused] == [
        ("a", "paused", "maintenance window")
    ]
    everything = cli.json("scheduler:pause")
    assert [t["name"] for t in everything] == ["b"]  # only the tasks that were active
    assert {t["status"] for t in cli.tasks()} == {"paused"}
    assert [t["name"] for t in cli.json("scheduler:list", "--status", "paused")] == ["a", "b"]

    resumed = cli.json("scheduler:resume", "--id", "b", real=True)
    assert [(t["name"], t["status"]) for t in resumed] == [("b", "active")]
    assert resumed[0]["next_run_at"] is not None
    table = cli.ok("scheduler", "resume")
    assert "resumed 1 task(s)" in table.stdout and " a " in table.stdout
    assert {t["status"] for t in cli.tasks()} == {"active"}
    assert "no task to resume" in cli.ok("scheduler:resume").stdout


def test_a_paused_task_has_no_next_run_in_list_as_in_next(cli: Cli) -> None:
    cli.create("hourly-report", "--schedule", "@hourly")
    paused = cli.ok("scheduler:pause", "--id", "hourly-report").stdout.splitlines()
    at = paused[1].index("next run")
    assert paused[3][at : at + len("next run")].strip() == "-", "\n".join(paused)
    assert cli.json("scheduler:next", "--task", "hourly-report") == []
    (listed,) = cli.tasks()
    assert (listed["status"], listed["next_run_at"]) == ("paused", None)
    table = cli.ok("scheduler:list").stdout.splitlines()
    header, row = table[0], table[2]
    at = header.index("next run")
    assert row[at : at + len("next run")].strip() == "-", "\n".join(table)
    cli.ok("scheduler:resume", "--id", "hourly-report")
    (resumed,) = cli.tasks()
    assert (
        resumed["next_run_at"]
        == cli.json("scheduler:next", "--task", "hourly-report", "--count", "1")[0]["at"]
    )


def test_list_says_what_its_run_count_counts(cli: Cli) -> None:
    cli.create("nightly", "--schedule", "0 2 * * *")
    header = cli.ok("scheduler:list").stdout.splitlines()[0]
    assert "sched. runs" in header and "last outcome" in header
    assert " runs " not in f" {header.replace('sched. runs', '')} "
    assert "the planner dispatched (not manual ones)" in " ".join(
        cli.ok("scheduler:list", "--help").stdout.split()
    )


def test_secret_looking_data_keys_are_redacted_in_every_output(cli: Cli) -> None:
    task = cli.create(
        "with-secrets", "--data", '{"user": "ops", "api_token": "s3cr3t", "nested": {"password": "pw"}}'
    )
    assert task["data"] == {"user": "ops", "api_token": "***", "nested": {"password": "***"}}
    outputs = [
        cli.ok("scheduler:list", "--format", "json").stdout,
        cli.ok("scheduler:update", "--id", "with-secrets", "--retries", "1").stdout,
        cli.ok("scheduler:audit", "--format", "json").stdout,
        cli.ok("scheduler:audit").stdout,
    ]
    for output in outputs:
        assert "s3cr3t" not in output and '"pw"' not in output


def test_the_audit_log_names_the_actor_and_the_change(cli: Cli) -> None:
    cli.create("audited", "--schedule", "5m")
    cli.ok("scheduler:update", "--id", "audited", "--retries", "7", "--actor", "alice")
    entries = cli.json("scheduler:audit", "--task", "audited")
    assert [(e["action"], e["actor"]) for e in entries] == [("update", "alice"), ("create", "e2e-tester")]
    assert entries[0]["before"]["retries"] == 3 and entries[0]["after"]["retries"] == 7
    table = cli.ok("scheduler:audit", "--limit", "1", real=True)
    assert "alice" in table.stdout and "retries: 3 -> 7" in table.stdout


def test_an_unreachable_database_exits_69(tmp_path: Path) -> None:
    cli = Cli("postgresql+psycopg2://postgres@127.0.0.1:9/nowhere", tmp_path)
    assert_one_line_error(cli.run("scheduler:list"), 69)


@pytest.mark.postgres
def test_the_task_lifecycle_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    cli = Cli(pg_url, tmp_path, SCHEDULER_ACTOR="e2e-pg")
    task = cli.create("pg-task", "--schedule", "*/15 * * * *", "--timezone", "America/New_York", real=True)
    assert task["schedule_kind"] == "cron" and task["next_run_at"].endswith("Z")
    assert_one_line_error(cli.invoke("scheduler:create", "--name", "pg-task", "--command", "test:echo"), 2)
    assert cli.json("scheduler:pause", "--id", "pg-task")[0]["status"] == "paused"
    assert cli.json("scheduler:resume", "--id", str(task["id"]))[0]["status"] == "active"
    assert cli.json("scheduler:update", "--id", "pg-task", "--queue", "q2")["queue"] == "q2"
    assert cli.json("scheduler:delete", "--id", "pg-task", "--confirm")["id"] == task["id"]
    assert cli.json("scheduler:list") == []
    actions = [e["action"] for e in cli.json("scheduler:audit")]
    assert actions == ["delete", "update", "resume", "pause", "create"]


@pytest.mark.postgres
def test_a_role_without_write_privileges_exits_77_and_can_still_read(pg_url: str, tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    role = f"sched_ro_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        connection.execute(text(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"'))
    try:
        reader = Cli(make_url(pg_url).set(username=role).render_as_string(hide_password=False), tmp_path)
        assert reader.json("scheduler:list") == []
        denied = reader.run("scheduler:create", "--name", "nope", "--command", "test:echo")
        assert_one_line_error(denied, 77)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "{role}"'))
            connection.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()


def test_an_unexpected_error_is_one_line_exit_1_and_a_traceback_only_when_debugging(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_text("this is not a database", encoding="utf-8")
    cli = Cli(f"sqlite:///{corrupt}", tmp_path)
    result = cli.run("scheduler:list")
    assert_one_line_error(result, 1)
    assert "SCHEDULER_DEBUG=1" in result.stderr
    debugging = cli.run("scheduler:list", env={"SCHEDULER_DEBUG": "1"})
    assert debugging.code == 1 and "Traceback (most recent call last)" in debugging.stderr
