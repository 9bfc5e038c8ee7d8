"""The watchdog's threads: reused across executions, not woken by short ones, still on time when due."""

from __future__ import annotations

import os
import threading
import time

import pytest

from scheduler.execution import watchdog as watchdog_module
from scheduler.execution.capture import LogBuffer
from scheduler.execution.watchdog import Beat, ExecutionCancelled, ExecutionTimedOut, Watchdog


def _no_beat(_lines: object) -> bool:
    return True


def _watchdog(*, interval_s: float = 10, deadline: float | None = None, beat: Beat = _no_beat) -> Watchdog:
    return Watchdog(beat=beat, buffer=LogBuffer(limit_bytes=4096), interval_s=interval_s, deadline=deadline)


def _watchdog_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "execution-watchdog"}


def _wake_ups(threads: set[threading.Thread] | None = None) -> int:
    """How many times these (all) watchdog threads have blocked so far: each wake-up ends in one more."""
    total = 0
    for thread in _watchdog_threads() if threads is None else threads:
        with open(f"/proc/self/task/{thread.native_id}/status") as status:
            total += sum(
                int(line.split()[1]) for line in status if line.startswith("voluntary_ctxt_switches")
            )
    return total


def _cpu_s() -> float:
    """CPU time the watchdog threads have used so far."""
    threads = _watchdog_threads()
    return sum(time.clock_gettime(time.pthread_getcpuclockid(t.ident or 0)) for t in threads)


def test_consecutive_executions_reuse_one_watchdog_thread() -> None:
    with _watchdog():
        pass
    before = _watchdog_threads()
    for _ in range(50):
        with _watchdog():
            pass
    # An exit hands its thread back before it returns, so the next execution takes the same one.
    assert _watchdog_threads() == before


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="counts context switches in /proc")
def test_short_executions_do_not_wake_the_watchdog_thread() -> None:
    with _watchdog(deadline=time.monotonic() + 3600):
        time.sleep(0.02)  # its thread now sleeps until this watchdog's first beat, 10 s from here
    wake_ups, cpu_s = _wake_ups(), _cpu_s()
    for _ in range(300):  # each due later than that: recorded, the thread is not woken
        with _watchdog(deadline=time.monotonic() + 3600):
            pass
        time.sleep(0.0005)  # as a worker waits for its broker and database, letting a woken thread run
    # Handing each execution to the thread and waking it to stop cost ~400 wake-ups and ~10 ms here.
    assert _wake_ups() - wake_ups <= 3  # (a thread left waiting for an earlier test's watchdog may wake)
    assert _cpu_s() - cpu_s < 0.002


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="counts context switches in /proc")
def test_executions_shorter_than_the_thread_takes_to_look_do_not_wake_it_each_time() -> None:
    """As in a busy worker: each execution ends before its watchdog thread gets to run."""
    with _watchdog(interval_s=0.02):
        time.sleep(0.05)  # its thread beats: awake, looking at this watchdog
    time.sleep(0.1)  # it found nothing to watch: idle
    wake_ups = _wake_ups()
    for _ in range(300):
        with _watchdog(deadline=time.monotonic() + 3600):
            pass
        time.sleep(0.0005)
    # An idle runner that slept without a timeout was woken by every one of these arms (~300 wake-ups).
    assert _wake_ups() - wake_ups <= 3


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="counts context switches in /proc")
def test_an_idle_watchdog_thread_wakes_only_once_per_idle_period(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watchdog_module, "IDLE_WAKE_S", 0.2)
    served: set[threading.Thread] = set()

    def beat(_lines: object) -> bool:
        served.add(threading.current_thread())
        return True

    with _watchdog(interval_s=0.02, beat=beat):
        time.sleep(0.05)
    time.sleep(0.1)  # its thread woke for the next beat, found nothing to watch and went idle
    idle = _wake_ups(served)
    time.sleep(1.0)
    assert _wake_ups(served) - idle <= 6  # about one wake-up per idle period, no busy polling


def test_a_deadline_sooner_than_the_thread_would_wake_still_fires_on_time() -> None:
    with _watchdog(interval_s=10):  # the thread now sleeps until about 10 s from here
        pass
    deadline = time.monotonic() + 0.2
    with pytest.raises(ExecutionTimedOut):  # noqa: SIM117 - the exception must leave the watchdog block
        with _watchdog(interval_s=10, deadline=deadline):
            time.sleep(30)
    assert deadline <= time.monotonic() < deadline + 0.15


def test_a_beat_sooner_than_the_thread_would_wake_still_beats() -> None:
    with _watchdog(interval_s=10):
        pass
    beats: list[float] = []

    def beat(_lines: object) -> bool:
        beats.append(time.monotonic())
        return True

    started = time.monotonic()
    with _watchdog(interval_s=0.05, beat=beat):
        time.sleep(0.5)
    assert len(beats) >= 5
    assert beats[0] - started < 0.2


def test_a_beat_in_progress_finishes_before_the_exit_returns() -> None:
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow_beat(_lines: object) -> bool:
        started.set()
        release.wait(5)
        finished.set()
        return True

    with _watchdog(interval_s=0.01, beat=slow_beat):
        assert started.wait(5)
        threading.Timer(0.2, release.set).start()
    assert finished.is_set()  # __exit__ waited for the beat that was running


def test_after_the_exit_no_beat_and_no_interrupt_follows() -> None:
    started, release = threading.Event(), threading.Event()
    beats: list[int] = []

    def beat(_lines: object) -> bool:
        beats.append(1)
        started.set()
        release.wait(5)
        return False  # the claim is gone: would cancel, but the command has finished meanwhile

    with _watchdog(interval_s=0.01, deadline=time.monotonic() + 0.3, beat=beat):
        assert started.wait(5)
        threading.Timer(0.1, release.set).start()
    time.sleep(0.4)  # past the deadline and many intervals: a late beat or interrupt would show here
    assert beats == [1]
    with _watchdog(interval_s=0.05, deadline=time.monotonic() + 0.2):  # the thread serves the next one
        pass


def test_a_reused_thread_beats_and_times_out_like_a_fresh_one() -> None:
    for _ in range(3):
        with _watchdog():
            pass
    beats: list[int] = []

    def beat(lines: list) -> bool:  # type: ignore[type-arg]
        beats.append(len(lines))
        return True

    started = time.monotonic()
    with pytest.raises(ExecutionTimedOut):  # noqa: SIM117 - the exception must leave the watchdog block
        with _watchdog(interval_s=0.05, deadline=started + 0.3, beat=beat):
            time.sleep(30)
    assert 0.25 < time.monotonic() - started < 3
    assert len(beats) >= 2


def test_a_reused_thread_cancels_like_a_fresh_one() -> None:
    with _watchdog():
        pass
    with pytest.raises(ExecutionCancelled):  # noqa: SIM117
        with _watchdog(interval_s=0.05, beat=lambda _lines: False):
            time.sleep(30)


def test_concurrent_executions_each_get_their_own_watchdog_thread() -> None:
    inside = threading.Barrier(3)
    outcomes: list[str] = []

    def command() -> None:
        try:
            with _watchdog(deadline=time.monotonic() + 0.5):
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


def test_a_slow_beat_does_not_delay_another_executions_deadline() -> None:
    release = threading.Event()
    outcome: list[float] = []

    def stuck_beat(_lines: object) -> bool:
        release.wait(5)
        return True

    def command() -> None:
        deadline = time.monotonic() + 0.3
        try:
            with _watchdog(deadline=deadline):
                while True:
                    time.sleep(0.01)
        except ExecutionTimedOut:
            outcome.append(time.monotonic() - deadline)

    with _watchdog(interval_s=0.01, beat=stuck_beat):
        thread = threading.Thread(target=command)
        thread.start()
        thread.join(5)
        release.set()  # ends the stuck beat, which this exit waits for
    assert len(outcome) == 1 and outcome[0] < 0.2
