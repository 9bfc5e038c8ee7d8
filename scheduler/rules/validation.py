"""Raw task fields -> a validated, normalised definition, or a typed :class:`InvalidInput` (invariant 8
of docs/architecture.md).

Pure: no I/O and no clock (``now`` is passed in, normally the database clock). Name uniqueness needs the
database and is checked by the service. ``None`` for a field with a default means the default (settings); for
``schedule`` it means ``manual``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from scheduler.commands.registry import CommandRegistry
from scheduler.errors import InvalidField, InvalidInput
from scheduler.records import Task, TaskDefinition
from scheduler.rules import timing
from scheduler.rules.fields import (
    INT_RANGES,
    MISFIRE_POLICIES,
    OVERLAP_POLICIES,
    validate_backoff,
    validate_calendar_names,
    validate_choice,
    validate_command,
    validate_data,
    validate_instant,
    validate_int,
    validate_name,
    validate_queue,
    validate_timezone_name,
)
from scheduler.settings import Settings

UPDATABLE = frozenset(
    {
        "name", "command", "schedule", "data", "timezone", "retries", "retry_delay_ms", "retry_backoff",
        "timeout_ms", "overlap_policy", "misfire_policy", "misfire_grace_ms", "auto_pause_after", "queue",
        "start_at", "end_at", "max_runs", "jitter_ms", "exclude", "only_in",
    }
)  # fmt: skip
CREATABLE = UPDATABLE | {"once"}
# Changing any of these changes when the task runs: its next run is recomputed from now.
TIMING_FIELDS = frozenset({"schedule", "timezone", "start_at", "end_at", "max_runs", "jitter_ms"})
CALENDAR_FIELDS = ("exclude", "only_in")


# ------------------------------------------------------------------------------------------- whole tasks


def _defaults(settings: Settings) -> dict[str, Any]:
    return {
        "timezone": "UTC",
        "retries": settings.default_retries,
        "retry_delay_ms": settings.retry_delay,
        "retry_backoff": settings.retry_backoff,
        "timeout_ms": settings.task_timeout,
        "overlap_policy": settings.overlap_policy,
        "misfire_policy": settings.misfire_policy,
        "queue": settings.default_queue,
        "data": {},
    }


def _check_known(fields: Mapping[str, Any], allowed: frozenset[str]) -> None:
    for key in fields:
        if key not in allowed:
            raise InvalidField(str(key)[:60], f"unknown field; known fields: {', '.join(sorted(allowed))}")


def validate_plain_fields(fields: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """Validate every field that needs no other field; ``None`` picks the default where there is one."""
    defaults = _defaults(settings)
    out: dict[str, Any] = {}
    for key, raw in fields.items():
        value = defaults.get(key) if raw is None else raw
        if key == "name":
            out[key] = validate_name(value)
        elif key == "data":
            out[key] = validate_data(value)
        elif key in INT_RANGES:
            out[key] = None if value is None else validate_int(key, value)
        elif key == "retry_backoff":
            out[key] = validate_backoff(value)
        elif key == "overlap_policy":
            out[key] = validate_choice(key, value, OVERLAP_POLICIES)
        elif key == "misfire_policy":
            out[key] = validate_choice(key, value, MISFIRE_POLICIES)
        elif key == "queue":
            out[key] = validate_queue(value)
        elif key == "timezone":
            out[key] = validate_timezone_name(value)
        elif key in ("start_at", "end_at"):
            out[key] = validate_instant(key, value)
        elif key in CALENDAR_FIELDS:
            out[key] = None if value is None else validate_calendar_names(key, value)
    if out.get("jitter_ms") == 0:
        out["jitter_ms"] = None  # no jitter
    return out


def _jitter(values: Mapping[str, Any]) -> timedelta | None:
    jitter_ms = values.get("jitter_ms")
    return timedelta(milliseconds=jitter_ms) if jitter_ms else None


def _check_bounds(start_at: datetime | None, end_at: datetime | None) -> None:
    if start_at is not None and end_at is not None and start_at >= end_at:
        raise InvalidField("end_at", "must be after start_at")


def validate_new_task(
    fields: Mapping[str, Any], *, settings: Settings, commands: CommandRegistry, now: datetime
) -> TaskDefinition:
    """Validate a whole new task; raise a typed :class:`InvalidInput` naming the first bad field."""
    _check_known(fields, CREATABLE)
    for required in ("name", "command"):
        if fields.get(required) is None:
            raise InvalidField(required, "is required")
    once = fields.get("once", False)
    if not isinstance(once, bool):
        raise InvalidField("once", "must be true or false")
    plain = validate_plain_fields({k: v for k, v in fields.items() if k != "once"}, settings)
    values: dict[str, Any] = {**_defaults(settings), **plain}
    values["command"] = validate_command(fields["command"], commands, values["data"])
    _check_bounds(values.get("start_at"), values.get("end_at"))
    plan = timing.plan_schedule(
        fields.get("schedule"),
        once=once,
        timezone=values["timezone"],
        now=now,
        start_at=values.get("start_at"),
        end_at=values.get("end_at"),
        max_runs=values.get("max_runs"),
        jitter=_jitter(values),
    )
    timing.require_a_run(plan, end_at=values.get("end_at"))
    columns: dict[str, Any] = {key: values.get(key) for key in UPDATABLE}
    columns |= {"schedule": plan.text, "schedule_kind": plan.kind, "status": "active"}
    columns |= {"schedules": list(plan.texts) or None}
    columns |= {"anchor_at": plan.anchor_at, "next_run_at": plan.next_run_at}
    return TaskDefinition(**columns)


def validate_changes(
    task: Task, changes: Mapping[str, Any], *, settings: Settings, commands: CommandRegistry, now: datetime
) -> dict[str, Any]:
    """The columns ``changes`` alter (only those whose value differs); raise :class:`InvalidInput` first.

    Changing schedule, timezone, start_at, end_at or max_runs recomputes ``next_run_at`` from ``now`` (and the
    status: ``completed`` when it will not run again, ``active`` again when a completed task gets a future
    run).
    The interval anchor is kept unless the schedule or start_at changes.
    """
    if "once" in changes:
        raise InvalidField("once", "cannot be changed; give a schedule (an ISO instant or 'now') instead")
    _check_known(changes, UPDATABLE)
    for required in ("name", "command"):
        if required in changes and changes[required] is None:
            raise InvalidField(required, "is required")
    plain = validate_plain_fields(
        {k: v for k, v in changes.items() if k not in ("command", "schedule")}, settings
    )
    merged: dict[str, Any] = {key: getattr(task, key) for key in UPDATABLE} | plain
    if "command" in changes or "data" in changes:
        merged["command"] = validate_command(
            merged["command"] if "command" not in changes else changes["command"], commands, merged["data"]
        )
    _check_bounds(merged["start_at"], merged["end_at"])
    result = {k: merged[k] for k in changes if k != "schedule" and merged[k] != getattr(task, k)}
    if not TIMING_FIELDS & changes.keys():
        return result
    restart = "schedule" in changes or "start_at" in changes
    plan = timing.plan_schedule(
        changes.get("schedule", timing.stored_schedules(task)),
        timezone=merged["timezone"],
        now=now,
        check_past="schedule" in changes,
        start_at=merged["start_at"],
        end_at=merged["end_at"],
        max_runs=merged["max_runs"],
        run_count=task.run_count,
        anchor_at=None if restart else task.anchor_at,
        jitter=_jitter(merged),
        task_id=task.id,
    )
    timed: dict[str, Any] = {
        "schedules": list(plan.texts) or None,
        "schedule": plan.text,
        "schedule_kind": plan.kind,
        "anchor_at": plan.anchor_at,
        "next_run_at": plan.next_run_at,
    }
    if task.status in ("completed", "failed") and plan.next_run_at is not None:
        timed |= {"status": "active", "status_reason": None}
    elif task.status == "active" and plan.next_run_at is None and plan.kind != "manual":
        timed |= {"status": "completed", "status_reason": "no further fire time"}
    return result | {k: v for k, v in timed.items() if getattr(task, k) != v}


__all__ = ["InvalidInput", "validate_changes", "validate_new_task"]
