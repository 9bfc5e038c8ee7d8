"""What the planner does with one due task: which slots run, which are skipped, and where the task goes next.

Pure: no I/O, no clock (``now`` is the database clock, passed in). The planner calls :func:`plan_task` for
every task whose ``next_run_at <= now`` and writes the result in one transaction.

Rules (docs/semantics.md):

- **Due slots** are the task's slots from ``next_run_at`` up to ``now`` (and never after ``end_at``).
- **Grace**: with ``misfire_grace_ms`` set, a due slot is on time when ``now - slot <= grace``. By default the
  grace of a slot is the gap to the following slot, capped at one hour; so only the latest due slot can be on
  time (when no older than that gap and at most an hour old).
- **Misfire** (slots that are due but not on time): ``skip`` records them all ``skipped``/``misfired``;
  ``run_once`` runs the latest one (trigger ``catchup``) and records the rest; ``run_all`` runs them oldest
  first, at most :data:`MAX_RUNS_PER_TICK` per tick (``next_run_at`` then stays at the first one not run, so
  the next tick continues). On-time slots always run (trigger ``schedule``).
- **Many missed slots** are never iterated one by one: the first :data:`MAX_SKIPPED_ROWS` get a row each, the
  rest one summary row (see :func:`summary_result`), and the next slot is computed directly from ``now``.
- **Overlap** (``has_active``: the task has a pending/queued/running/retrying execution): ``forbid`` records
  runs as ``skipped``/``overlap`` (and keeps at most one run per tick); ``replace`` keeps only the newest run
  (older runs of this tick are recorded ``cancelled``/``replaced``; the planner cancels the active ones).
- **Calendars** (``excluded``: a slot's reason to be left out, from the task's exclusion calendars): a run
  whose slot is excluded is recorded ``skipped``/``excluded`` with the reason (naming the calendar) before
  the overlap policy sees it, so it neither runs, nor counts towards ``max_runs``, nor blocks another run.
- **Bounds**: a task past ``end_at``, one that reached ``max_runs`` and a once task whose slot was skipped
  become ``completed``; a once task whose slot runs stays ``active`` (no next run) until that run ends it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from scheduler.records import TaskToPlan, iso_utc
from scheduler.rules.schedules import IntervalSchedule, Schedule

MAX_RUNS_PER_TICK = 100  # per task: run_all catch-up and on-time slots (Kubernetes' CronJob cap)
MAX_SKIPPED_ROWS = 10  # individual misfired rows per task and tick; the rest go into one summary row
DEFAULT_GRACE_CAP = timedelta(hours=1)
COUNT_BUDGET = 200  # next_after calls spent counting a summary's slots exactly before extrapolating
_PROBE_LIMIT = 10_000
_INSTANT = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class PlannedSlot:
    """One execution row to insert: ``status`` is ``pending`` (to run), ``skipped`` or ``cancelled``."""

    scheduled_for: datetime
    trigger: str = "schedule"
    status: str = "pending"
    reason: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class TaskPlan:
    """The outcome for one due task: rows to insert and the task's next state."""

    slots: tuple[PlannedSlot, ...]
    next_run_at: datetime | None
    # Set: the task becomes ``completed`` with this status_reason. Never set for a once slot that runs: the
    # outcome of that run ends the task (scheduler.storage.task_outcomes).
    completed_reason: str | None
    misfired: int  # slots missed beyond grace (summarised ones included), whatever the policy did with them
    runs: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "runs", sum(1 for s in self.slots if s.status == "pending"))


def _enumerate(
    schedule: Schedule, first: datetime, upto: datetime, limit: int
) -> tuple[list[datetime], bool, datetime | None]:
    """Slots from ``first`` (itself a slot) to ``upto`` inclusive, at most ``limit``: (slots, truncated, the
    first slot after them or None when the schedule has no more), each slot computed once."""
    slots: list[datetime] = []
    slot: datetime | None = first
    while slot is not None and slot <= upto:
        if len(slots) == limit:
            return slots, True, slot
        slots.append(slot)
        slot = schedule.next_after(slot)
    return slots, False, slot


def latest_slot_before(schedule: Schedule, bound: datetime, floor: datetime) -> datetime:
    """The latest slot ``< bound``, given that ``floor`` is a slot ``< bound``.

    Probes backwards from ``bound`` with doubling steps instead of walking forward from ``floor``, so the cost
    is logarithmic in the distance (a slot 98 days back costs ~25 calls, not 141,000).
    """
    step = timedelta(seconds=1)
    while True:
        probe = bound - step
        start = floor if probe <= floor else schedule.next_after(probe, inclusive=True)
        if start is not None and start < bound:
            last = start
            for _ in range(_PROBE_LIMIT):
                following = schedule.next_after(last)
                if following is None or following >= bound:
                    break
                last = following
            return last
        if probe <= floor:  # cannot happen for a floor < bound; stay total rather than loop
            return floor
        step *= 2


def count_slots(schedule: Schedule, first: datetime, before: datetime) -> tuple[int, bool]:
    """How many slots lie in ``[first, before)`` (``first`` a slot); (count, exact).

    Exact for intervals (arithmetic) and for up to :data:`COUNT_BUDGET` slots; beyond that the count is
    extrapolated from the average gap of the slots seen, and ``exact`` is False.
    """
    if before <= first:
        return 0, True
    if isinstance(schedule, IntervalSchedule):
        steps, rest = divmod(before - first, schedule.every)
        return steps + (1 if rest else 0), True
    seen, truncated, _ = _enumerate(schedule, first, before, COUNT_BUDGET)
    seen = [slot for slot in seen if slot < before]
    if not truncated or len(seen) < 2:
        return len(seen), True
    average_gap = (seen[-1] - seen[0]) / (len(seen) - 1)
    return max(len(seen), round((before - first) / average_gap)), False


def summary_result(count: int, first: datetime, before: datetime, exact: bool) -> dict[str, Any]:
    """The ``result`` of a summary row: ``misfired`` slots in ``[first, before)``, estimated if not exact."""
    return {"misfired": count, "first": iso_utc(first), "before": iso_utc(before), "exact": exact}


def default_grace_on_time(now: datetime, latest_due: datetime, following: datetime | None) -> bool:
    """Default grace of the latest due slot: the gap to the ``following`` slot, at most an hour.

    (Every earlier due slot is followed by a due slot, so it is always later than its gap: missed.)
    """
    grace = DEFAULT_GRACE_CAP if following is None else min(DEFAULT_GRACE_CAP, following - latest_due)
    return now - latest_due <= grace


@dataclass(slots=True)
class _Split:
    missed: list[datetime]  # the first missed slots (all of them unless ``missed_more``)
    missed_more: bool  # further missed slots exist after ``missed`` and before ``missed_end``
    missed_end: datetime  # exclusive bound of the missed slots: the first slot that is not missed
    on_time: list[datetime]  # at most MAX_RUNS_PER_TICK + 1
    following: datetime | None  # first slot after the on-time ones (None: the schedule has no more)


def _split(schedule: Schedule, task: TaskToPlan, now: datetime, enum_limit: int) -> _Split:
    first = task.next_run_at
    assert first is not None
    upto = now if task.end_at is None else min(now, task.end_at)
    after_upto = upto + _INSTANT
    due, truncated, after_due = _enumerate(schedule, first, upto, enum_limit)
    grace = None if task.misfire_grace_ms is None else timedelta(milliseconds=task.misfire_grace_ms)
    if not truncated:
        following = after_due
        if grace is None:
            on_time = due[-1:] if default_grace_on_time(now, due[-1], following) else []
        else:
            on_time = [slot for slot in due if now - slot <= grace]
        missed = due[: len(due) - len(on_time)]
        end = on_time[0] if on_time else (following or after_upto)
        return _Split(missed, False, end, on_time, following)
    # Too many due slots to walk one by one: jump to the tail instead of iterating up to now.
    boundary: datetime | None
    if grace is None:
        latest = latest_slot_before(schedule, after_upto, due[-1])
        following = schedule.next_after(latest)
        boundary = latest if default_grace_on_time(now, latest, following) else following
    else:
        boundary = schedule.next_after(max(now - grace, first), inclusive=True)
    missed = [slot for slot in due if boundary is None or slot < boundary]
    missed_more = (
        len(missed) == len(due) and after_due is not None and (boundary is None or after_due < boundary)
    )
    on_time = []
    following = boundary
    if boundary is not None and boundary <= upto:
        on_time, _, following = _enumerate(schedule, boundary, upto, MAX_RUNS_PER_TICK + 1)
    end = boundary if boundary is not None and boundary <= after_upto else after_upto
    return _Split(missed, missed_more, end, on_time, following)


def _skipped_rows(
    schedule: Schedule, slots: list[datetime], more_before: datetime | None
) -> tuple[list[PlannedSlot], int]:
    """Rows for missed ``slots`` and, when ``more_before`` is set, every later slot before it; (rows, count).

    The first :data:`MAX_SKIPPED_ROWS` slots get a row each; one summary row at the next slot stands for the
    rest.
    """
    # A summary standing for one slot would only hide it: one more individual row instead.
    single = more_before is None and len(slots) == MAX_SKIPPED_ROWS + 1
    individual = MAX_SKIPPED_ROWS + 1 if single else MAX_SKIPPED_ROWS
    rows = [PlannedSlot(s, status="skipped", reason="misfired") for s in slots[:individual]]
    rest = slots[individual:]
    if not rest:
        return rows, len(rows)
    if more_before is None:
        count, exact = len(rest), True
        before = schedule.next_after(rest[-1]) or rest[-1] + timedelta(microseconds=1)
    else:
        before = more_before
        count, exact = count_slots(schedule, rest[0], before)
    words = f"{count} {'slot was' if count == 1 else 'slots were'} missed" + ("" if exact else " (estimated)")
    rows.append(
        PlannedSlot(
            rest[0],
            status="skipped",
            reason="misfired",
            result=summary_result(count, rest[0], before, exact),
            error=f"{words} from {iso_utc(rest[0])} until before {iso_utc(before)}; this row stands for all",
        )
    )
    return rows, len(rows) - 1 + count


def _apply_overlap(task: TaskToPlan, runs: list[PlannedSlot], has_active: bool) -> list[PlannedSlot]:
    if task.overlap_policy == "forbid":
        keep = 0 if has_active else 1
        return runs[:keep] + [
            PlannedSlot(
                r.scheduled_for, r.trigger, "skipped", "overlap", error="previous execution still active"
            )
            for r in runs[keep:]
        ]
    if task.overlap_policy == "replace" and len(runs) > 1:
        older = [
            PlannedSlot(r.scheduled_for, r.trigger, "cancelled", "replaced", error="replaced by a newer slot")
            for r in runs[:-1]
        ]
        return [*older, runs[-1]]
    return runs


def _apply_calendars(
    runs: list[PlannedSlot], excluded: Callable[[datetime], str | None] | None
) -> tuple[list[PlannedSlot], list[PlannedSlot]]:
    """(runs kept, runs recorded ``skipped``/``excluded`` with the reason as their error)."""
    if excluded is None:
        return runs, []
    kept: list[PlannedSlot] = []
    left_out: list[PlannedSlot] = []
    for run in runs:
        reason = excluded(run.scheduled_for)
        if reason is None:
            kept.append(run)
        else:
            left_out.append(PlannedSlot(run.scheduled_for, run.trigger, "skipped", "excluded", error=reason))
    return kept, left_out


def plan_task(
    task: TaskToPlan,
    schedule: Schedule,
    now: datetime,
    *,
    has_active: bool = False,
    excluded: Callable[[datetime], str | None] | None = None,
) -> TaskPlan:
    """Decide what a due task (``next_run_at <= now``) does this tick; see the module docstring for the rules.

    ``schedule`` is the task's parsed schedule; ``has_active`` whether the task has an execution that is
    pending, queued, running or retrying (read only for the ``forbid`` and ``replace`` overlap policies);
    ``excluded`` says why a slot is left out by the task's calendars (None: it runs).
    """
    first = task.next_run_at
    if first is None or first > now:
        raise ValueError(f"task {task.id} is not due at {now}")
    remaining = None if task.max_runs is None else task.max_runs - task.run_count
    if remaining is not None and remaining <= 0:
        return TaskPlan((), None, "max_runs reached", 0)
    if task.end_at is not None and first > task.end_at:
        return TaskPlan((), None, "end_at passed", 0)
    run_all = task.misfire_policy == "run_all"
    split = _split(schedule, task, now, MAX_RUNS_PER_TICK + 1 if run_all else MAX_SKIPPED_ROWS + 2)
    following, on_time = split.following, split.on_time
    skipped: list[PlannedSlot] = []
    runs: list[PlannedSlot] = []
    misfired = 0
    if split.missed and run_all:
        runs = [PlannedSlot(s, trigger="catchup") for s in split.missed[:MAX_RUNS_PER_TICK]]
        misfired = len(runs)
        if len(split.missed) > MAX_RUNS_PER_TICK:  # continue with the rest next tick, oldest first
            following, on_time = split.missed[MAX_RUNS_PER_TICK], []
    elif split.missed and task.misfire_policy == "run_once":
        if split.missed_more:
            latest = latest_slot_before(schedule, split.missed_end, split.missed[-1])
            skipped, misfired = _skipped_rows(schedule, split.missed, latest)
        else:
            latest = split.missed[-1]
            skipped, misfired = _skipped_rows(schedule, split.missed[:-1], None)
        runs = [PlannedSlot(latest, trigger="catchup")]
        misfired += 1
    elif split.missed:
        more_before = split.missed_end if split.missed_more else None
        skipped, misfired = _skipped_rows(schedule, split.missed, more_before)
    room = MAX_RUNS_PER_TICK - len(runs)
    if len(on_time) > room:
        following, on_time = on_time[room], on_time[:room]
    runs, left_out = _apply_calendars(runs + [PlannedSlot(s) for s in on_time], excluded)
    skipped += left_out
    runs = _apply_overlap(task, runs, has_active)
    completed = None
    if remaining is not None and sum(1 for r in runs if r.status == "pending") >= remaining:
        kept: list[PlannedSlot] = []
        for run in runs:
            if run.status == "pending":
                if remaining == 0:
                    continue
                remaining -= 1
            kept.append(run)
        runs, following, completed = kept, None, "max_runs reached"
    elif following is None:
        completed = "its only slot was skipped" if schedule.kind == "once" else "schedule ended"
    elif task.end_at is not None and following > task.end_at:
        following, completed = None, "end_at passed"
    if schedule.kind == "once" and any(r.status == "pending" for r in runs):
        completed = None  # it stays active until its run ends it, completed or failed (task_outcomes)
    slots = sorted([*skipped, *runs], key=lambda s: s.scheduled_for)
    return TaskPlan(tuple(slots), following, completed, misfired)
