"""Next-fire cost per cron expression: ``scheduler.rules.schedules`` against plain croniter.

For every expression and zone, both sides parse once, then compute ``--calls`` successive fire times from an
advancing instant (ours: ``schedule.next_after(t)`` fed its own result; croniter: ``get_next(datetime)`` on
one iterator started in the zone). A second table does the same from scattered instants (ours:
``next_after(t_i)``; croniter: ``set_current(t_i)`` then ``get_next``), which is what the planner does for
tasks whose ``next_run_at`` differ. Each figure is the median of ``--runs`` runs, interleaved so machine noise
hits both sides alike; the ratio is ours / croniter (target: <= 1.10).

As a sanity check the first fire times of both sides are compared in UTC (they must agree: Europe/Berlin
differs only on DST days, where ours follows cronie by design).

    python -m bench.cron_maths [--calls 2000] [--runs 5] [--no-results]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from bench._common import append_results, machine_info, median, table, verdict
from scheduler.rules.schedules import parse_schedule

EXPRESSIONS = ("*/5 * * * *", "0 2 * * 1-5", "0 0 1 * *", "*/15 9-17 * * mon-fri", "@hourly")
ZONES = ("UTC", "Europe/Berlin")
# A few days before Europe's spring-forward change (2026-03-29), so frequent expressions cross it.
START = datetime(2026, 3, 25, 10, 7, 13, tzinfo=UTC)
TARGET_RATIO = 1.10


def ours_sequential(expression: str, zone: str, calls: int) -> Callable[[], datetime]:
    schedule = parse_schedule(expression, timezone=zone, anchor=START)

    def run() -> datetime:
        t = START
        next_after = schedule.next_after
        for _ in range(calls):
            nxt = next_after(t)
            assert nxt is not None
            t = nxt
        return t

    return run


def croniter_sequential(expression: str, zone: str, calls: int) -> Callable[[], datetime]:
    start = START.astimezone(ZoneInfo(zone))

    def run() -> datetime:
        it = croniter(expression, start)  # parsed once per run, like ours
        get_next = it.get_next
        t = start
        for _ in range(calls):
            t = get_next(datetime)
        return t

    return run


def scattered_instants(calls: int) -> list[datetime]:
    rng = random.Random(7)
    return [START + timedelta(seconds=rng.randrange(0, 400 * 86400)) for _ in range(calls)]


def ours_scattered(expression: str, zone: str, instants: list[datetime]) -> Callable[[], object]:
    schedule = parse_schedule(expression, timezone=zone, anchor=START)

    def run() -> object:
        next_after = schedule.next_after
        last = None
        for t in instants:
            last = next_after(t)
        return last

    return run


def croniter_scattered(expression: str, zone: str, instants: list[datetime]) -> Callable[[], object]:
    tz = ZoneInfo(zone)
    local = [t.astimezone(tz) for t in instants]
    it = croniter(expression, local[0])

    def run() -> object:
        last = None
        for t in local:
            it.set_current(t, force=True)
            last = it.get_next(datetime)
        return last

    return run


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def agreement(expression: str, zone: str, count: int = 500) -> int:
    """How many of the first ``count`` fire times differ between ours and croniter (as UTC instants)."""
    schedule = parse_schedule(expression, timezone=zone, anchor=START)
    it = croniter(expression, START.astimezone(ZoneInfo(zone)))
    t, differing = START, 0
    for _ in range(count):
        nxt = schedule.next_after(t)
        assert nxt is not None
        theirs = it.get_next(datetime).astimezone(UTC)
        if nxt != theirs:
            differing += 1
            it = croniter(expression, nxt.astimezone(ZoneInfo(zone)))  # resynchronise
        t = nxt
    return differing


def measure(
    pairs: list[tuple[str, str, Callable[[], object], Callable[[], object]]], runs: int, calls: int
) -> list[tuple[str, str, float, float]]:
    """Per (expression, zone): median microseconds per call of ours and croniter's, runs interleaved."""
    ours: dict[tuple[str, str], list[float]] = {}
    theirs: dict[tuple[str, str], list[float]] = {}
    for _e, _z, a, b in pairs:  # warm up both (parse caches, zone files)
        a(), b()
    for _ in range(runs):
        for expression, zone, a, b in pairs:
            ours.setdefault((expression, zone), []).append(timed(a) / calls * 1e6)
            theirs.setdefault((expression, zone), []).append(timed(b) / calls * 1e6)
    return [(e, z, median(ours[(e, z)]), median(theirs[(e, z)])) for e, z, _, _ in pairs]


def report_rows(figures: list[tuple[str, str, float, float]]) -> list[tuple[str, ...]]:
    rows = []
    for expression, zone, ours_us, croniter_us in figures:
        ratio = ours_us / croniter_us
        rows.append(
            (
                f"`{expression}`",
                zone,
                f"{ours_us:.2f}",
                f"{croniter_us:.2f}",
                f"{ratio:.2f}",
                verdict(ratio <= TARGET_RATIO),
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="next-fire calls per run (default 2000)")
    parser.add_argument("--runs", type=int, default=5, help="repetitions; medians are reported (default 5)")
    parser.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)

    info = machine_info()
    combos = [(e, z) for z in ZONES for e in EXPRESSIONS]
    sequential = [
        (e, z, ours_sequential(e, z, args.calls), croniter_sequential(e, z, args.calls)) for e, z in combos
    ]
    instants = scattered_instants(args.calls)
    scattered = [
        (e, z, ours_scattered(e, z, instants), croniter_scattered(e, z, instants)) for e, z in combos
    ]
    seq = measure(sequential, args.runs, args.calls)
    sca = measure(scattered, args.runs, args.calls)
    diffs = {(e, z): agreement(e, z) for e, z in combos}

    headers = ["expression", "zone", "ours µs/call", "croniter µs/call", "ratio", f"<= {TARGET_RATIO}"]
    body = [
        f"{args.calls} calls per run, median of {args.runs} runs; ratio = ours / croniter.",
        "",
        "Successive fire times (parse once, next_after from advancing instants):",
        "",
        *table(headers, report_rows(seq)),
        "",
        "From scattered instants (croniter: set_current + get_next):",
        "",
        *table(headers, report_rows(sca)),
        "",
        f"Worst ratio: sequential {max(o / c for _, _, o, c in seq):.2f}, scattered "
        f"{max(o / c for _, _, o, c in sca):.2f}; geometric mean sequential "
        f"{_geomean([o / c for _, _, o, c in seq]):.2f}.",
        "Fire times differing from croniter in the first 500 (DST days by design): "
        + ", ".join(f"`{e}` {z}: {n}" for (e, z), n in diffs.items() if n)
        + ("" if any(diffs.values()) else "none"),
    ]
    print("\n".join(body))
    if not args.no_results:
        append_results("cron_maths", info, body, sys.argv[1:] if argv is None else argv)
    return 0


def _geomean(values: list[float]) -> float:
    import math

    return math.exp(sum(math.log(v) for v in values) / len(values))


if __name__ == "__main__":
    raise SystemExit(main())
