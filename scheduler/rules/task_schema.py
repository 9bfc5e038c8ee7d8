"""The JSON Schema of a tasks file, for editors, generated from the field definitions validation uses
(:mod:`scheduler.rules.fields`, :mod:`scheduler.rules.taskfile`). The repository ships it as
``schema/tasks-file.schema.json``; ``make docs`` (``python -m scheduler.rules.task_schema``) rewrites it and a
test fails when the shipped file is out of date.

The schema helps while typing; the scheduler's own validation (cron syntax, registered commands, ...) is
what decides.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from scheduler.rules.alerts import ALERTS, MAX_ON_FAILURE, MAX_RULE_MS, RULE_FIELDS
from scheduler.rules.fields import (
    INT_RANGES,
    MAX_DATA_DEPTH,
    MAX_NAME,
    MISFIRE_POLICIES,
    OVERLAP_POLICIES,
    QUEUE,
)
from scheduler.rules.taskfile import DEFAULT_FIELDS, FORMAT_VERSION, TASK_FIELDS, TOP_LEVEL
from scheduler.rules.taskplan import RESERVED_SOURCES

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schema" / "tasks-file.schema.json"
CALENDARS: dict[str, Any] = {
    "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}, {"type": "null"}]
}
INSTANT = {"type": "string", "format": "date-time", "description": "ISO-8601 instant with a UTC offset"}


def field_schemas() -> dict[str, dict[str, Any]]:
    """One JSON Schema per task field."""
    text = {"type": "string", "minLength": 1, "maxLength": MAX_NAME}
    out: dict[str, dict[str, Any]] = {
        "key": {**text, "description": "Stable key of the task in this file (default: its name)"},
        "name": {**text, "description": "Unique task name; not only digits"},
        "command": {**text, "description": "A registered command (systemprompt scheduler:commands)"},
        "schedule": {
            "description": "cron (5 fields), an interval (30s, 5m, 1h), an ISO-8601 instant, or manual; or a "
            "list of several cron and interval schedules",
            "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}],
        },
        "exclude": CALENDARS | {"description": "Calendars whose days do not run"},
        "only_in": CALENDARS | {"description": "Calendars: only their days run"},
        "once": {"type": "boolean", "description": "A one-time task (give its instant as the schedule)"},
        "timezone": {"type": "string", "description": "IANA time zone of a cron schedule", "default": "UTC"},
        "data": {
            "type": "object",
            "description": f"JSON object passed to the command (depth <= {MAX_DATA_DEPTH})",
        },
        "retry_backoff": {"type": "number", "minimum": 1, "maximum": 10},
        "overlap_policy": {"enum": list(OVERLAP_POLICIES)},
        "misfire_policy": {"enum": list(MISFIRE_POLICIES)},
        "queue": {"type": "string", "pattern": f"^{QUEUE.pattern}$"},
        "start_at": INSTANT,
        "end_at": INSTANT,
    }
    for name, (low, high) in INT_RANGES.items():
        out[name] = {"type": ["integer", "null"], "minimum": low, "maximum": high}
    out[ALERTS] = alert_rules_schema()
    assert out.keys() == TASK_FIELDS, sorted(out.keys() ^ TASK_FIELDS)
    return dict(sorted(out.items()))


def alert_rules_schema() -> dict[str, Any]:
    """The ``alerts`` field: the task's own rules (docs/alerts.md); null or left out: the setting's default,
    0 (false): off. In ``defaults:``, merged with a task's rules per rule."""
    rules: dict[str, Any] = {
        name: {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_RULE_MS}
        for name in RULE_FIELDS
        if name.endswith("_ms")
    }
    rules["on_failure"] = {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_ON_FAILURE}
    rules["recovered"] = {"type": ["boolean", "null"]}
    assert rules.keys() == set(RULE_FIELDS), sorted(rules.keys() ^ set(RULE_FIELDS))
    return {
        "type": ["object", "null"],
        "description": "The task's own alert rules (docs/alerts.md); a rule left out or null takes the "
        "setting's default, 0 (false) turns it off",
        "properties": {name: rules[name] for name in RULE_FIELDS},
        "additionalProperties": False,
    }


def tasks_file_schema() -> dict[str, Any]:
    fields = field_schemas()
    task = {
        "type": "object",
        "properties": fields,
        "additionalProperties": False,
        "required": ["name"],
    }
    defaults = {
        "type": "object",
        "properties": {name: schema for name, schema in fields.items() if name in DEFAULT_FIELDS},
        "additionalProperties": False,
    }
    top = {
        "version": {"const": FORMAT_VERSION},
        "source": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "not": {"enum": list(RESERVED_SOURCES)},
        },
        "defaults": defaults,
        "tasks": {"type": "array", "items": {"$ref": "#/$defs/task"}},
    }
    assert tuple(top) == TOP_LEVEL
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://systemprompt.dev/schema/tasks-file.schema.json",
        "title": "systemprompt-scheduler tasks file",
        "description": "Tasks as code: see docs/tasks-as-code.md",
        "type": "object",
        "properties": top,
        "required": ["tasks"],
        "additionalProperties": False,
        "$defs": {"task": task},
    }


def schema_text() -> str:
    return json.dumps(tasks_file_schema(), indent=2) + "\n"


def main() -> None:
    """Write the schema to ``schema/tasks-file.schema.json`` (or stdout with ``-``)."""
    if sys.argv[1:] == ["-"]:
        sys.stdout.write(schema_text())
        return
    SCHEMA_PATH.parent.mkdir(exist_ok=True)
    SCHEMA_PATH.write_text(schema_text(), encoding="utf-8")


if __name__ == "__main__":
    main()
