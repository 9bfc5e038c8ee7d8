"""Tasks as code end to end, through the real ``systemprompt`` executable on SQLite and PostgreSQL: plan (and
its exit codes), apply (idempotent, audited, prune by ownership, drift), export (the round trip), versions,
diff and rollback, alert rules in the file; and the bad files, each one line naming the place, nothing
applied.

Each verb of this module (plan with its exit codes, apply from a file and from stdin, export, versions, diff,
rollback) runs as the real executable at least once on each database; the other calls run the same click
application in-process (``Cli.invoke``: same error policy and exit codes, no process start each)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, text
from test_cli_runner import Cli, Result, assert_one_line_error

CHANGES = 10  # scheduler:plan's exit code when applying would change something

# Every field a task takes, and every schedule kind (cron in a zone, interval, once, manual).
FULL_FILE = """\
version: 1
source: team-a
defaults:
  timezone: Europe/Berlin
  queue: reports
tasks:
  - key: backup
    name: nightly-backup
    command: test:echo
    schedule: "0 2 * * *"
    data: {kind: full, api_token: s3cret, nested: {list: [1, 2.5, "x"]}}
    retries: 3
    retry_delay_ms: 2000
    retry_backoff: 1.5
    timeout_ms: 60000
    overlap_policy: forbid
    misfire_policy: run_all
    misfire_grace_ms: 30000
    auto_pause_after: 4
    start_at: 2030-01-01T00:00:00Z
    end_at: "2031-01-01T00:00:00+01:00"
    max_runs: 10
  - name: every-5m
    command: test:echo
    schedule: 5m
    timezone: UTC
    queue: default
  - name: launch
    command: test:echo
    schedule: 2031-06-01T12:00:00Z
    once: true
  - name: by-hand-only
    command: test:echo
    schedule: manual
"""


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> Cli:
    workdir = tmp_path / "work"
    workdir.mkdir()
    return Cli(db_url, workdir, SCHEDULER_ACTOR="ci-bot")


def write(cli: Cli, text_: str, name: str = "tasks.yaml") -> str:
    (cli.workdir / name).write_text(text_, encoding="utf-8")
    return name


def audit_count(cli: Cli) -> int:
    return len(cli.json("scheduler:audit", "--limit", "10000"))


def plan_json(cli: Cli, *args: str, expect: int) -> dict[str, Any]:
    result = cli.invoke("scheduler:plan", *args, "--format", "json")
    assert result.code == expect, result.describe()
    plan: dict[str, Any] = json.loads(result.stdout)
    return plan


def test_plan_apply_idempotent_and_the_exit_codes(cli: Cli) -> None:
    path = write(cli, FULL_FILE)
    planned = cli.run("scheduler:plan", "-f", path)
    assert planned.code == CHANGES, planned.describe()
    assert "+ create    nightly-backup (key backup)" in planned.stdout and "(line 7)" in planned.stdout
    assert "4 to create, 0 to update, 0 to delete, 0 to pause, 0 unchanged." in planned.stdout
    assert cli.tasks() == []  # plan writes nothing

    applied = cli.run("scheduler:apply", "-f", path, "--format", "json")
    assert applied.code == 0, applied.describe()
    assert json.loads(applied.stdout)["summary"]["create"] == 4
    tasks = {task["name"]: task for task in cli.tasks()}
    backup = tasks["nightly-backup"]
    assert (backup["source"], backup["key"], backup["timezone"], backup["queue"]) == (
        "team-a", "backup", "Europe/Berlin", "reports",
    )  # fmt: skip
    assert (backup["retries"], backup["retry_backoff"], backup["end_at"]) == (3, 1.5, "2030-12-31T23:00:00Z")
    assert tasks["launch"]["schedule_kind"] == "once" and tasks["by-hand-only"]["schedule_kind"] == "manual"
    entries = cli.json("scheduler:audit")
    assert sorted(e["action"] for e in entries) == ["apply:create"] * 4
    assert {e["actor"] for e in entries} == {"ci-bot"}

    before = audit_count(cli)
    again = cli.invoke("scheduler:apply", "-f", path)
    assert again.code == 0 and "0 created, 0 updated, 0 deleted, 0 paused, 4 unchanged." in again.stdout
    assert audit_count(cli) == before  # a second apply writes no audit row
    clean = cli.invoke("scheduler:plan", "-f", path)
    assert clean.code == 0, clean.describe()

    bad = cli.invoke(
        "scheduler:plan", "-f", write(cli, FULL_FILE.replace("0 2 * * *", "0 25 * * *"), "bad.yaml")
    )
    assert_one_line_error(bad, 2)
    assert "bad.yaml:10: task 'backup': invalid schedule '0 25 * * *'" in bad.stderr


# The fields of several schedules, jitter and calendars (revision 0003), on one more task. Its start anchors
# the 45m interval at 00:10 UTC, so that no interval slot comes within the 1 min jitter of a 09:00 Berlin slot
# (anchored at the time of the apply, one did about 2 minutes in every 45, and apply refused the jitter).
COMBINED_TASK = """\
  - name: combined
    command: test:echo
    schedule: ["0 9 * * 1-5", "45m"]
    start_at: 2030-01-01T00:10:00Z
    jitter_ms: 60000
    exclude: holidays
    only_in: [workdays, holidays]
    alerts: {on_failure: 3, late_ms: 60000, missing_ms: 0, long_ms: 5000, recovered: false}
"""


def test_export_then_apply_is_a_no_op_for_every_field_and_schedule_kind(cli: Cli) -> None:
    cli.ok("scheduler:calendar", "create", "holidays", "2030-12-25")
    cli.ok("scheduler:calendar", "create", "workdays", "mon", "tue", "wed", "thu", "fri")
    cli.ok("scheduler:apply", "-f", write(cli, FULL_FILE + COMBINED_TASK))
    stored = cli.tasks()
    combined = next(task for task in stored if task["name"] == "combined")
    assert (combined["schedules"], combined["jitter_ms"]) == (["0 9 * * 1-5", "45m"], 60000)
    assert (combined["exclude"], combined["only_in"]) == (["holidays"], ["workdays", "holidays"])
    rules = {"on_failure": 3, "late_ms": 60000, "missing_ms": 0, "long_ms": 5000, "recovered": False}
    exported = cli.run("scheduler:export", "--source", "team-a")
    assert exported.code == 0, exported.describe()
    document = yaml.safe_load(exported.stdout)
    assert document["source"] == "team-a" and len(document["tasks"]) == 5
    assert document["tasks"][0]["data"]["api_token"] == "s3cret"  # the file apply needs, unredacted
    assert document["tasks"][-1]["alerts"] == rules
    assert ["alerts" in task for task in document["tasks"]] == [False] * 4 + [True]
    before = audit_count(cli)
    piped = cli.invoke("scheduler:plan", "-f", "-", stdin=exported.stdout)
    assert piped.code == 0, piped.describe()
    applied = cli.run("scheduler:apply", "-f", "-", stdin=exported.stdout)
    assert applied.code == 0 and "5 unchanged" in applied.stdout, applied.describe()
    as_json = cli.ok("scheduler:export", "--source", "team-a", "--format", "json").stdout
    assert plan_json(cli, "-f", write(cli, as_json, "tasks.json"), expect=0)["summary"]["unchanged"] == 5
    assert audit_count(cli) == before and cli.tasks() == stored


def test_prune_removes_only_the_tasks_of_its_own_source(cli: Cli) -> None:
    cli.create("made-by-hand", "--schedule", "1h")
    other = "source: team-b\ntasks:\n  - {name: b-task, command: test:echo, schedule: 1h}\n"
    cli.ok("scheduler:apply", "-f", write(cli, other, "b.yaml"))
    cli.ok("scheduler:apply", "-f", write(cli, FULL_FILE))
    smaller = FULL_FILE.split("  - name: every-5m")[0]  # only nightly-backup is left
    path = write(cli, smaller, "smaller.yaml")

    without = plan_json(cli, "-f", path, expect=0)  # without --prune nothing is removed
    assert without["summary"] == {"create": 0, "update": 0, "delete": 0, "pause": 0, "unchanged": 1}
    paused = cli.invoke("scheduler:apply", "-f", path, "--prune", "--prune-mode", "pause")
    assert paused.code == 0 and "3 paused," in paused.stdout, paused.describe()
    statuses = {task["name"]: task["status"] for task in cli.tasks()}
    assert statuses == {
        "made-by-hand": "active", "b-task": "active", "nightly-backup": "active",
        "every-5m": "paused", "launch": "paused", "by-hand-only": "paused",
    }  # fmt: skip
    deleted = cli.invoke("scheduler:apply", "-f", path, "--prune", "--format", "json")
    assert json.loads(deleted.stdout)["summary"]["delete"] == 3, deleted.describe()
    assert sorted(task["name"] for task in cli.tasks()) == ["b-task", "made-by-hand", "nightly-backup"]
    assert {t["source"] for t in cli.tasks()} == {"cli", "team-b", "team-a"}
    actions = [e["action"] for e in cli.json("scheduler:audit", "--limit", "3")]
    assert actions == ["apply:delete"] * 3


def test_drift_is_shown_with_who_and_when_and_apply_overwrites_it(cli: Cli) -> None:
    path = write(cli, FULL_FILE)
    cli.ok("scheduler:apply", "-f", path)
    cli.ok("scheduler:update", "--id", "nightly-backup", "--retries", "9", "--actor", "alice")
    changed = cli.json("scheduler:audit", "--limit", "1")[0]
    plan = cli.invoke("scheduler:plan", "-f", path)
    assert plan.code == CHANGES, plan.describe()
    assert "retries: 9 -> 3" in plan.stdout
    assert f"drift: update by alice at {changed['at']} since the last apply" in plan.stdout
    applied = cli.invoke("scheduler:apply", "-f", path)
    assert "overwrote changes made since the last apply: nightly-backup" in applied.stdout, applied.describe()
    assert cli.json("scheduler:list")[0]["retries"] == 3
    after = plan_json(cli, "-f", path, expect=0)
    assert after["drifted"] == 0


def test_a_key_keeps_the_task_through_a_rename(cli: Cli) -> None:
    cli.ok("scheduler:apply", "-f", write(cli, FULL_FILE))
    first = {task["key"]: task["id"] for task in cli.tasks()}
    renamed = write(cli, FULL_FILE.replace("name: nightly-backup", "name: nightly-backup-v2"), "renamed.yaml")
    plan = plan_json(cli, "-f", renamed, "--prune", expect=CHANGES)
    assert plan["summary"]["update"] == 1 and plan["summary"]["delete"] == 0
    cli.ok("scheduler:apply", "-f", renamed, "--prune")
    task = cli.json("scheduler:list")[0]
    assert (task["id"], task["name"]) == (first["backup"], "nightly-backup-v2")
    assert len(cli.json("scheduler:versions", "--id", str(task["id"]))) == 2


def test_versions_diff_and_rollback(cli: Cli) -> None:
    created = cli.create(
        "report", "--schedule", "0 3 * * *", "--retries", "1", "--data", '{"password": "p1"}'
    )
    cli.ok("scheduler:update", "--id", "report", "--schedule", "*/10 * * * *", "--retries", "2")
    cli.ok("scheduler:update", "--id", "report", "--queue", "slow", "--actor", "bob")
    versions = cli.run("scheduler:versions", "--id", "report")
    assert versions.code == 0, versions.describe()
    lines = versions.stdout.splitlines()
    assert lines[2].split()[:1] == ["1"] and "created" in lines[2]
    assert "schedule, retries" in lines[3] and "bob" in lines[4] and "queue" in lines[4]
    diff = cli.run("scheduler:diff", "--id", "report", "--from", "1", "--to", "3")
    assert diff.stdout.splitlines() == [
        "version 1 -> 3:",
        "  schedule: '0 3 * * *' -> '*/10 * * * *'",
        "  queue: 'default' -> 'slow'",
        "  retries: 1 -> 2",
    ], diff.describe()

    rolled = cli.invoke(
        "scheduler:rollback", "--id", "report", "--to", "1", "--format", "json", "--actor", "carol"
    )
    task = rolled.json()
    assert (task["schedule"], task["retries"], task["queue"]) == ("0 3 * * *", 1, "default")
    assert task["next_run_at"] > task["updated_at"] and task["id"] == created["id"]  # from now: no replay
    history = cli.json("scheduler:versions", "--id", "report")
    assert [v["action"] for v in history] == ["create", "update", "update", "rollback"]
    assert history[-1]["actor"] == "carol"
    assert cli.json("scheduler:diff", "--id", "report", "--from", "1", "--to", "4")["changes"] == []
    assert (
        cli.invoke("scheduler:rollback", "--id", "report", "--to", "1").code == 0
    )  # equal already: no version
    assert len(cli.json("scheduler:versions", "--id", "report")) == 4
    assert_one_line_error(cli.invoke("scheduler:rollback", "--id", "report", "--to", "9"), 2)


# Alert rules (docs/alerts.md) in a file: defaults merged per rule, a task's own over them.
ALERTS_FILE = """\
source: team-c
defaults:
  alerts: {on_failure: 2, long_ms: 5000}
tasks:
  - name: etl
    command: test:echo
    schedule: 5m
    alerts:
      long_ms: 0
      recovered: false
  - name: report
    command: test:echo
    schedule: 1h
"""


def own_rules(cli: Cli) -> dict[str, Any]:
    """Each exported task's own alert rules, by name (absent: none)."""
    document = yaml.safe_load(cli.ok("scheduler:export", "--source", "team-c").stdout)
    return {task["name"]: task.get("alerts") for task in document["tasks"]}


def test_alert_rules_in_a_tasks_file_plan_apply_drift_export_and_rollback(cli: Cli) -> None:
    path = write(cli, ALERTS_FILE)
    cli.ok("scheduler:apply", "-f", path)
    etl_rules = {"on_failure": 2, "long_ms": 0, "recovered": False}
    report_rules = {"on_failure": 2, "long_ms": 5000}
    assert own_rules(cli) == {"etl": etl_rules, "report": report_rules}
    effective = cli.json("scheduler:alerts", "--task", "etl")["rules"]
    assert (effective["on_failure"], effective["long_ms"], effective["recovered"]) == (2, None, False)
    created = {e["task_name"]: e["after"]["alerts"] for e in cli.json("scheduler:audit")}
    assert created == {"etl": etl_rules, "report": report_rules}  # audited with the task
    assert plan_json(cli, "-f", path, expect=0)["summary"]["unchanged"] == 2

    cli.ok("scheduler:update", "--id", "report", "--alert-late", "1000", "--actor", "alice")
    plan = plan_json(cli, "-f", path, expect=CHANGES)
    [item] = [task for task in plan["tasks"] if task["action"] != "unchanged"]
    assert (item["name"], item["drift"][0]["actor"]) == ("report", "alice")
    assert item["changes"] == [
        {"field": "alerts", "before": {**report_rules, "late_ms": 1000}, "after": report_rules}
    ]
    text_plan = cli.invoke("scheduler:plan", "-f", path)
    assert "      alerts: {'on_failure': 2, 'late_ms': 1000, 'long_ms': 5000} -> {" in text_plan.stdout
    applied = cli.invoke("scheduler:apply", "-f", path)
    assert "1 updated" in applied.stdout, applied.describe()
    assert own_rules(cli)["report"] == report_rules
    entry = cli.json("scheduler:audit", "--limit", "1")[0]
    assert entry["action"] == "apply:update" and entry["after"]["alerts"] == report_rules
    assert entry["before"]["alerts"] == {**report_rules, "late_ms": 1000}

    without = write(
        cli, ALERTS_FILE.replace("  alerts: {on_failure: 2, long_ms: 5000}", "  queue: default"), "b.yaml"
    )
    plan = plan_json(cli, "-f", without, expect=CHANGES)
    changes = {task["name"]: task["changes"] for task in plan["tasks"]}
    assert changes["report"] == [{"field": "alerts", "before": report_rules, "after": None}]
    assert changes["etl"] == [
        {"field": "alerts", "before": etl_rules, "after": {"long_ms": 0, "recovered": False}}
    ]
    cli.ok("scheduler:apply", "-f", without)
    assert own_rules(cli) == {"etl": {"long_ms": 0, "recovered": False}, "report": None}

    versions = cli.json("scheduler:versions", "--id", "report")
    assert [v["action"] for v in versions] == ["apply:create", "update", "apply:update", "apply:update"]
    diff = cli.json("scheduler:diff", "--id", "report", "--from", "2", "--to", "4")["changes"]
    assert diff == [{"field": "alerts", "before": {**report_rules, "late_ms": 1000}, "after": {}}]
    rolled = cli.run("scheduler:rollback", "--id", "report", "--to", "2", "--actor", "carol")
    assert rolled.code == 0, rolled.describe()
    assert own_rules(cli)["report"] == {**report_rules, "late_ms": 1000}
    assert cli.json("scheduler:alerts", "--task", "report")["rules"]["late_ms"] == 1000
    assert cli.json("scheduler:versions", "--id", "report")[-1]["action"] == "rollback"
    cli.ok("scheduler:pause", "--id", "report")  # version 6 records no rules: it keeps those of 5
    cli.ok("scheduler:update", "--id", "report", "--alert-late", "7", "--clear", "alert-long")
    cli.ok("scheduler:rollback", "--id", "report", "--to", "6")
    assert own_rules(cli)["report"] == {**report_rules, "late_ms": 1000}
    cli.ok("scheduler:rollback", "--id", "report", "--to", "4")
    assert own_rules(cli)["report"] is None


def test_alert_rules_are_written_by_the_bulk_path(cli: Cli) -> None:
    from scheduler.storage.bulk import BULK_MIN_ROWS

    count = BULK_MIN_ROWS + 5
    lines = ["source: team-c", "defaults:", "  alerts: {missing_ms: 600000}", "tasks:"]
    lines += [f"  - {{name: t{i}, command: test:echo, schedule: 5m}}" for i in range(count)]
    lines[-1] = lines[-1].replace("}", ", alerts: {missing_ms: null, on_failure: 0}}")
    path = write(cli, "\n".join(lines) + "\n")
    cli.ok("scheduler:apply", "-f", path)
    rules = own_rules(cli)
    assert len(rules) == count
    assert rules[f"t{count - 1}"] == {"on_failure": 0}  # null: the setting's default, not the file's
    assert all(rules[f"t{i}"] == {"missing_ms": 600000} for i in range(count - 1))
    changed = write(cli, "\n".join(lines).replace("missing_ms: 600000", "missing_ms: 60000") + "\n")
    result = plan_json(cli, "-f", changed, expect=CHANGES)
    assert result["summary"]["update"] == count - 1
    cli.ok("scheduler:apply", "-f", changed)
    assert set(map(str, own_rules(cli).values())) == {str({"missing_ms": 60000}), str({"on_failure": 0})}


def _alias_bomb() -> bytes:
    """Nine levels of nine aliases each: 9**9 (387 million) strings once expanded."""
    lines = ["tasks:", "  - name: a", "    command: test:echo", "    data:", "      l0: &l0 [lol, lol, lol]"]
    lines += [f"      l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
    return ("\n".join(lines) + "\n").encode()


BAD_FILES: list[tuple[str, bytes, str]] = [
    (
        "unknown field",
        b"tasks:\n  - name: a\n    command: test:echo\n    schedul: 5m\n",
        "bad.yaml:4: unknown field 'schedul'; did you mean 'schedule'?",
    ),
    (
        "duplicate name",
        b"tasks:\n  - {key: a, name: x, command: test:echo}\n  - {key: b, name: x, command: test:echo}\n",
        "bad.yaml:3: task 'b': invalid name: 'x' is used twice (also on line 2)",
    ),
    (
        "duplicate key",
        b"tasks:\n  - {key: a, name: x, command: test:echo}\n  - {key: a, name: y, command: test:echo}\n",
        "bad.yaml:3: key 'a' is used twice (also on line 2)",
    ),
    (
        "bad schedule on line 40",
        b"tasks:\n"
        + b"".join(b"  - name: t%d\n    command: test:echo\n    schedule: 5m\n" % i for i in range(12))
        + b"  - name: late\n    command: test:echo\n    schedule: '61 * * * *'\n",
        "bad.yaml:40: task 'late': invalid schedule '61 * * * *'",
    ),
    (
        "unknown calendar",
        b"tasks:\n  - name: a\n    command: test:echo\n    schedule: 1h\n    exclude: [nope]\n",
        "bad.yaml:5: task 'a': unknown calendar 'nope'",
    ),
    (
        "unregistered command",
        b"tasks:\n  - name: a\n    command: test:ech\n",
        "bad.yaml:3: task 'a': unknown command 'test:ech'; did you mean 'test:echo'?",
    ),
    ("alias bomb", _alias_bomb(), "YAML anchors and aliases are not allowed"),
    (
        "not UTF-8",
        b"tasks:\n  - name: caf\xe9\n    command: test:echo\n",
        "bad.yaml:2: is not UTF-8 (byte 0xe9)",
    ),
    (
        "a tag that builds an object",
        b"tasks:\n  - name: a\n    command: test:echo\n    data: !!python/object/apply:os.system [ls]\n",
        "bad.yaml:4: unsupported YAML tag 'tag:yaml.org,2002:python/object/apply:os.system'",
    ),
    ("not YAML", b"tasks: [\n", "bad.yaml:2: is not valid YAML"),
    (
        "unknown alert rule",
        b"tasks:\n  - name: a\n    command: test:echo\n    alerts:\n      on_failure: 2\n      late: 5000\n",
        "bad.yaml:5: task 'a': invalid alerts: unknown rule 'late'; one of on_failure, late_ms, missing_ms, "
        "long_ms, recovered; did you mean 'late_ms'?",
    ),
    (
        "negative alert duration",
        b"defaults:\n  alerts:\n    missing_ms: -1000\ntasks:\n  - name: a\n    command: test:echo\n",
        "bad.yaml:3: task 'a': invalid alerts.missing_ms: must be between 0 and 31622400000, not -1000",
    ),
    (
        "alert rules not a mapping",
        b"tasks:\n  - name: a\n    command: test:echo\n    alerts: [late_ms]\n",
        "bad.yaml:4: task 'a': invalid alerts: must be a mapping of rules, not list",
    ),
]


@pytest.mark.parametrize(("case", "content", "message"), BAD_FILES, ids=[case for case, _, _ in BAD_FILES])
def test_a_bad_file_is_one_error_naming_the_place_and_nothing_is_applied(
    cli: Cli, case: str, content: bytes, message: str
) -> None:
    (cli.workdir / "bad.yaml").write_bytes(content)
    for verb in ("scheduler:plan", "scheduler:apply"):
        result = cli.invoke(verb, "-f", "bad.yaml")
        assert_one_line_error(result, 2)
        assert message in result.stderr, result.describe()
    assert cli.tasks() == []


def test_the_size_limit_is_checked_by_the_real_executable(cli: Cli) -> None:
    from scheduler.rules.taskfile import MAX_FILE_BYTES

    big = b"tasks:\n  - {name: a, command: test:echo}\n" + b"#" * MAX_FILE_BYTES
    (cli.workdir / "big.yaml").write_bytes(big)
    result: Result = cli.run("scheduler:apply", "-f", "big.yaml")
    assert_one_line_error(result, 2)
    assert f"big.yaml: is {MAX_FILE_BYTES + 1} bytes (at most {MAX_FILE_BYTES})" in result.stderr
    assert cli.tasks() == []


def test_a_name_taken_by_another_owner_is_refused_before_anything_is_written(cli: Cli) -> None:
    cli.create("every-5m", "--schedule", "1h")
    result = cli.invoke("scheduler:apply", "-f", write(cli, FULL_FILE))
    assert_one_line_error(result, 2)
    assert "tasks.yaml:23: task 'every-5m': invalid name: 'every-5m' is taken by task" in result.stderr
    assert [task["name"] for task in cli.tasks()] == ["every-5m"]
    assert_one_line_error(cli.invoke("scheduler:apply", "-f", "tasks.yaml", "--source", "cli"), 2)


INSERT_LAUNCH = """
INSERT INTO scheduled_tasks (name, command, schedule, schedule_kind, timezone, data, status, queue, retries,
    retry_delay_ms, retry_backoff, timeout_ms, overlap_policy, misfire_policy, anchor_at, run_count,
    consecutive_failures, source)
VALUES ('launch', 'test:echo', 'manual', 'manual', 'UTC', '{}', 'active', 'default', 0, 0, 2, 1000, 'allow',
    'skip', now(), 0, 0, 'api')
"""
WAITING = """
SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()
"""


def test_a_create_of_the_same_name_during_apply_one_wins_and_no_duplicate(
    pg_url: str, tmp_path: Path
) -> None:
    """PostgreSQL: a transaction holding an uncommitted task named like one of the file's makes apply wait on
    the unique index; when it commits, apply fails with one clear line and applies nothing."""
    cli = Cli(pg_url, tmp_path, SCHEDULER_ACTOR="ci-bot")
    write(cli, FULL_FILE)
    engine = create_engine(pg_url)
    results: list[Result] = []
    try:
        with engine.begin() as connection:
            connection.execute(text(INSERT_LAUNCH))
            thread = threading.Thread(
                target=lambda: results.append(cli.run("scheduler:apply", "-f", "tasks.yaml"))
            )
            thread.start()
            deadline = time.monotonic() + 30
            while not _waiting_on_a_lock(connection) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _waiting_on_a_lock(connection), "apply never reached the unique index"
        thread.join(60)
        [result] = results
        assert_one_line_error(result, 2)
        assert (
            "a task named 'launch' exists already (created by another change while applying" in result.stderr
        )
        assert [task["name"] for task in cli.tasks()] == ["launch"]
    finally:
        engine.dispose()


def _waiting_on_a_lock(connection: Any) -> bool:
    with connection.engine.connect() as other:
        return bool(other.execute(text(WAITING)).scalar_one())
