"""``Planner.run_forever``: ticks until stopped, outlives database and broker outages, releases the lease."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable

import pytest
from planner_support import (
    RecordingPublisher,
    ago,
    executions_of,
    make_service,
    make_settings,
    now_of,
    set_task,
)
from sqlalchemy import Engine

from scheduler.planning.planner import Planner
from scheduler.storage.db import make_engine
from scheduler.storage.leases import read_lease


def _wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_the_loop_dispatches_due_work_and_releases_the_lease_when_stopped(engine: Engine) -> None:
    settings = make_settings(tick_interval=50)
    task = make_service(engine, settings).create_task(name="looped", command="test:echo", schedule="1h")
    slot = ago(engine, seconds=1)
    set_task(engine, task.id, next_run_at=slot, anchor_at=slot)
    publisher = RecordingPublisher()
    planner = Planner(engine, settings, publisher, holder="looper")
    stop = threading.Event()
    thread = threading.Thread(target=planner.run_forever, args=(stop,))
    thread.start()
    try:
        assert _wait_for(lambda: len(publisher.ids) == 1)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert [r.status for r in executions_of(engine, task.id)] == ["queued"]
    with engine.connect() as connection:
        lease = read_lease(connection)
    assert lease is not None and lease.holder == "looper" and lease.expires_at <= now_of(engine)


def test_the_loop_keeps_running_while_the_database_is_unreachable(caplog: pytest.LogCaptureFixture) -> None:
    unreachable = make_engine("postgresql+psycopg2://postgres@127.0.0.1:1/nothing")
    planner = Planner(unreachable, make_settings(tick_interval=50), RecordingPublisher())
    stop = threading.Event()
    thread = threading.Thread(target=planner.run_forever, args=(stop,))
    with caplog.at_level(logging.ERROR, logger="scheduler.planning.planner"):
        thread.start()
        time.sleep(1.5)
        assert thread.is_alive()
        stop.set()
        thread.join(timeout=15)
    assert not thread.is_alive()
    failures = [r.getMessage() for r in caplog.records if "tick failed" in r.getMessage()]
    assert len(failures) == 1  # one line for the outage, not one per retry
    assert all("\n" not in line for line in failures)
    unreachable.dispose()


def test_a_broker_outage_is_logged_once_and_nothing_is_lost(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tick_interval=50)
    task = make_service(engine, settings).create_task(name="outage", command="test:echo", schedule="1h")
    slot = ago(engine, seconds=1)
    set_task(engine, task.id, next_run_at=slot, anchor_at=slot)
    publisher = RecordingPublisher()
    publisher.fail = True
    planner = Planner(engine, settings, publisher)

    with caplog.at_level(logging.ERROR, logger="scheduler.planning.planner"):
        for _ in range(5):
            planner.tick()
    assert sum("publishing failed" in r.getMessage() for r in caplog.records) == 1
    assert [r.status for r in executions_of(engine, task.id)] == ["pending"]

    publisher.fail = False
    planner.tick()
    assert [r.status for r in executions_of(engine, task.id)] == ["queued"]


def test_the_loop_freezes_the_start_up_heap_before_its_first_tick(engine: Engine) -> None:
    # scheduler:planner and scheduler:serve both run this loop: what start-up built is moved out of the cyclic
    # collector's reach once, so a burst's full collections do not traverse it again.
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    stop = threading.Event()
    stop.set()  # the loop freezes, then finds it must stop before its first tick
    try:
        Planner(engine, make_settings(tick_interval=50), RecordingPublisher()).run_forever(stop)
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
