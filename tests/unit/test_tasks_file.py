"""The tasks file's pure parts: the shipped JSON Schema (up to date, and agreeing with the parser on good and
bad files), parsing details the CLI tests do not reach, and what a rollback restores."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import pytest
import yaml

from scheduler.errors import InvalidInput
from scheduler.records import AuditEntry, Task
from scheduler.rules import task_schema
from scheduler.rules.taskfile import (
    TASK_FIELDS,
    TaskFileError,
    dump_document,
    export_document,
    parse_tasks_file,
)
from scheduler.rules.versions import rollback_changes, versions_of

GOOD = b"""\
version: 1
source: team-a
defaults: {timezone: Europe/Berlin, retries: 2}
tasks:
  - key: backup
    name: nightly
    command: test:echo
    schedule: "0 2 * * *"
    start_at: 2030-01-01T00:00:00Z
    data: {password: x}
  - {name: often, command: test:echo, schedule: 5m, max_runs: null}
"""


def test_the_shipped_schema_is_the_generated_one() -> None:
    shipped = task_schema.SCHEMA_PATH.read_text(encoding="utf-8")
    assert shipped == task_schema.schema_text(), "stale: run python -m scheduler.rules.task_schema"


def test_the_schema_describes_every_task_field() -> None:
    schema = task_schema.tasks_file_schema()
    assert set(schema["$defs"]["task"]["properties"]) == TASK_FIELDS


@pytest.mark.parametrize(
    "bad",
    [
        {"tasks": [{"name": "a", "command": "x", "schedul": "5m"}]},
        {"tasks": [{"name": "a", "retries": 101}]},
        {"tasks": [{"name": "a", "overlap_policy": "sometimes"}]},
        {"tasks": [{"name": "a", "queue": "no spaces"}]},
        {"defaults": {"name": "x"}, "tasks": []},
        {"source": "cli", "tasks": []},
        {"tasks": [{"command": "x"}]},
    ],
)
def test_the_schema_rejects_what_the_parser_or_validation_rejects(bad: dict[str, object]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, task_schema.tasks_file_schema())


def test_the_schema_accepts_a_good_file_and_an_export() -> None:
    # YAML 1.2 editors read an unquoted instant as text; PyYAML (YAML 1.1) would build a datetime.
    quoted = GOOD.decode().replace("2030-01-01T00:00:00Z", '"2030-01-01T00:00:00Z"')
    jsonschema.validate(yaml.safe_load(quoted), task_schema.tasks_file_schema())
    parse_tasks_file("good.yaml", GOOD)


def test_defaults_apply_and_each_field_keeps_its_line() -> None:
    parsed = parse_tasks_file("good.yaml", GOOD)
    first, second = parsed.tasks
    assert parsed.source == "team-a"
    assert (first.key, first.fields["timezone"], first.fields["retries"]) == ("backup", "Europe/Berlin", 2)
    assert first.fields["start_at"] == "2030-01-01T00:00:00Z"  # an unquoted timestamp stays text
    assert (first.line, first.line_of("schedule"), first.line_of("retries"), second.key) == (5, 8, 3, "often")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"tasks:\n  - {name: a, command: x, name: b}\n",
            "good.yaml:2: 'name' is given twice in one mapping",
        ),
        (b"tasks: {name: a}\n", "good.yaml:1: tasks must be a list"),
        (b"version: 2\ntasks: []\n", "good.yaml:1: version must be 1, not 2"),
        (b"taks: []\n", "good.yaml:1: unknown top-level field 'taks'; did you mean 'tasks'?"),
        (b"tasks:\n  - {key: 5, name: a}\n", "good.yaml:2: invalid key: must be text"),
        (b"\xef\xbb\xbftasks: []\n", None),  # a UTF-8 byte order mark is fine
    ],
)
def test_structure_errors_name_the_line(content: bytes, message: str | None) -> None:
    if message is None:
        assert parse_tasks_file("good.yaml", content).tasks == []
        return
    with pytest.raises(TaskFileError) as raised:
        parse_tasks_file("good.yaml", content)
    assert str(raised.value).startswith(message)


def test_an_alias_bomb_is_refused_before_it_expands() -> None:
    levels = ["x: &l0 [lol, lol]", *(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 20))]
    with pytest.raises(TaskFileError, match="anchors and aliases are not allowed"):
        parse_tasks_file(
            "bomb.yaml", ("defaults:\n  data:\n    " + "\n    ".join(levels) + "\ntasks: []\n").encode()
        )


def _task(**fields: object) -> Task:
    base: dict[str, object] = dict(
        id=1, name="t", command="test:echo", schedule="5m", schedule_kind="interval", timezone="UTC", data={},
        status="active", queue="default", retries=0, retry_delay_ms=1000, retry_backoff=2.0, timeout_ms=1000,
        overlap_policy="allow", misfire_policy="skip", misfire_grace_ms=None, auto_pause_after=None,
        start_at=None, end_at=None, max_runs=None, anchor_at=datetime(2026, 1, 1, tzinfo=UTC),
        next_run_at=None, status_reason=None, last_run_at=None, run_count=0, consecutive_failures=0,
        created_at=datetime(2026, 1, 1, tzinfo=UTC), updated_at=datetime(2026, 1, 1, tzinfo=UTC),
        source="cli", key=None,
    )  # fmt: skip
    return Task(**(base | fields))  # type: ignore[arg-type]


def test_export_round_trips_through_the_parser_in_both_formats() -> None:
    task = _task(data={"a": [1, "yes", "2030-01-01"]}, max_runs=5, end_at=datetime(2031, 1, 1, tzinfo=UTC))
    document = export_document([task], source="s")
    for output_format in ("yaml", "json"):
        parsed = parse_tasks_file("x", dump_document(document, output_format).encode())
        assert parsed.tasks[0].fields["data"] == {"a": [1, "yes", "2030-01-01"]}
        assert parsed.tasks[0].fields["end_at"] == "2031-01-01T00:00:00Z"
    assert json.loads(dump_document(document, "json"))["tasks"][0]["key"] == "t"


def test_a_rollback_restores_a_redacted_secret_from_the_current_data_or_refuses() -> None:
    current = _task(data={"password": "now", "x": 2}, retries=3)
    target = {"data": {"password": "***", "x": 1}, "retries": 0, "schedule": "5m"}
    changes = rollback_changes(
        target | {k: v for k, v in _public(current).items() if k not in target}, current
    )
    assert changes == {"data": {"password": "now", "x": 1}, "retries": 0}
    gone = _task(data={"x": 2})
    with pytest.raises(InvalidInput, match=r"data\.password is a secret the audit keeps redacted"):
        rollback_changes(target | {k: v for k, v in _public(gone).items() if k not in target}, gone)


def _public(task: Task) -> dict[str, object]:
    from scheduler.redaction import public_task

    return public_task(task)


def test_versions_skip_manual_runs_and_deletions() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)

    def entry(id_: int, action: str, after: dict[str, object] | None) -> AuditEntry:
        return AuditEntry(
            id=id_, at=at, actor="a", action=action, task_id=1, task_name="t", before=None, after=after,
            db_user=None, db_role=None, db_host=None, prev_hash="", row_hash="",
        )  # fmt: skip

    rows = [
        entry(3, "run", {"execution_id": 7}),
        entry(1, "create", {"schedule": "5m"}),
        entry(4, "update", {"schedule": "6m", "status": "active"}),
        entry(5, "pause", {"status": "paused", "status_reason": "3 failures in a row"}),  # the worker's
        entry(9, "delete", None),
    ]
    versions = versions_of(rows)
    assert [(v.number, v.audit_id) for v in versions] == [(1, 1), (2, 4), (3, 5)]
    assert versions[-1].task == {"schedule": "6m", "status": "paused", "status_reason": "3 failures in a row"}


ALERT_DEFAULTS = b"""\
defaults:
  alerts: {on_failure: 2, missing_ms: 600000}
tasks:
  - name: a
    command: test:echo
    alerts:
      missing_ms: null
      long_ms: 5000
  - {name: b, command: test:echo}
"""


def test_alert_rules_merge_with_the_defaults_per_rule_know_their_lines_and_fit_the_schema() -> None:
    parsed = parse_tasks_file("f.yaml", ALERT_DEFAULTS)
    a, b = parsed.tasks
    assert a.fields["alerts"] == {"on_failure": 2, "missing_ms": None, "long_ms": 5000}
    assert b.fields["alerts"] == {"on_failure": 2, "missing_ms": 600000}
    assert (a.line_of("alerts.long_ms"), a.line_of("alerts.on_failure"), b.line_of("alerts.late_ms")) == (
        8,
        2,
        2,
    )
    schema = task_schema.tasks_file_schema()
    jsonschema.validate(yaml.safe_load(ALERT_DEFAULTS), schema)
    for bad in ({"late": 1}, {"late_ms": -1}, {"recovered": "yes"}, [1]):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"tasks": [{"name": "x", "alerts": bad}]}, schema)


def test_versions_keep_the_rules_over_a_pause_and_drop_them_where_a_change_recorded_none() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)

    def entry(id_: int, action: str, after: dict[str, object]) -> AuditEntry:
        return AuditEntry(
            id=id_, at=at, actor="a", action=action, task_id=1, task_name="t", before=None, after=after,
            db_user=None, db_role=None, db_host=None, prev_hash="", row_hash="",
        )  # fmt: skip

    rules = {"long_ms": 5000}
    rows = [
        entry(1, "apply:create", {"schedule": "5m", "alerts": rules}),
        entry(2, "pause", {"schedule": "5m", "status": "paused"}),  # records no rules: keeps them
        entry(3, "update", {"schedule": "6m", "status": "paused"}),  # records none: has none
    ]
    assert [v.task.get("alerts") for v in versions_of(rows)] == [rules, rules, None]
