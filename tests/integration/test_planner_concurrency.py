"""Invariant 2 under attack: concurrent planners and a crash mid-tick never double a slot."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from planner_support import (
    RecordingPublisher,
    ago,
    executions_of,
    get_task,
    make_service,
    make_settings,
)
from sqlalchemy import Engine, update

import scheduler.planning.batch as batch_module
from scheduler.planning.planner import Planner
from scheduler.records import TickReport
from scheduler.settings import Settings
from scheduler.storage.tables import tasks


def _due_tasks(engine: Engine, settings: Settings, count: int, schedule: str) -> list[int]:
    """``count`` tasks on ``schedule``, all due at one slot a second before they were created."""
    service = make_service(engine, settings)
    slot = ago(engine, seconds=1)
    ids = [service.create_task(name=f"c{i}", command="test:echo", schedule=schedule).id for i in range(count)]
    with engine.begin() as connection:  # one statement for all, as set_task does for one
        connection.execute(update(tasks).where(tasks.c.id.in_(ids)).values(next_run_at=slot, anchor_at=slot))
    return ids


def _tick_concurrently(planners: list[Planner], seconds: float) -> list[TickReport]:
    """Every planner ticks in its own thread, back to back, for ``seconds``; returns all reports."""
    reports: list[TickReport] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(planners))
    deadline = time.monotonic() + seconds

    def loop(planner: Planner) -> None:
        start.wait()
        try:
            while time.monotonic() < deadline:
                reports.append(planner.tick())
        except BaseException as error:  # surfaced below: a failing thread must fail the test
            errors.append(error)

    threads = [threading.Thread(target=loop, args=(planner,)) for planner in planners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return reports


def test_two_leased_planners_ticking_concurrently_plan_each_slot_once(engine: Engine) -> None:
    settings = make_settings(planner_batch_size=20)
    ids = _due_tasks(engine, settings, 200, "1h")
    planners = [Planner(engine, settings, RecordingPublisher(), holder=h) for h in ("p1", "p2")]

    reports = _tick_concurrently(planners, 1.5)

    rows = executions_of(engine)
    assert len(rows) == 200 and {r.task_id for r in rows} == set(ids)
    assert sum(r.created for r in reports) == 200
    assert sum(1 for r in reports if r.leader and r.created) >= 1
    leaders = {p.holder for p in planners if p.lease.term is not None}
    assert len(leaders) == 1  # one leader; the other stood by


@pytest.mark.parametrize("planners", [2, 4])
def test_planners_without_leadership_still_plan_each_slot_exactly_once(engine: Engine, planners: int) -> None:
    settings = make_settings(planner_batch_size=25)
    ids = _due_tasks(engine, settings, 100, "1s")  # every second: the planners keep racing for new slots
    group = [
        Planner(engine, settings, RecordingPublisher(), holder=f"p{i}", require_lease=False)
        for i in range(planners)
    ]

    reports = _tick_concurrently(group, 3.0)

    rows = executions_of(engine)
    print(f"\n{planners} planners without a lease: {len(reports)} ticks, {len(rows)} executions")
    slots = Counter((r.task_id, r.scheduled_for) for r in rows)
    assert max(slots.values()) == 1
    assert sum(r.created for r in reports) == sum(1 for r in rows if r.status not in ("skipped", "cancelled"))
    for task_id in ids:
        mine = [r for r in rows if r.task_id == task_id]
        times = [r.scheduled_for for r in mine]
        # Every slot from the first to the last exactly once (run, or recorded as missed): no gap, no double.
        assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(times))
        task = get_task(engine, task_id)
        assert task.run_count == sum(1 for r in mine if r.status != "skipped")
        assert task.next_run_at == times[-1] + timedelta(seconds=1)


def test_a_crash_mid_tick_leaves_nothing_half_done(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings()
    (task_id,) = _due_tasks(engine, settings, 1, "1h")
    planner = Planner(engine, settings, RecordingPublisher())
    before = get_task(engine, task_id)

    def crash(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("planner process died here")

    monkeypatch.setattr(batch_module, "advance_tasks", crash)
    with pytest.raises(RuntimeError):
        planner.tick()
    assert executions_of(engine, task_id) == []  # the inserts rolled back with the failed advance
    assert get_task(engine, task_id).next_run_at == before.next_run_at

    monkeypatch.undo()
    report = planner.tick()

    assert report.created == 1 and len(executions_of(engine, task_id)) == 1
