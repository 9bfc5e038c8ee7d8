"""Backfills, per-run data, timed pauses and skips through the Python API and the planner, both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from planner_support import (
    RecordingPublisher,
    ago,
    executions_of,
    get_task,
    make_service,
    make_settings,
    set_task,
)
from sqlalchemy import Engine, func, select, update

from scheduler.errors import InvalidField
from scheduler.planning.planner import Planner
from scheduler.storage.runs import run_data
from scheduler.storage.tables import backfills, executions


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def finish(engine: Engine, ids: list[int], status: str = "completed") -> None:
    with engine.begin() as connection:
        connection.execute(
            update(executions).where(executions.c.id.in_(ids)).values(status=status, finished_at=func.now())
        )


def stored_backfills(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(backfills)).scalar_one())


# A fall-back night: each slot once, the repeated hour's two real instants both (an hourly job), a daily job
# at a repeated wall time once (cronie: the first of the two).
DST_CASES = [
    (
        "30 * * * *", "Europe/Berlin", "2026-10-24T22:00:00", "2026-10-25T04:00:00",
        ["2026-10-24T22:30:00", "2026-10-24T23:30:00", "2026-10-25T00:30:00", "2026-10-25T01:30:00",
         "2026-10-25T02:30:00", "2026-10-25T03:30:00"],
    ),
    ("30 2 * * *", "Europe/Berlin", "2026-10-24T00:00:00", "2026-10-26T23:59:00",
     ["2026-10-24T00:30:00", "2026-10-25T00:30:00", "2026-10-26T01:30:00"]),
    ("30 1 * * *", "America/New_York", "2026-10-31T00:00:00", "2026-11-02T12:00:00",
     ["2026-10-31T05:30:00", "2026-11-01T05:30:00", "2026-11-02T06:30:00"]),
    (
        "*/30 1 * * *", "America/New_York", "2026-11-01T04:00:00", "2026-11-01T07:00:00",
        ["2026-11-01T05:00:00", "2026-11-01T05:30:00"],  # a fixed hour: the repeated 01:xx runs once
    ),
]  # fmt: skip


@pytest.mark.parametrize(("schedule", "zone", "start", "end", "expected"), DST_CASES)
def test_a_backfill_over_a_fall_back_night_covers_each_slot_once(
    engine: Engine, schedule: str, zone: str, start: str, end: str, expected: list[str]
) -> None:
    service = make_service(engine, make_settings())
    task = service.create_task(name="dst", command="test:echo", schedule=schedule, timezone=zone)

    preview = service.preview_backfill(task.id, start=utc(start), end=utc(end))
    backfill = service.backfill(task.id, start=utc(start), end=utc(end), max_parallel=2)

    assert [slot.at for slot in preview] == [utc(t) for t in expected]
    assert all(slot.execution_id is None for slot in preview)
    rows = executions_of(engine, task.id)
    assert sorted(r.scheduled_for for r in rows) == [utc(t) for t in expected]
    assert {(r.trigger, r.status, r.backfill_id) for r in rows} == {("backfill", "waiting", backfill.id)}
    assert (backfill.slots, backfill.created, backfill.status) == (len(expected), len(expected), "running")


def test_the_preview_notes_the_repeated_hour_and_the_offset_change(engine: Engine) -> None:
    service = make_service(engine, make_settings())
    task = service.create_task(
        name="berlin", command="test:echo", schedule="30 * * * *", timezone="Europe/Berlin"
    )

    preview = service.preview_backfill(
        task.id, start=utc("2026-10-25T00:00:00"), end=utc("2026-10-25T02:00:00")
    )

    assert [(s.local, s.dst_note) for s in preview] == [
        ("2026-10-25 02:30:00 CEST (+02:00)", "first of two 02:30 (clocks go back)"),
        ("2026-10-25 02:30:00 CET (+01:00)",
         "second of two 02:30 (clocks go back); clock change before this run: CEST -> CET"),
    ]  # fmt: skip


def test_a_repeated_backfill_is_a_no_op_and_the_preview_shows_what_exists(engine: Engine) -> None:
    service = make_service(engine, make_settings())
    task = service.create_task(name="hourly", command="test:echo", schedule="0 * * * *")
    start, end = utc("2026-01-01T00:00:00"), utc("2026-01-01T03:00:00")
    first = service.backfill(task.id, start=start, end=end)

    again = service.backfill(task.id, start=start, end=end)
    preview = service.preview_backfill(task.id, start=start, end=end)

    assert (first.created, again.created, again.status) == (4, 0, "completed")
    assert len(executions_of(engine, task.id)) == 4
    assert [s.execution_status for s in preview] == ["waiting"] * 4
    assert {s.execution_id for s in preview} == {r.id for r in executions_of(engine, task.id)}
    assert [b.id for b in service.backfills(task=task.id)] == [again.id, first.id]
    actions = [entry.action for entry in service.audit(task=task.id)]
    assert actions[:2] == ["backfill", "backfill"]


def test_the_planner_releases_at_most_max_parallel_and_completes_the_backfill(engine: Engine) -> None:
    settings = make_settings()
    service = make_service(engine, settings)
    task = service.create_task(
        name="parallel",
        command="test:echo",
        schedule="0 * * * *",
        overlap_policy="allow",
        data={"a": 1, "b": 2},
    )
    backfill = service.backfill(
        task.id,
        start=utc("2026-01-01T00:00:00"),
        end=utc("2026-01-01T04:00:00"),
        max_parallel=2,
        data={"b": 3},
    )
    publisher = RecordingPublisher()
    planner = Planner(engine, settings, publisher)

    first = planner.tick()
    second = planner.tick()  # nothing finished: no room

    assert (first.released, second.released) == (2, 0)
    rows = executions_of(engine, task.id)
    assert sorted(publisher.ids) == sorted(r.id for r in rows if r.status == "queued")
    queued = sorted((r.scheduled_for, r.id) for r in rows if r.status == "queued")
    assert [at for at, _ in queued] == [utc("2026-01-01T00:00:00"), utc("2026-01-01T01:00:00")]
    assert all(r.data == {"b": 3} for r in rows)
    assert run_data(task.data, rows[0].data) == {"a": 1, "b": 3}

    for _ in range(2):
        finish(engine, [r.id for r in executions_of(engine, task.id) if r.status == "queued"])
        planner.tick()
    progress = service.get_backfill(backfill.id)
    assert progress.status == "running" and progress.progress == {"completed": 4, "queued": 1}
    finish(engine, [r.id for r in executions_of(engine, task.id) if r.status == "queued"])
    planner.tick()
    done = service.get_backfill(backfill.id)
    assert done.status == "completed" and done.finished_at is not None and done.progress == {"completed": 5}


def test_an_overlap_policy_other_than_allow_runs_one_at_a_time(engine: Engine) -> None:
    settings = make_settings()
    service = make_service(engine, settings)
    task = service.create_task(
        name="serial", command="test:echo", schedule="0 * * * *", overlap_policy="forbid"
    )
    service.backfill(
        task.id, start=utc("2026-01-01T00:00:00"), end=utc("2026-01-01T02:00:00"), max_parallel=5
    )
    planner = Planner(engine, settings, RecordingPublisher())

    assert planner.tick().released == 1
    assert planner.tick().released == 0
    finish(engine, [r.id for r in executions_of(engine, task.id) if r.status == "queued"])
    assert planner.tick().released == 1


def test_a_paused_task_holds_its_backfill_and_cancel_stops_what_has_not_started(engine: Engine) -> None:
    settings = make_settings()
    service = make_service(engine, settings)
    task = service.create_task(name="held", command="test:echo", schedule="0 * * * *", overlap_policy="allow")
    backfill = service.backfill(task.id, start=utc("2026-01-01T00:00:00"), end=utc("2026-01-01T03:00:00"))
    planner = Planner(engine, settings, RecordingPublisher())
    service.pause(task.id)
    assert planner.tick().released == 0
    service.resume(task.id)
    assert planner.tick().released == 1

    cancelled = service.cancel_backfill(backfill.id)

    assert cancelled.status == "cancelled"
    assert cancelled.progress == {"queued": 1, "cancelled": 3}
    assert service.cancel_backfill(backfill.id).status == "cancelled"
    assert planner.tick().released == 0
    assert service.audit(task=task.id)[0].action == "cancel-backfill"


BAD_BACKFILLS: list[tuple[str, dict[str, Any], str]] = [
    ("reversed", {"start": utc("2026-01-02T00:00:00"), "end": utc("2026-01-01T00:00:00")}, "reversed"),
    ("future", {"start": utc("2026-01-01T00:00:00"), "end": utc("2999-01-01T00:00:00")}, "in the future"),
    ("too many", {"start": utc("2000-01-01T00:00:00"), "end": utc("2026-01-01T00:00:00")}, "--force"),
    ("not an object", {"data": ["a"]}, "JSON object"),
    ("too big", {"data": {"x": "y" * 70_000}}, "bytes"),
    ("parallel", {"max_parallel": 0}, "max_parallel"),
]


@pytest.mark.parametrize(("case", "given", "words"), BAD_BACKFILLS, ids=[c[0] for c in BAD_BACKFILLS])
def test_bad_backfill_input_is_refused_and_nothing_is_stored(
    engine: Engine, case: str, given: dict[str, Any], words: str
) -> None:
    service = make_service(engine, make_settings())
    task = service.create_task(name="bad", command="test:echo", schedule="0 * * * *")
    arguments: dict[str, Any] = {
        "start": utc("2026-01-01T00:00:00"),
        "end": utc("2026-01-01T03:00:00"),
    } | given

    with pytest.raises(InvalidField, match=words):
        service.backfill(task.id, **arguments)

    assert stored_backfills(engine) == 0 and executions_of(engine, task.id) == []


def test_more_than_ten_thousand_slots_need_force(engine: Engine) -> None:
    service = make_service(engine, make_settings())
    task = service.create_task(name="minutely", command="test:echo", schedule="* * * * *")
    start, end = utc("2026-01-01T00:00:00"), utc("2026-01-08T00:00:00")  # 10,081 slots

    with pytest.raises(InvalidField, match="more than 10000"):
        service.preview_backfill(task.id, start=start, end=end)
    assert len(service.preview_backfill(task.id, start=start, end=end, force=True)) == 10_081


def test_run_data_is_stored_redacted_in_the_audit_and_bad_data_is_refused(engine: Engine) -> None:
    service = make_service(engine, make_settings())
    task = service.create_task(name="data", command="test:echo", schedule="manual", data={"a": 1})

    execution = service.run_task_now(task.id, data={"b": 2, "api_token": "s3cret"})

    assert execution.data == {"b": 2, "api_token": "s3cret"}
    assert service.get_execution(execution.id).data == {"b": 2, "api_token": "s3cret"}
    run_entry = service.audit(task=task.id)[0]
    assert run_entry.action == "run" and run_entry.after is not None
    assert run_entry.after["data"] == {"b": 2, "api_token": "***"}
    for bad in (["x"], {"x": "y" * 70_000}):
        with pytest.raises(InvalidField, match="data"):
            service.run_task_now(task.id, data=bad)  # type: ignore[arg-type]
    assert len(executions_of(engine, task.id)) == 1


def test_a_timed_pause_is_lifted_by_the_planner_without_replaying_the_paused_span(engine: Engine) -> None:
    settings = make_settings()
    service = make_service(engine, settings)
    task = service.create_task(name="timed", command="test:echo", schedule="1m")
    now = ago(engine, seconds=0)
    paused = service.pause(task.id, reason="maintenance", until=now + timedelta(hours=1))
    assert paused[0].paused_until == now + timedelta(hours=1) and paused[0].status_reason == "maintenance"
    planner = Planner(engine, settings, RecordingPublisher())
    assert planner.tick().resumed == 0

    until = ago(engine, seconds=90)  # as if the hour had passed while the task was paused
    set_task(engine, task.id, paused_until=until, next_run_at=until - timedelta(hours=2))
    report = planner.tick()

    after = get_task(engine, task.id)
    assert report.resumed == 1 and after.status == "active" and after.paused_until is None
    assert after.status_reason is None
    rows = executions_of(engine, task.id)
    assert rows and min(r.scheduled_for for r in rows) >= until  # nothing of the paused span ran
    entry = service.audit(task=task.id)[0]
    assert (entry.action, entry.actor) == ("resume", "planner")


def test_a_pause_until_the_past_is_refused(engine: Engine) -> None:
    service = make_service(engine, make_settings())
    task = service.create_task(name="past", command="test:echo", schedule="1m")

    with pytest.raises(InvalidField, match="until"):
        service.pause(task.id, until=ago(engine, seconds=5))

    assert get_task(engine, task.id).status == "active"


def test_skipped_slots_are_recorded_and_the_planner_moves_past_them(engine: Engine) -> None:
    settings = make_settings()
    service = make_service(engine, settings)
    task = service.create_task(name="skippy", command="test:echo", schedule="1m")
    slot = ago(engine, seconds=5)
    set_task(engine, task.id, next_run_at=slot, anchor_at=slot)

    skipped = service.skip(task.id, count=2, note="holiday")
    more = service.skip(task.id)  # the next slot not skipped yet

    assert [e.scheduled_for for e in skipped] == [slot, slot + timedelta(minutes=1)]
    assert {(e.status, e.reason) for e in skipped + more} == {("skipped", "skipped_by_user")}
    assert skipped[0].error is not None and skipped[0].error.endswith(": holiday")
    assert more[0].scheduled_for == slot + timedelta(minutes=2)
    report = Planner(engine, settings, RecordingPublisher()).tick()
    assert report.created == 0
    assert get_task(engine, task.id).next_run_at == slot + timedelta(minutes=1)
    assert len(executions_of(engine, task.id)) == 3


def test_a_backfill_keeps_nominal_slots_of_several_jittered_schedules_and_leaves_excluded_days(
    engine: Engine,
) -> None:
    service = make_service(engine, make_settings())
    service.create_calendar("holiday", ["2026-10-25"])  # a Sunday, a Berlin day of 25 hours
    task = service.create_task(
        name="combined", command="test:echo", schedule=["0 9 * * *", "0 12 * * 6,0"],
        timezone="Europe/Berlin", jitter_ms=60_000, exclude=["holiday"], overlap_policy="allow",
    )  # fmt: skip
    start, end = utc("2026-10-24T00:00:00"), utc("2026-10-26T23:00:00")

    preview = service.preview_backfill(task.id, start=start, end=end)
    backfill = service.backfill(task.id, start=start, end=end)
    again = service.backfill(task.id, start=start, end=end)

    # Saturday 09:00 and 12:00 CEST, Sunday (excluded) 09:00 and 12:00 CET, Monday 09:00 CET: nominal slots.
    assert [(s.at, s.excluded is not None) for s in preview] == [
        (utc("2026-10-24T07:00:00"), False), (utc("2026-10-24T10:00:00"), False),
        (utc("2026-10-25T08:00:00"), True), (utc("2026-10-25T11:00:00"), True),
        (utc("2026-10-26T08:00:00"), False),
    ]  # fmt: skip
    assert preview[2].excluded is not None and "holiday" in preview[2].excluded
    rows = sorted(executions_of(engine, task.id), key=lambda r: r.scheduled_for)
    assert [(r.scheduled_for, r.schedule) for r in rows] == [
        (utc("2026-10-24T07:00:00"), "0 9 * * *"), (utc("2026-10-24T10:00:00"), "0 12 * * 6,0"),
        (utc("2026-10-26T08:00:00"), "0 9 * * *"),
    ]  # fmt: skip
    assert (backfill.slots, backfill.created, again.created) == (5, 3, 0)


def test_skipping_a_jittered_task_records_its_nominal_slots_so_the_planner_finds_them_taken(
    engine: Engine,
) -> None:
    settings = make_settings()
    service = make_service(engine, settings)
    task = service.create_task(name="jittery", command="test:echo", schedule="1m", jitter_ms=50_000)
    slot = ago(engine, seconds=120).replace(second=0, microsecond=0)
    set_task(engine, task.id, anchor_at=slot, next_run_at=slot)  # its real next run is slot + its offset
    real = service.next_runs(task=task.id, count=1)[0]
    set_task(engine, task.id, next_run_at=real.at)

    skipped = service.skip(task.id)
    Planner(engine, settings, RecordingPublisher()).tick()

    assert [e.scheduled_for for e in skipped] == [real.slot]
    assert [
        (r.scheduled_for, r.status) for r in executions_of(engine, task.id) if r.scheduled_for == real.slot
    ] == [(real.slot, "skipped")]
