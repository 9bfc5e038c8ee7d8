"""Idle tick: many defined tasks, a handful due; the planner's tick time and memory as the task count grows.

One database grows through the sizes (default 10k and 100k tasks; ``--n 1000000`` adds 1M): tasks are
bulk-inserted server-side (``INSERT ... SELECT generate_series``, nothing built in Python) with a mix of cron
expressions, intervals and zones, ``next_run_at`` spread over the next day, 5% paused and 5% completed. The
first ``--due`` tasks (interval ``1h``) are made due again (``next_run_at`` = database now - 50 ms) before
every measured tick, outside the timing.

Each size is measured in a fresh child process (``--child``) so its RSS is the planner's alone: the planner
(``scheduler.planning.planner.Planner`` + ``workers.publisher.CeleryPublisher`` on Redis,
``max_concurrent_tasks``
10000) runs 2 warm-up ticks (lease, first clean-up), then ``--ticks`` ticks with a handful due and as many
with nothing due. Reported: median and p90 tick time, RSS after the imports and after the ticks, peak RSS;
and (unless ``--no-profile``) a pyinstrument profile of the handful-due ticks at the largest size.

    python -m bench.idle_tick [--n 100000] [--due 5] [--ticks 60] [--no-profile] [--no-results]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from bench._common import (
    REDIS_URL,
    ROOT,
    append_results,
    insert_tasks,
    machine_info,
    median,
    percentile,
    suffix,
    table,
    temp_database,
    vacuum_analyze,
    verdict,
)
from scheduler.storage.db import IDLE_PING_S

TARGET_TICK_MS = 10.0
TARGET_RSS_MB = 200.0
SCHEDULES = (  # (schedule, kind, time zone), cycled over the tasks
    ("*/5 * * * *", "cron", "UTC"),
    ("0 2 * * 1-5", "cron", "Europe/Berlin"),
    ("0 0 1 * *", "cron", "America/New_York"),
    ("*/15 9-17 * * mon-fri", "cron", "Europe/Berlin"),
    ("@hourly", "cron", "UTC"),
    ("5m", "interval", "UTC"),
    ("1h30m", "interval", "UTC"),
    ("1d", "interval", "Asia/Tokyo"),
)


def task_columns(due: int) -> dict[str, str]:
    """SQL expressions (over the series value ``i``) of a varied task population."""
    k = len(SCHEDULES)

    def pick(index: int) -> str:
        return "CASE (i % {k}) {whens} END".format(
            k=k, whens=" ".join(f"WHEN {j} THEN '{s[index]}'" for j, s in enumerate(SCHEDULES))
        )

    status = (
        f"CASE WHEN i <= {due} THEN 'active' WHEN i % 20 = 7 THEN 'paused' "
        "WHEN i % 20 = 13 THEN 'completed' ELSE 'active' END"
    )
    return {
        "schedule": f"CASE WHEN i <= {due} THEN '1h' ELSE {pick(0)} END",
        "schedule_kind": f"CASE WHEN i <= {due} THEN 'interval' ELSE {pick(1)} END",
        "timezone": f"CASE WHEN i <= {due} THEN 'UTC' ELSE {pick(2)} END",
        "data": """jsonb_build_object('n', i, 'path', '/srv/data/' || i)""",
        "status": status,
        "queue": ":queue",
        "anchor_at": "now() - interval '1 day'",
        "next_run_at": (
            f"CASE WHEN i <= {due} THEN now() + interval '1 hour' "
            "WHEN i % 20 IN (7, 13) THEN NULL "
            "ELSE now() + interval '1 minute' + (i % 86400) * interval '1 second' END"
        ),
    }


# --------------------------------------------------------------------------------------------- child


def child(args: argparse.Namespace) -> int:
    """Measure in this fresh process; print one JSON line."""
    rss_start = _rss()
    from sqlalchemy import event, text

    from bench._common import peak_rss_mb, profile_summary, rss_mb
    from scheduler.planning.planner import Planner
    from scheduler.settings import Settings
    from scheduler.storage.db import make_engine
    from workers.app import create_app
    from workers.publisher import CeleryPublisher

    settings = Settings(
        database_url=args.url, broker_url=REDIS_URL, default_queue=args.queue, max_concurrent_tasks=10_000
    )
    engine = make_engine(args.url)
    planner = Planner(engine, settings, CeleryPublisher(create_app(settings)))
    make_due = text("UPDATE scheduled_tasks SET next_run_at = now() - interval '50 ms' WHERE id <= :due")

    def reset() -> None:
        with engine.begin() as connection:
            connection.execute(make_due, {"due": args.due})

    for _ in range(2):  # lease, connection pool, first clean-up, caches
        reset()
        planner.tick()
    rss_imports = rss_mb()
    counts = {"statements": 0, "commits": 0, "checkouts": 0}
    counting = [False]

    def count(name: str) -> Any:
        def listener(*_: Any, **__: Any) -> None:
            if counting[0]:
                counts[name] += 1

        return listener

    event.listen(engine, "before_cursor_execute", count("statements"))
    event.listen(engine, "commit", count("commits"))
    event.listen(engine.pool, "checkout", count("checkouts"))
    busy, idle, due_counts = [], [], []
    for _ in range(args.ticks):
        reset()
        counting[0] = True
        started = time.perf_counter()
        report = planner.tick()
        busy.append(time.perf_counter() - started)
        counting[0] = False
        due_counts.append(report.due)
    busy_counts = {name: value / args.ticks for name, value in counts.items()}
    counts = dict.fromkeys(counts, 0)
    for _ in range(args.ticks):
        counting[0] = True
        started = time.perf_counter()
        planner.tick()
        idle.append(time.perf_counter() - started)
        counting[0] = False
    idle_counts = {name: value / args.ticks for name, value in counts.items()}
    rss_after = rss_mb()
    peak = peak_rss_mb()
    profile: list[str] = []
    if args.profile:
        from pyinstrument import Profiler
        from pyinstrument.session import Session

        sessions = []
        for _ in range(args.ticks):
            reset()
            profiler = Profiler(interval=0.0002)
            profiler.start()
            planner.tick()
            profiler.stop()
            sessions.append(profiler.last_session)
        combined = sessions[0]
        for session in sessions[1:]:
            combined = Session.combine(combined, session)
        profile = profile_summary(combined)
    planner.lease.release()
    engine.dispose()
    result = {
        "busy": busy,
        "idle": idle,
        "due": due_counts,
        "rss_start": rss_start,
        "rss_imports": rss_imports,
        "rss_after": rss_after,
        "peak": peak,
        "busy_counts": busy_counts,
        "idle_counts": idle_counts,
        "profile": profile,
    }
    print(json.dumps(result))
    return 0


def _rss() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# --------------------------------------------------------------------------------------------- parent


def measure_size(url: str, queue: str, args: argparse.Namespace, profile: bool) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "bench.idle_tick",
        "--child",
        "--url",
        url,
        "--queue",
        queue,
        "--ticks",
        str(args.ticks),
        "--due",
        str(args.due),
    ]
    if profile:
        command.append("--profile")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _counts(counts: dict[str, float]) -> str:
    return (
        f"{counts['statements']:.1f} statements, {counts['commits']:.1f} commits, "
        f"{counts['checkouts']:.1f} pool checkouts (no ping: only a connection idle for "
        f"{IDLE_PING_S:g} s is pinged, see scheduler.storage.db)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="largest task count (default 100000)")
    parser.add_argument("--due", type=int, default=5, help="tasks due at every measured tick (default 5)")
    parser.add_argument("--ticks", type=int, default=60, help="measured ticks per size and kind (default 60)")
    parser.add_argument("--no-profile", action="store_true", help="skip the pyinstrument run")
    parser.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--queue", help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    import redis
    from sqlalchemy import text

    from scheduler.storage.db import make_engine

    sizes = sorted({size for size in (10_000, 100_000, args.n) if size <= args.n})
    tag = suffix()
    queue = f"bench-idle-{tag}"
    client = redis.Redis.from_url(REDIS_URL)
    rows: list[tuple[str, ...]] = []
    results: dict[int, dict[str, Any]] = {}
    try:
        with temp_database() as url:
            engine = make_engine(url)
            info = machine_info(engine)
            have = 0
            for size in sizes:
                started = time.perf_counter()
                with engine.begin() as connection:
                    insert_tasks(
                        connection,
                        size - have,
                        first=have + 1,
                        columns=task_columns(args.due),
                        params={"queue": queue},
                    )
                    connection.execute(text("DELETE FROM task_executions"))  # a clean slate per size
                    connection.execute(text("DELETE FROM scheduler_leases"))
                vacuum_analyze(engine, "scheduled_tasks", "task_executions")
                setup = time.perf_counter() - started
                have = size
                client.delete(queue)
                result = measure_size(url, queue, args, profile=not args.no_profile and size == sizes[-1])
                results[size] = result
                busy_ms = [t * 1000 for t in result["busy"]]
                idle_ms = [t * 1000 for t in result["idle"]]
                rows.append(
                    (
                        f"{size:,}",
                        f"{median(busy_ms):.2f}",
                        f"{percentile(busy_ms, 90):.2f}",
                        f"{min(busy_ms):.2f}",
                        f"{median(idle_ms):.2f}",
                        f"{result['rss_imports']:.0f}",
                        f"{result['rss_after']:.0f}",
                        f"{result['peak']:.0f}",
                        f"{setup:.1f}",
                    )
                )
                print(
                    f"{size:,} tasks: tick {median(busy_ms):.2f} ms with {args.due} due "
                    f"(due seen {sorted(set(result['due']))}), {median(idle_ms):.2f} ms idle; "
                    f"RSS {result['rss_after']:.0f} MB",
                    flush=True,
                )
            engine.dispose()
    finally:
        client.delete(queue)
        for key in client.scan_iter(match=f"*{tag}*"):
            client.delete(key)

    largest = results[sizes[-1]]
    tick_ms = median([t * 1000 for t in largest["busy"]])
    rss = [results[size]["rss_after"] for size in sizes]
    flat = max(rss) - min(rss)
    body = [
        f"{args.due} tasks due at each measured tick, {args.ticks} ticks per row and kind; one child process "
        "per size (RSS is the planner's alone). Times in ms, memory in MB.",
        "",
        *table(
            [
                "tasks",
                f"tick, {args.due} due (median)",
                "p90",
                "min",
                "tick, none due (median)",
                "RSS after warm-up",
                "RSS after ticks",
                "peak RSS",
                "setup (s)",
            ],
            rows,
        ),
        "",
        f"Targets at {sizes[-1]:,} tasks: median tick < {TARGET_TICK_MS:.0f} ms: {tick_ms:.2f} ms "
        f"({verdict(tick_ms < TARGET_TICK_MS)}); RSS < {TARGET_RSS_MB:.0f} MB: {max(rss):.0f} MB "
        f"({verdict(max(rss) < TARGET_RSS_MB)}); flat across sizes: spread {flat:.1f} MB "
        f"({verdict(flat < 10)}).",
        "",
        "Database work per tick at {:,} tasks (SQLAlchemy events): with {} due {}; none due {}.".format(
            sizes[-1],
            args.due,
            _counts(largest["busy_counts"]),
            _counts(largest["idle_counts"]),
        ),
    ]
    print("\n".join(body))
    if largest["profile"]:
        print(f"\nProfile of {args.ticks} ticks at {sizes[-1]:,} tasks:\n" + "\n".join(largest["profile"]))
        body += [
            "",
            f"Profile of {args.ticks} ticks with {args.due} due at {sizes[-1]:,} tasks (pyinstrument):",
            "",
        ]
        body += largest["profile"]
    if not args.no_results:
        append_results("idle_tick", info, body, sys.argv[1:] if argv is None else argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
