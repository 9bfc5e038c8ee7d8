"""The watchdog's threads are reused across executions, and a reused one still interrupts on time."""

from __future__ import annotations

import threading
import time

import pytest

from workers.capture import LogBuffer
from workers.watchdog import ExecutionTimedOut, Watchdog


def _no_beat(_lines: object) -> bool:
    return True


def _watchdog_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "execution-watchdog"}


def test_consecutive_executions_reuse_watchdog_threads() -> None:
    with Watchdog(beat=_no_beat, buffer=LogBuffer(limit_bytes=4096), interval_s=10, deadline=None):
        pass
    time.sleep(0.05)
    before = len(_watchdog_threads())
    for _ in range(50):
        with Watchdog(beat=_no_beat, buffer=LogBuffer(limit_bytes=4096), interval_s=10, deadline=None):
            pass
    # An exit does not wait for its thread to go idle, so the next execution may take another one: a
    # couple at most, never one per execution.
    assert len(_watchdog_threads()) <= before + 2


def test_a_beat_in_progress_finishes_before_the_exit_returns() -> None:
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow_beat(_lines: object) -> bool:
        started.set()
        release.wait(5)
        finished.set()
        return True

    watchdog = Watchdog(beat=slow_beat, buffer=LogBuffer(limit_bytes=4096), interval_s=0.01, deadline=None)
    with watchdog:
        assert started.wait(5)
        threading.Timer(0.2, release.set).start()
    assert finished.is_set()  # __exit__ waited for the beat that was running


def test_a_reused_thread_beats_and_times_out_like_a_fresh_one() -> None:
    for _ in range(3):
        with Watchdog(beat=_no_beat, buffer=LogBuffer(limit_bytes=4096), interval_s=10, deadline=None):
            pass
    beats: list[int] = []

    def beat(lines: list) -> bool:  # type: ignore[type-arg]
        beats.append(len(lines))
        return True

    started = time.monotonic()
    with pytest.raises(ExecutionTimedOut):  # noqa: SIM117 - the exception must leave the watchdog block
        with Watchdog(beat=beat, buffer=LogBuffer(limit_bytes=4096), interval_s=0.05, deadline=started + 0.3):
            time.sleep(30)
    assert 0.25 < time.monotonic() - started < 3
    assert len(beats) >= 2


def test_concurrent_executions_each_get_their_own_watchdog_thread() -> None:
    inside = threading.Barrier(3)
    outcomes: list[str] = []

    def command() -> None:
        try:
            buffer = LogBuffer(limit_bytes=4096)
            with Watchdog(beat=_no_beat, buffer=buffer, interval_s=10, deadline=time.monotonic() + 0.5):
                inside.wait(5)
                while True:
                    time.sleep(0.01)
        except ExecutionTimedOut:
            outcomes.append("timed out")

    threads = [threading.Thread(target=command) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert outcomes == ["timed out"] * 3
