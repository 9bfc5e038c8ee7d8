"""Several schedules and a jitter, seen as one schedule of *real* fire times.

Pure. A task's *nominal slots* are the union of its schedules' fire times (an instant two schedules share is
one slot, credited to the first schedule that has it). With a jitter, each nominal slot runs at
``slot + offset(task, slot)``, the offset a hash of the task id and the slot in ``[0, jitter)``: every planner
and every restart computes the same real time, and the execution row keeps the nominal slot, so the unique
``(task_id, scheduled_for)`` constraint still holds one row per slot. A jitter is never longer than the
shortest gap between slots (:func:`shortest_gap`), so real times keep the slots' order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from scheduler.records import iso_utc
from scheduler.rules.schedules import BasicSchedule, Schedule

GAP_SLOTS = 1000  # slots :func:`shortest_gap` looks at
GAP_SPAN = timedelta(days=400)  # ... within this span (a year of DST changes)


def jitter_offset(task_id: int, slot: datetime, jitter: timedelta) -> timedelta:
    """The deterministic offset of ``slot`` of task ``task_id``: whole milliseconds in ``[0, jitter)``."""
    span_ms = int(jitter / timedelta(milliseconds=1))
    if span_ms <= 0:
        return timedelta(0)
    digest = hashlib.sha256(f"{task_id}|{iso_utc(slot)}".encode()).digest()
    return timedelta(milliseconds=int.from_bytes(digest[:8], "big") % span_ms)


@dataclass(frozen=True, slots=True)
class CombinedSchedule:
    """The real fire times of ``parts`` (schedule text, parsed schedule) with ``jitter`` for task ``task_id``.

    ``next_after`` answers in real times (what the planner waits for and ``next`` shows); :meth:`nominal`
    maps a real time back to its slot and :meth:`source` names the schedule that produced a slot.
    """

    parts: tuple[tuple[str, BasicSchedule], ...]
    jitter: timedelta = timedelta(0)
    task_id: int = 0

    @property
    def kind(self) -> Literal["cron", "interval", "once", "manual"]:
        return self.parts[0][1].kind

    def next_slot(self, t: datetime, *, inclusive: bool = False) -> datetime | None:
        """The first nominal slot after ``t`` (at it when ``inclusive``) of any of the schedules."""
        times = [s for _, schedule in self.parts if (s := schedule.next_after(t, inclusive=inclusive))]
        return min(times) if times else None

    def offset(self, slot: datetime) -> timedelta:
        return jitter_offset(self.task_id, slot, self.jitter)

    def next_after(self, t: datetime, *, inclusive: bool = False) -> datetime | None:
        """The first real fire time after ``t`` (at it when ``inclusive``), in UTC."""
        if not self.jitter:
            return self.next_slot(t, inclusive=inclusive)
        slot = self.next_slot(t - self.jitter, inclusive=True)
        while slot is not None:
            real = slot + self.offset(slot)
            if real > t or (inclusive and real == t):
                return real
            slot = self.next_slot(slot)
        return None

    def nominal(self, real: datetime) -> datetime:
        """The slot whose real fire time is ``real`` (``real`` itself when it is no such time)."""
        if not self.jitter:
            return real
        slot = self.next_slot(real - self.jitter, inclusive=True)
        while slot is not None and slot <= real:
            if slot + self.offset(slot) == real:
                return slot
            slot = self.next_slot(slot)
        return real

    def source(self, slot: datetime) -> str:
        """The text of the first schedule that fires at nominal ``slot``."""
        for text, schedule in self.parts:
            if schedule.next_after(slot, inclusive=True) == slot:
                return text
        return self.parts[0][0]


def shortest_gap(schedule: Schedule, start: datetime) -> timedelta | None:
    """The shortest gap between consecutive nominal slots from ``start`` on (at most :data:`GAP_SLOTS`
    slots within :data:`GAP_SPAN`); None when fewer than two slots come."""
    step = schedule.next_slot if isinstance(schedule, CombinedSchedule) else schedule.next_after
    previous = step(start, inclusive=True)
    shortest: timedelta | None = None
    for _ in range(GAP_SLOTS):
        if previous is None:
            break
        following = step(previous)
        if following is None or following - start > GAP_SPAN:
            break
        gap = following - previous
        shortest = gap if shortest is None else min(shortest, gap)
        previous = following
    return shortest


def slot_of(schedule: Schedule, real: datetime) -> tuple[datetime, str | None]:
    """(nominal slot, producing schedule's text) of real fire time ``real``; the text is None for a plain
    schedule (the task's only one)."""
    if isinstance(schedule, CombinedSchedule):
        slot = schedule.nominal(real)
        return slot, schedule.source(slot)
    return real, None
