"""When a task runs: its first fire time, its recomputed next run, and its upcoming runs.

Pure (``now`` is passed in, normally the database clock). The rules:

- interval anchor = ``start_at`` or now (kept across edits unless the schedule or start_at changes);
- first fire = the first slot at or after a future ``start_at``, else strictly after now;
- a once instant may lie up to 60 s in the past (it fires at once); further back it is rejected when given,
  and never fires when recomputed; a once task fires at most one time;
- nothing fires after ``end_at`` (inclusive bound) or once ``run_count`` reached ``max_runs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from scheduler.errors import InvalidField, InvalidSchedule, SchedulerError
from scheduler.records import Task, TaskToPlan, iso_utc
from scheduler.rules.combined import CombinedSchedule, shortest_gap, slot_of
from scheduler.rules.schedules import BasicSchedule, OnceSchedule, Schedule, fire_times, parse_schedule

ONCE_GRACE = timedelta(seconds=60)
MAX_SCHEDULE = 200
MAX_SCHEDULES = 20


@dataclass(frozen=True, slots=True)
class SchedulePlan:
    """The schedule columns of a task: normalised text, kind, interval anchor and first fire time."""

    text: str
    kind: str
    anchor_at: datetime
    next_run_at: datetime | None
    texts: tuple[str, ...] = ()  # every schedule's text when there are several, else empty


def combine(parts: list[tuple[str, BasicSchedule]], jitter: timedelta | None, task_id: int = 0) -> Schedule:
    """A task's schedules and jitter as one schedule: the only one as it is, else a CombinedSchedule."""
    if len(parts) == 1 and not jitter:
        return parts[0][1]
    return CombinedSchedule(tuple(parts), jitter or timedelta(0), task_id)


def _given_schedules(
    value: object,
    *,
    timezone: str,
    now: datetime,
    anchor: datetime,
    once: bool,
    check_past: bool,
    start_at: datetime | None,
    end_at: datetime | None,
) -> list[tuple[str, BasicSchedule]]:
    """One schedule (text) or several (a list of texts): several must all repeat (cron or interval)."""

    def given(text: object) -> tuple[str, BasicSchedule]:
        return _given_schedule(
            text, timezone=timezone, now=now, anchor=anchor, once=once, check_past=check_past,
            start_at=start_at, end_at=end_at,
        )  # fmt: skip

    if not isinstance(value, list | tuple):
        return [given(value)]
    if not value:
        raise InvalidField("schedule", "an empty list; give at least one schedule")
    if len(value) > MAX_SCHEDULES:
        raise InvalidField("schedule", f"{len(value)} schedules (at most {MAX_SCHEDULES})")
    parts: list[tuple[str, BasicSchedule]] = []
    for item in value:
        text, schedule = parse_task_schedule(item, timezone=timezone, anchor=anchor)
        if len(value) > 1 and schedule.kind not in ("cron", "interval"):
            shown = item.strip() if isinstance(item, str) else text
            raise InvalidSchedule(shown, "a task with several schedules takes only cron and interval ones")
        if text not in (known for known, _ in parts):
            parts.append((text, schedule))
    if len(parts) > 1 and once:
        raise InvalidField("once", "a task with several schedules cannot run once")
    if len(parts) == 1:
        return [given(parts[0][0])]
    return parts


def check_jitter(schedule: Schedule, jitter: timedelta | None, now: datetime) -> None:
    """A jitter needs a repeating schedule and is at most its shortest gap between slots (so slots keep
    their order and one slot's run never lands after the next slot)."""
    if not jitter:
        return
    if schedule.kind in ("once", "manual"):
        raise InvalidField("jitter", f"a {schedule.kind} schedule has no interval to spread runs over")
    gap = shortest_gap(schedule, now)
    if gap is not None and jitter > gap:
        raise InvalidField(
            "jitter",
            f"{_duration(jitter)} is longer than the schedule's interval ({_duration(gap)}, the shortest gap "
            "between its slots)",
        )


def _duration(value: timedelta) -> str:
    """A duration as an interval is written (``1h30m``, ``45s``); fractions of seconds as ``3600.001s``."""
    ms = int(value / timedelta(milliseconds=1))
    if ms % 1000:
        return f"{ms // 1000}.{ms % 1000:03d}".rstrip("0") + "s"
    seconds, words = ms // 1000, ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        words += f"{count}{unit}" if count else ""
    return words or "0s"


def once_text(at: datetime) -> str:
    """The stored text of a once schedule: a fixed UTC instant, so re-parsing it later means the same."""
    text = iso_utc(at)
    assert text is not None
    return text


def parse_task_schedule(value: object, *, timezone: str, anchor: datetime) -> tuple[str, BasicSchedule]:
    """(normalised text, schedule); ``None`` or ``manual`` is manual, empty or non-text is invalid.

    ``now`` and ISO instants become a fixed UTC instant; cron and interval text is kept as given (stripped).
    """
    if value is None:
        value = "manual"
    if not isinstance(value, str):
        raise InvalidField("schedule", "must be text")
    text = value.strip()
    if len(text) > MAX_SCHEDULE:
        raise InvalidSchedule(text[:40] + "...", f"longer than {MAX_SCHEDULE} characters")
    try:
        schedule = parse_schedule(value, timezone=timezone, anchor=anchor)
    except SchedulerError:
        raise
    except (ValueError, OverflowError) as error:  # defensive: the parser should raise only typed errors
        raise InvalidSchedule(text, str(error)) from None
    if isinstance(schedule, OnceSchedule):
        return once_text(schedule.at), schedule
    return ("manual" if schedule.kind == "manual" else text), schedule


def first_fire(
    schedule: Schedule,
    *,
    now: datetime,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
    max_runs: int | None = None,
    run_count: int = 0,
) -> datetime | None:
    """The next slot a task with this schedule and bounds should run at, seen from ``now``; None: never."""
    if max_runs is not None and run_count >= max_runs:
        return None
    if schedule.kind == "once":
        if run_count >= 1:
            return None
        floor = now - ONCE_GRACE
        fire = schedule.next_after(max(floor, start_at) if start_at else floor, inclusive=True)
    elif start_at is not None and start_at >= now:
        fire = schedule.next_after(start_at, inclusive=True)
    else:
        fire = schedule.next_after(now)
    if fire is not None and end_at is not None and fire > end_at:
        return None
    return fire


def _given_schedule(
    value: object,
    *,
    timezone: str,
    now: datetime,
    anchor: datetime,
    once: bool,
    check_past: bool,
    start_at: datetime | None,
    end_at: datetime | None,
) -> tuple[str, BasicSchedule]:
    """Parse schedule text and apply the rules of text a user gives (``once``, ``check_past``)."""
    text, schedule = parse_task_schedule(value, timezone=timezone, anchor=anchor)
    if once:
        if schedule.kind == "manual":
            raise InvalidSchedule(text, "a manual schedule never fires, so it cannot run once")
        at = first_fire(schedule, now=now, start_at=start_at, end_at=end_at)
        if at is None:
            raise InvalidSchedule(text, "it has no fire time (before end_at), so it cannot run once")
        return once_text(at), OnceSchedule(at=at)
    if check_past and isinstance(schedule, OnceSchedule) and schedule.at < now - ONCE_GRACE:
        raise InvalidSchedule(text, "the instant is more than 60 seconds in the past")
    return text, schedule


def plan_schedule(
    value: object,
    *,
    timezone: str,
    now: datetime,
    once: bool = False,
    check_past: bool = True,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
    max_runs: int | None = None,
    run_count: int = 0,
    anchor_at: datetime | None = None,
    jitter: timedelta | None = None,
    task_id: int = 0,
) -> SchedulePlan:
    """Parse schedule text and place its first run; raise :class:`InvalidSchedule` for text that cannot run.

    ``once=True`` turns any schedule into a once schedule at its first fire time (an error when it has none).
    ``check_past`` rejects a once instant more than 60 s before ``now`` (for text the user just gave).
    ``anchor_at`` keeps an existing interval anchor; by default it is ``start_at`` or ``now``.
    ``value`` may be a list of schedule texts (several schedules); ``jitter`` spreads the runs of task
    ``task_id`` (see :mod:`scheduler.rules.combined`) and must fit the schedule (:func:`check_jitter`).
    """
    anchor = anchor_at or start_at or now
    parts = _given_schedules(
        value, timezone=timezone, now=now, anchor=anchor, once=once, check_past=check_past,
        start_at=start_at, end_at=end_at,
    )  # fmt: skip
    schedule = combine(parts, jitter, task_id)
    check_jitter(schedule, jitter, now)
    fire = first_fire(
        schedule, now=now, start_at=start_at, end_at=end_at, max_runs=max_runs, run_count=run_count
    )
    texts = tuple(text for text, _ in parts) if len(parts) > 1 else ()
    return SchedulePlan(parts[0][0], schedule.kind, anchor, fire, texts)


def require_a_run(plan: SchedulePlan, *, end_at: datetime | None = None) -> None:
    """A new task must fire at least once (a manual one never does, by design)."""
    if plan.kind != "manual" and plan.next_run_at is None:
        raise InvalidField("end_at" if end_at else "schedule", "the task would never run")


@dataclass(frozen=True, slots=True)
class SchedulePreview:
    """What ``validate`` shows: the schedule as create would store it, and its next nominal fire times (UTC)
    with the text of the schedule that produced each (several schedules)."""

    text: str
    kind: str
    fire_times: list[datetime]
    sources: list[str]


def preview_schedule(
    value: object,
    *,
    timezone: str,
    now: datetime,
    count: int,
    after: datetime | None = None,
    jitter: timedelta | None = None,
) -> SchedulePreview:
    """Check schedule text (or a list of texts) by the rules of a new task (:func:`plan_schedule`,
    :func:`require_a_run`, :func:`check_jitter`) and list up to ``count`` fire times: from the first run
    create would place (seen from ``now``), or those after ``after`` when given (at it, for a once schedule).
    The interval anchor is ``after``, else ``now``. The times are the nominal slots: a jitter's offsets
    depend on the task."""
    anchor = after or now
    parts = _given_schedules(
        value, timezone=timezone, now=now, anchor=anchor, once=False, check_past=True, start_at=None,
        end_at=None,
    )  # fmt: skip
    schedule = combine(parts, None)
    check_jitter(schedule, jitter, now)
    first = first_fire(schedule, now=now)
    text = parts[0][0]
    require_a_run(SchedulePlan(text=text, kind=schedule.kind, anchor_at=anchor, next_run_at=first))
    if after is not None:
        times = fire_times(schedule, after, count, inclusive=schedule.kind == "once")
    elif first is None:
        times = []
    else:
        times = [first, *fire_times(schedule, first, count - 1)]
    sources = [slot_of(schedule, t)[1] or text for t in times]
    return SchedulePreview(text=text, kind=schedule.kind, fire_times=times, sources=sources)


def stored_schedule_text(task: TaskToPlan) -> str:
    """A stored task's schedule text as the parser reads it today: interval units were case-insensitive
    before, so a stored ``5M`` is read as ``5m``."""
    return task.schedule.lower() if task.schedule_kind == "interval" else task.schedule


def stored_schedules(task: Task) -> str | list[str]:
    """A stored task's schedule as :func:`plan_schedule` takes it: its text, or the list of several."""
    return list(task.schedules) if task.schedules else stored_schedule_text(task)


def task_schedule(task: TaskToPlan) -> Schedule:
    """The parsed schedule of a stored task (its text was validated when stored): with several schedules
    or a jitter, a :class:`CombinedSchedule` of real fire times."""
    texts = task.schedules or [stored_schedule_text(task)]
    parts = [(text, parse_schedule(text, timezone=task.timezone, anchor=task.anchor_at)) for text in texts]
    jitter = timedelta(milliseconds=task.jitter_ms) if task.jitter_ms else None
    return combine(parts, jitter, task.id)


def task_first_fire(task: Task, now: datetime) -> datetime | None:
    """The stored task's next run seen from ``now`` (by its schedule, jitter and bounds)."""
    return first_fire(
        task_schedule(task), now=now, start_at=task.start_at, end_at=task.end_at, max_runs=task.max_runs,
        run_count=task.run_count,
    )  # fmt: skip


def upcoming_runs(task: Task, count: int, *, after: datetime | None = None) -> list[datetime]:
    """Up to ``count`` fire times of ``task``: from its ``next_run_at`` on (an overdue slot included), or
    the ones strictly after ``after`` when given. Only active tasks have any; end_at and max_runs hold."""
    if task.status != "active" or task.next_run_at is None or count <= 0:
        return []
    if task.max_runs is not None:
        count = min(count, task.max_runs - task.run_count)
    schedule = task_schedule(task)
    fire: datetime | None = task.next_run_at
    if after is not None and task.next_run_at <= after:
        fire = schedule.next_after(after)
    times: list[datetime] = []
    while fire is not None and len(times) < count:
        if task.end_at is not None and fire > task.end_at:
            break
        times.append(fire)
        fire = schedule.next_after(fire)
    return times


def local_time_label(at: datetime, zone: ZoneInfo) -> str:
    """A fire time in the task's zone with its abbreviation (``2026-03-29 03:00:00 CEST``): how
    ``scheduler:validate`` and the web console show local times."""
    return at.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %Z")


def clock_change_notes(times: list[datetime], zone: ZoneInfo) -> list[str | None]:
    """For each fire time, a note when the zone's UTC offset differs from the previous fire time's (a DST
    change, or another clock change, lies between them), else None."""
    notes: list[str | None] = []
    previous = None
    for at in times:
        local = at.astimezone(zone)
        changed = previous is not None and local.utcoffset() != previous.utcoffset()
        notes.append(f"clock change before this run: {previous:%Z} -> {local:%Z}" if changed else None)
        previous = local
    return notes
