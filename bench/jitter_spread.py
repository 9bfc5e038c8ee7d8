"""Jitter spread: a burst of tasks due at one instant, with and without ``--jitter``; planner and worker load.

Two parts, both with the code the planner runs (``scheduler.rules.combined``, ``scheduler.planning.Planner``):

1. **The hour, computed.** N tasks ``0 * * * *`` with ``--jitter 1h``: the real fire time of each task's next
   slot (``task_schedule(task).next_after``), bucketed by 1-s planner tick and by minute. Without jitter all N
   are due in the first tick.
2. **Measured, at 1/60 scale.** N tasks ``1m`` (one slot a minute, all anchored at one instant T a few seconds
   ahead; the same shape as ``0 * * * *`` over an hour, 60 times shorter) in a fresh PostgreSQL database, once
   without jitter and once with ``--jitter 1m``; the real planner ticks as ``run_forever`` does (again at
   once while a tick reports ``more``, else after ``tick_interval``) from T until every slot is published. Per
   tick: its duration and the tasks it planned (planner load); per second: the executions handed to the broker
   (what reaches the workers: worker load). The publisher only counts (no Redis: the broker's cost is
   ``bench.dispatch_burst``'s subject). Repeated ``--reps`` times; figures are medians.

    python -m bench.jitter_spread [--n 3000] [--reps 3] [--no-results]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, bindparam, select, text, update

from bench._common import (
    append_results,
    db_clock,
    insert_tasks,
    machine_info,
    median,
    table,
    temp_database,
    truncate_all,
)
from scheduler.planning.planner import Planner
from scheduler.records import Dispatch, Task
from scheduler.rules.timing import task_first_fire, task_schedule
from scheduler.settings import Settings
from scheduler.storage.db import make_engine
from scheduler.storage.mapping import task_from_row
from scheduler.storage.tables import tasks

HOUR = timedelta(hours=1)
LEAD_S = 4.0  # T is this far ahead of the database clock when the tasks are in place


class CountingPublisher:
    """The Publisher port, counting what it is handed per wall-clock second (what workers would receive)."""

    def __init__(self) -> None:
        self.per_second: Counter[int] = Counter()
        self.total = 0

    def publish(self, dispatches: Sequence[Dispatch]) -> None:
        self.per_second[int(time.time())] += len(dispatches)
        self.total += len(dispatches)


def computed_hour(n: int) -> list[str]:
    """Part 1: the real fire times of N hourly tasks' next slot with a 1 h jitter, by tick and by minute."""
    slot = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
    base = Task(
        name="t", command="test:echo", schedule="0 * * * *", schedule_kind="cron", timezone="UTC", data={},
        status="active", queue="default", retries=0, retry_delay_ms=0, retry_backoff=2.0, timeout_ms=1000,
        overlap_policy="allow", misfire_policy="run_once", misfire_grace_ms=None, auto_pause_after=None,
        start_at=None, end_at=None, max_runs=None, anchor_at=slot, next_run_at=slot, jitter_ms=3_600_000,
        id=0, status_reason=None, last_run_at=None, run_count=0, consecutive_failures=0, created_at=slot,
        updated_at=slot,
    )  # fmt: skip
    real = []
    for task_id in range(1, n + 1):
        fire = task_schedule(replace(base, id=task_id)).next_after(slot, inclusive=True)
        assert fire is not None and slot <= fire < slot + HOUR
        real.append(fire)
    by_tick = Counter(int((t - slot).total_seconds()) for t in real)
    by_minute = Counter(int((t - slot).total_seconds() // 60) for t in real)
    minutes = [by_minute.get(m, 0) for m in range(60)]
    return [
        f"### The hour, computed: {n:,} tasks `0 * * * *`, due at 10:00",
        "",
        *table(
            ["", "tasks due in the busiest 1-s tick", "busiest minute", "quietest minute", "median minute"],
            [
                ["no jitter", f"{n:,}", f"{n:,}", "0", "0"],
                [
                    "--jitter 1h",
                    str(max(by_tick.values())),
                    str(max(minutes)),
                    str(min(minutes)),
                    f"{median(minutes):g}",
                ],
            ],
        ),
        "",
        f"Ideal: {n / 3600:.2f} per second, {n / 60:.1f} per minute.",
        "",
    ]


@dataclass
class Run:
    ticks: list[tuple[float, int]]  # (duration s, tasks planned) of ticks that planned something
    per_second: list[int]  # dispatches per wall-clock second, from the first to the last
    spread_s: float  # first to last dispatch


def _place(engine: Engine, n: int, jitter_ms: int | None) -> None:
    """N ``1m`` tasks anchored at T (a little ahead); with a jitter, each next run is its slot's real time."""
    truncate_all(engine)
    slot = (db_clock(engine) + timedelta(seconds=LEAD_S)).replace(microsecond=0)
    columns = {"schedule": "'1m'", "anchor_at": ":slot", "next_run_at": ":slot", "jitter_ms": ":jitter"}
    with engine.begin() as connection:
        insert_tasks(connection, n, columns=columns, params={"slot": slot, "jitter": jitter_ms})
        if jitter_ms:
            placed = [task_from_row(row) for row in connection.execute(select(tasks))]
            values = [{"i": t.id, "at": task_first_fire(t, slot - timedelta(microseconds=1))} for t in placed]
            statement = update(tasks).where(tasks.c.id == bindparam("i")).values(next_run_at=bindparam("at"))
            connection.execute(statement, values)


def measure(url: str, n: int, jitter_ms: int | None) -> Run:
    engine = make_engine(url)
    settings = Settings(max_concurrent_tasks=n, planner_batch_size=1000, history_retention_days=30)
    publisher = CountingPublisher()
    planner = Planner(engine, settings, publisher)
    _place(engine, n, jitter_ms)
    deadline = time.monotonic() + LEAD_S + 90
    ticks: list[tuple[float, int]] = []
    while publisher.total < n and time.monotonic() < deadline:
        started = time.perf_counter()
        report = planner.tick()
        took = time.perf_counter() - started
        if report.due:
            ticks.append((took, report.due))
        if not report.more:
            time.sleep(max(0.0, settings.tick_interval / 1000 - took))
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM scheduler_leases"))
    engine.dispose()
    assert publisher.total == n, f"only {publisher.total} of {n} published"
    seconds = sorted(publisher.per_second)
    per_second = [publisher.per_second.get(s, 0) for s in range(seconds[0], seconds[-1] + 1)]
    return Run(ticks, per_second, float(seconds[-1] - seconds[0]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="tasks (default 3000)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per variant (default 3)")
    parser.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    body = computed_hour(args.n)
    rows = []
    with temp_database() as url:
        engine = make_engine(url)
        info = machine_info(engine)
        engine.dispose()
        for label, jitter_ms in (("no jitter", None), ("--jitter 1m", 60_000)):
            runs = [measure(url, args.n, jitter_ms) for _ in range(args.reps)]
            rows.append(
                [
                    label,
                    f"{median([max(d for _, d in r.ticks) for r in runs]):g}",
                    f"{median([max(t for t, _ in r.ticks) * 1000 for r in runs]):.1f}",
                    f"{median([median([t for t, _ in r.ticks]) * 1000 for r in runs]):.1f}",
                    f"{median([len(r.ticks) for r in runs]):g}",
                    f"{median([max(r.per_second) for r in runs]):g}",
                    f"{median([r.spread_s for r in runs]):g}",
                ]
            )
    body += [
        f"### Measured at 1/60 scale: {args.n:,} tasks `1m` due at one instant, PostgreSQL, {args.reps} reps "
        "(medians)",
        "",
        *table(
            [
                "",
                "most tasks in one tick",
                "longest tick (ms)",
                "median busy tick (ms)",
                "busy ticks",
                "most dispatches in one second",
                "first to last dispatch (s)",
            ],
            rows,
        ),
        "",
    ]
    print("\n".join(body))
    if not args.no_results:
        append_results("jitter_spread", info, body, sys.argv[1:] if argv is None else argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
