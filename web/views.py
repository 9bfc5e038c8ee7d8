"""What the pages and the JSON API show: plain dicts built from the service's records, secrets redacted.

The pages render exactly these (one source for both), so the API documented in docs/web.md is what a
person sees.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from scheduler.records import Execution, LogLine, iso_utc
from scheduler.redaction import public_task, redact
from scheduler.rules import timing
from scheduler.rules.versions import TaskVersion, diff_tasks
from scheduler.service import SchedulerService
from scheduler.storage.console import PageRow, sort_value
from web.describe import schedule_in_words
from web.queries import TasksQuery, encode_cursor

TIMELINE_SLOTS = 30
UPCOMING_SLOTS = 10
HISTORY_ROWS = 50
AUDIT_ROWS = 50
VERSION_ROWS = 50


def task_row(row: PageRow, paused: dict[int, tuple[str, Any]]) -> dict[str, Any]:
    task = row.task
    who = paused.get(task.id) if task.status == "paused" else None
    upcoming = timing.upcoming_runs(task, 1) if task.status == "active" else []
    return {
        "id": task.id,
        "name": task.name,
        "command": task.command,
        "schedule": task.schedule,
        "schedule_kind": task.schedule_kind,
        "schedule_words": schedule_in_words(task.schedule_kind, task.schedule),
        "timezone": task.timezone,
        "queue": task.queue,
        "source": task.source,
        "status": task.status,
        "status_reason": task.status_reason,
        "paused_until": iso_utc(task.paused_until) if task.status == "paused" else None,
        "paused_by": who[0] if who else None,
        "paused_at": iso_utc(who[1]) if who else None,
        "last_outcome": row.last_outcome,
        "last_finished_at": iso_utc(row.last_finished_at),
        "consecutive_failures": task.consecutive_failures,
        "next_run_at": iso_utc(upcoming[0]) if upcoming else None,
    }


def tasks_view(service: SchedulerService, query: TasksQuery) -> dict[str, Any]:
    rows = service.task_page(
        query.where, sort=query.sort, descending=query.descending, after=query.after, limit=query.limit + 1
    )
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    paused = service.paused_by([row.task.id for row in rows if row.task.status == "paused"])
    last = rows[-1].task if rows else None
    cursor = encode_cursor(query.sort, sort_value(last, query.sort), last.id) if more and last else None
    return {"tasks": [task_row(row, paused) for row in rows], "next_cursor": cursor}


def execution_json(execution: Execution) -> dict[str, Any]:
    out = execution.to_json()
    out["result"] = redact(execution.result)
    out["data"] = redact(execution.data)
    return out


def upcoming_view(task: Any, count: int) -> list[dict[str, Any]]:
    """The next ``count`` fire times with their local time and clock-change notes (none when paused)."""
    if task.status != "active":
        return []
    zone = ZoneInfo(task.timezone)
    times = timing.upcoming_runs(task, count)
    notes = timing.clock_change_notes(times, zone)
    return [
        {"at": iso_utc(at), "local": timing.local_time_label(at, zone), "note": note}
        for at, note in zip(times, notes, strict=True)
    ]


def task_view(service: SchedulerService, ref: int, *, slots: int = TIMELINE_SLOTS) -> dict[str, Any]:
    task = service.get_task(ref)
    definition = public_task(task)
    definition["schedule_words"] = schedule_in_words(task.schedule_kind, task.schedule)
    paused = service.paused_by([task.id]).get(task.id) if task.status == "paused" else None
    definition["paused_by"] = paused[0] if paused else None
    stats = service.get_task_stats(task.id).to_json()
    percentiles = service.duration_percentiles(task.id, (0.5, 0.95))
    stats["p50_duration_ms"] = percentiles[0.5]
    stats["p95_duration_ms"] = percentiles[0.95]
    stats["runs_per_day_7d"] = service.runs_per_day(task.id, days=7)
    timeline = [execution_json(e) for e in service.history(task=task.id, limit=slots)]
    return {
        "task": definition,
        "timeline": list(reversed(timeline)),  # oldest first, as a strip reads
        "upcoming": upcoming_view(task, UPCOMING_SLOTS),
        "stats": stats,
        "history": timeline[:HISTORY_ROWS],
        "audit": [entry.to_json() for entry in service.audit(task=task.id, limit=AUDIT_ROWS)],
        "versions": versions_view(service.task_versions(task.id))[:VERSION_ROWS],
    }


def versions_view(versions: list[TaskVersion]) -> list[dict[str, Any]]:
    """The task's versions, newest first, each with its definition and the fields it changed from the version
    before (none for version 1, the creation); secrets redacted (the audit keeps them so; redacted again
    here, so a page can never show one)."""
    out: list[dict[str, Any]] = []
    previous: dict[str, Any] | None = None
    for version in versions:
        task = redact(version.task)
        changes = [] if previous is None else [change.to_json() for change in diff_tasks(previous, task)]
        out.append(version.to_json() | {"task": task, "changes": changes, "latest": False})
        previous = task
    if out:
        out[-1]["latest"] = True
    return list(reversed(out))


def log_json(line: LogLine) -> dict[str, Any]:
    return line.to_json()


def execution_view(service: SchedulerService, execution_id: int) -> dict[str, Any]:
    execution = service.get_execution(execution_id)
    return {
        "execution": execution_json(execution),
        "logs": [log_json(line) for line in service.logs(execution_id)],
    }
