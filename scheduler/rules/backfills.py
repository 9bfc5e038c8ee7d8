"""Backfills, timed pauses and skips: which slots, and the checks on what a user asks for. Pure.

A backfill's slots are the task's fire times in ``[from, to]`` (both inclusive), found by the same
``Schedule.next_after`` that :func:`scheduler.rules.timing.upcoming_runs` (``scheduler:next``) uses, so
DST is handled as everywhere else (cronie's rules: a repeated wall time runs once, a skipped one at the gap's
end). The task's start_at, end_at and max_runs do not limit a backfill: its range is explicit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from scheduler.errors import InvalidField
from scheduler.records import Task
from scheduler.rules.calendars import CalendarRule
from scheduler.rules.combined import slot_of
from scheduler.rules.timing import clock_change_notes, local_time_label, task_schedule

MAX_SLOTS = 10_000  # more needs force=True
MAX_SLOTS_FORCED = 100_000  # never more in one backfill
MAX_PARALLEL = 1000
MAX_SKIP = 1000


@dataclass(frozen=True, slots=True)
class BackfillRange:
    """A checked backfill request: the range and its nominal slots (UTC, ascending), with, per slot, the
    schedule that produced it (None: the task's only one) and why a calendar excludes it (None: it runs)."""

    range_from: datetime
    range_to: datetime
    slots: list[datetime]
    sources: list[str | None]
    excluded: list[str | None]


def check_max_parallel(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_PARALLEL:
        raise InvalidField("max_parallel", f"must be a whole number from 1 to {MAX_PARALLEL}")
    return value


def check_skip_count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_SKIP:
        raise InvalidField("count", f"must be a whole number from 1 to {MAX_SKIP}")
    return value


def backfill_range(
    task: Task,
    start: datetime,
    end: datetime,
    *,
    now: datetime,
    force: bool,
    rule: CalendarRule | None = None,
) -> BackfillRange:
    """The nominal slots of ``task`` in ``[start, end]`` (aware UTC instants), as the planner's rows keep
    them (a jitter moves when a slot runs, not the slot; several schedules: each slot once), with ``rule``'s
    exclusions; :class:`InvalidField` for a reversed range, one reaching past ``now``, a manual task, or more
    than :data:`MAX_SLOTS` slots without ``force`` (:data:`MAX_SLOTS_FORCED` with it)."""
    if start > end:
        raise InvalidField("from", f"{_iso(start)} is after --to {_iso(end)} (the range is reversed)")
    if end > now:
        raise InvalidField(
            "to", f"{_iso(end)} is in the future (now {_iso(now)}): a backfill covers past slots"
        )
    if task.schedule_kind == "manual":
        raise InvalidField("id", f"task {task.name!r} is manual: its schedule has no slots to backfill")
    limit = MAX_SLOTS_FORCED if force else MAX_SLOTS
    schedule = task_schedule(task)
    found = BackfillRange(range_from=start, range_to=end, slots=[], sources=[], excluded=[])
    fire = schedule.next_after(start, inclusive=True)  # a real time is never before its slot
    while fire is not None:
        slot, source = slot_of(schedule, fire)
        if slot > end:
            break
        if slot >= start:
            if len(found.slots) == limit:
                hint = "" if force else "; pass --force to allow up to 100000"
                raise InvalidField("to", f"the range holds more than {limit} slots{hint}")
            found.slots.append(slot)
            found.sources.append(source)
            found.excluded.append(None if rule is None else rule.reason(slot))
        fire = schedule.next_after(fire)
    return found


def local_time(at: datetime, zone: ZoneInfo) -> str:
    """``at`` as a wall time in ``zone`` with its UTC offset, e.g. ``2026-10-25 02:30:00 CET (+01:00)``."""
    offset = at.astimezone(zone).strftime("%z")
    return f"{local_time_label(at, zone)} ({offset[:3]}:{offset[3:5]})"


def dst_notes(times: list[datetime], zone: ZoneInfo) -> list[str | None]:
    """Per instant: which of the two it is when its wall time occurs twice in ``zone`` (clocks went back),
    and :func:`~scheduler.rules.timing.clock_change_notes`' note when the offset changed since the previous
    instant."""
    notes: list[str | None] = []
    for at, change in zip(times, clock_change_notes(times, zone), strict=True):
        local = at.astimezone(zone)
        words: list[str] = []
        if local.replace(fold=1 - local.fold).utcoffset() != local.utcoffset():  # this wall time exists twice
            words.append(f"{'second' if local.fold else 'first'} of two {local:%H:%M} (clocks go back)")
        if change is not None:
            words.append(change)
        notes.append("; ".join(words) or None)
    return notes


def pause_until(until: datetime, *, now: datetime) -> datetime:
    """A timed pause's end: it must lie in the future."""
    if until <= now:
        raise InvalidField("until", f"{_iso(until)} is not in the future (now {_iso(now)})")
    return until


def resume_after_pause(task: Task, until: datetime) -> datetime | None:
    """The first slot at or after ``until`` (the end of a timed pause): the paused span is never replayed;
    None when the schedule has none (end_at, max_runs or a passed once instant)."""
    if task.max_runs is not None and task.run_count >= task.max_runs:
        return None
    if task.schedule_kind == "once" and task.run_count >= 1:
        return None
    floor = max(until, task.start_at) if task.start_at is not None else until
    fire = task_schedule(task).next_after(floor, inclusive=True)
    if fire is not None and task.end_at is not None and fire > task.end_at:
        return None
    return fire


def resumed_columns(task: Task, fire: datetime | None) -> dict[str, Any]:
    """What resuming paused ``task`` writes, by hand or at the end of a timed pause: active from ``fire``
    (None: no fire time left, so ``completed``, unless manual), the failure streak and timed pause cleared."""
    done = fire is None and task.schedule_kind != "manual"
    return {
        "status": "completed" if done else "active",
        "status_reason": "no further fire time" if done else None,
        "next_run_at": fire,
        "consecutive_failures": 0,
        "paused_until": None,
    }


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
