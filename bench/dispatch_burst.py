"""Dispatch burst: N tasks due at the same instant, our planner until every id is on the Redis queue.

Per repetition (the tables are emptied between them):

1. N interval tasks (``1h``, anchored at the slot) are bulk-inserted with one server-side
   ``INSERT ... SELECT generate_series`` into a fresh migrated database, all with ``next_run_at = T``, a
   common instant a little ahead of the database clock; the bench then waits until T has just passed;
2. **ours**: ``scheduler.planning.planner.Planner`` with ``workers.publisher.CeleryPublisher`` (our Celery
   app on Redis) ticks in a thread the way ``Planner.run_forever`` does (again at once while a tick reports
   ``more``, else after ``tick_interval``) until ``LLEN`` of the queue reaches N; the lag of each execution is
   ``enqueued_at - scheduled_for`` from ``task_executions``. ``max_concurrent_tasks`` is set to N (the default
   cap of 100 would hold the rest ``pending``: that is the cap working, not the planner's speed);
3. **baselines**, each into its own queue: a loop of ``apply_async`` of a stock Celery app (no database
   work); the same loop with ``send_task`` on *our* Celery config (sent events on: the broker-side cost our
   publisher pays per message); celery-redbeat with N due entries (``RedBeatScheduler.tick`` until the queue
   holds N); stock ``celery.beat.Scheduler`` with N due entries, capped at ``--beat-seconds`` because every
   tick compares the whole schedule (O(N) per sent message, O(N^2) per burst) -- its rate is sent/elapsed.

After the set-up the process's heap is frozen (``scheduler.planning.planner.freeze_start_up_heap``, what
the planner's loop does when it starts), for every run alike, ours and the baselines;
``--no-gc-freeze`` leaves it as it is.

Afterwards one extra, untimed burst runs the planner ticks under pyinstrument (``--no-profile`` skips it).
Only keys containing this run's random suffix are deleted from Redis.

    python -m bench.dispatch_burst [--n 10000] [--reps 3] [--batch 1000] [--beat-seconds 15]
                                   [--skip-beat] [--skip-redbeat] [--no-profile] [--no-results]
                                   [--no-gc-freeze]
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis
from celery import Celery
from sqlalchemy import Engine, text

from bench._common import (
    REDIS_URL,
    append_results,
    db_clock,
    insert_tasks,
    machine_info,
    median,
    profile_summary,
    suffix,
    table,
    temp_database,
    truncate_all,
    vacuum_analyze,
    verdict,
)
from scheduler.planning.planner import Planner, freeze_start_up_heap
from scheduler.records import TickReport
from scheduler.settings import Settings
from scheduler.storage.db import make_engine
from workers.app import create_app
from workers.publisher import CeleryPublisher

TARGET_RATIO = 3.0
TARGET_RATE = 10_000.0
TARGET_P99_S = 1.5


@dataclass
class OursRun:
    seconds: float
    rate: float
    p50: float
    p99: float
    max: float
    start_offset: float  # planner start minus the common slot T (database clock)
    ticks: list[TickReport] = field(default_factory=list)
    queued: int = 0


def wait_for_length(client: redis.Redis, queue: str, n: int, timeout: float, poll: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.llen(queue) >= n:
            return True
        time.sleep(poll)
    return client.llen(queue) >= n


def delete_keys(client: redis.Redis, tag: str) -> int:
    keys = list(client.scan_iter(match=f"*{tag}*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])
    return len(keys)


# --------------------------------------------------------------------------------------------- ours


def prepare_burst(engine: Engine, n: int, queue: str) -> datetime:
    """Empty the tables, insert n tasks due at one instant T; return T once it has just passed."""
    truncate_all(engine)
    lead = timedelta(seconds=1.0 + n / 40_000)
    slot = db_clock(engine) + lead
    with engine.begin() as connection:
        insert_tasks(
            connection,
            n,
            columns={"queue": ":queue", "anchor_at": ":slot", "next_run_at": ":slot"},
            params={"queue": queue, "slot": slot},
        )
    vacuum_analyze(engine, "scheduled_tasks", "task_executions")
    while db_clock(engine) < slot + timedelta(milliseconds=5):
        time.sleep(0.002)
    return slot


def lag_figures(engine: Engine) -> tuple[float, float, float, int]:
    """p50, p99 and max of enqueued_at - scheduled_for (seconds) and how many rows are queued."""
    query = text(
        "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY lag), percentile_disc(0.99) WITHIN GROUP "
        "(ORDER BY lag), max(lag), count(*) FROM (SELECT extract(epoch FROM enqueued_at - scheduled_for) "
        "AS lag FROM task_executions WHERE status = 'queued') AS lags"
    )
    with engine.connect() as connection:
        p50, p99, worst, count = connection.execute(query).one()
    return float(p50 or 0), float(p99 or 0), float(worst or 0), int(count)


def run_ours(
    engine: Engine, settings: Settings, client: redis.Redis, n: int, queue: str, timeout: float
) -> OursRun:
    slot = prepare_burst(engine, n, queue)
    app = create_app(settings)
    planner = Planner(engine, settings, CeleryPublisher(app))
    reports: list[TickReport] = []
    stop = threading.Event()
    failure: list[BaseException] = []

    def loop() -> None:  # Planner.run_forever without its error backoff, keeping the reports
        interval = settings.tick_interval / 1000
        try:
            while not stop.is_set():
                report = planner.tick()
                reports.append(report)
                if not report.more:
                    stop.wait(interval)
        except BaseException as error:
            failure.append(error)
            stop.set()

    start_db = db_clock(engine)
    started = time.perf_counter()
    thread = threading.Thread(target=loop, name="planner", daemon=True)
    thread.start()
    done = wait_for_length(client, queue, n, timeout)
    elapsed = time.perf_counter() - started
    stop.set()
    thread.join(timeout=60)
    planner.lease.release()
    if failure:
        raise RuntimeError(f"the planner failed: {failure[0]!r}") from failure[0]
    if not done:
        raise RuntimeError(f"only {client.llen(queue)} of {n} messages reached {queue} in {timeout:.0f} s")
    p50, p99, worst, queued = lag_figures(engine)
    client.delete(queue)
    return OursRun(elapsed, n / elapsed, p50, p99, worst, (start_db - slot).total_seconds(), reports, queued)


def profile_ours(engine: Engine, settings: Settings, client: redis.Redis, n: int, queue: str) -> list[str]:
    """One untimed burst with the ticks run in this thread under pyinstrument; the summary lines."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        return ["(pyinstrument is not installed: pip install pyinstrument)"]
    prepare_burst(engine, n, queue)
    planner = Planner(engine, settings, CeleryPublisher(create_app(settings)))
    profiler = Profiler(interval=0.0005)
    ticks = 0
    profiler.start()
    while client.llen(queue) < n and ticks < 1000:
        planner.tick()
        ticks += 1
    profiler.stop()
    planner.lease.release()
    client.delete(queue)
    return [
        f"{ticks} tick(s) until all {n} ids were on the queue.",
        "",
        *profile_summary(profiler.last_session),
    ]


# --------------------------------------------------------------------------------------------- baselines


def stock_app(tag: str, *, with_task: bool = False) -> Any:
    """A stock Celery app on the bench broker; ``with_task`` registers ``bench.noop`` for apply_async.

    Without it, beat's schedulers send ``bench.noop`` by name (``send_task``): the same message.
    """
    app = Celery(f"bench_{tag}", broker=REDIS_URL, set_as_current=False)
    app.conf.update(task_ignore_result=True, broker_connection_retry_on_startup=True)
    if with_task:

        @app.task(name="bench.noop", shared=False)
        def noop(i: int) -> None:  # never executed: no worker consumes the bench queues
            return None

        app.bench_noop = noop
    return app


def run_apply_async(app: Any, client: redis.Redis, n: int, queue: str) -> float:
    """Seconds for a plain loop of apply_async (stock Celery) until the queue holds n messages."""
    noop = app.bench_noop
    noop.apply_async(args=[-1], queue=queue)  # declare the queue and warm the connection pool
    client.delete(queue)
    started = time.perf_counter()
    for i in range(n):
        noop.apply_async(args=[i], queue=queue)
    wait_for_length(client, queue, n, 120)
    elapsed = time.perf_counter() - started
    client.delete(queue)
    return elapsed


def run_send_task_ours(app: Any, client: redis.Redis, n: int, queue: str) -> float:
    """Seconds for a loop of send_task with our Celery configuration (one call per id, no producer reuse)."""
    from scheduler.limits import TASK_NAME

    app.send_task(TASK_NAME, args=[-1], queue=queue, ignore_result=True)
    client.delete(queue)
    started = time.perf_counter()
    for i in range(n):
        app.send_task(TASK_NAME, args=[i], queue=queue, ignore_result=True, shadow=f"test:echo [bench-{i}]")
    wait_for_length(client, queue, n, 120)
    elapsed = time.perf_counter() - started
    client.delete(queue)
    return elapsed


def run_pipelined_ceiling(app: Any, client: redis.Redis, n: int, queue: str) -> float:
    """Seconds to LPUSH n copies of a message our publisher put on Redis (fresh ids) in pipelines of 1000.

    No Celery or kombu code per message: Redis's own cost, a ceiling for any publisher on Redis.
    """
    import base64
    import json
    import uuid

    from scheduler.records import Dispatch

    client.delete(queue)
    CeleryPublisher(app).publish([Dispatch(0, queue, "test:echo", "bench-0", timeout_s=60.0)])
    template = json.loads(client.lindex(queue, 0) or b"{}")
    client.delete(queue)
    started = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        task_id = str(uuid.uuid4())
        headers = {**template["headers"], "id": task_id, "root_id": task_id, "argsrepr": f"({i},)"}
        headers["shadow"] = f"test:echo [bench-{i}]"
        properties = {**template["properties"], "correlation_id": task_id, "delivery_tag": str(uuid.uuid4())}
        body = [[i], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
        message = {
            **template,
            "headers": headers,
            "properties": properties,
            "body": base64.b64encode(json.dumps(body).encode()).decode(),
        }
        pipe.lpush(queue, json.dumps(message))
        if len(pipe) >= 1000:
            pipe.execute()
    pipe.execute()
    wait_for_length(client, queue, n, 60)
    elapsed = time.perf_counter() - started
    client.delete(queue)
    return elapsed


def run_redbeat(client: redis.Redis, n: int, tag: str, queue: str) -> float | None:
    """Seconds for RedBeatScheduler ticks to put n due entries on the queue (None: not installed)."""
    try:
        from redbeat.schedulers import RedBeatJSONEncoder, RedBeatScheduler
    except ImportError:
        return None
    import json

    from celery.schedules import schedule

    app = stock_app(f"redbeat_{tag}")
    prefix = f"redbeat-{tag}:"
    app.conf.update(
        redbeat_redis_url=REDIS_URL,
        redbeat_key_prefix=prefix,
        redbeat_lock_key=None,
        redbeat_redis_options={},
        beat_max_loop_interval=5,
    )
    hourly = schedule(run_every=timedelta(hours=1), app=app)
    due_at = int(app.now().timestamp()) - 1  # redbeat compares whole-second scores
    last_run = json.dumps({"last_run_at": app.now() - timedelta(hours=2)}, cls=RedBeatJSONEncoder)
    schedule_key = prefix + ":schedule"
    with client.pipeline(transaction=False) as pipe:  # what RedBeatSchedulerEntry.save() writes, batched
        for i in range(n):
            definition = {
                "name": f"e{i}",
                "task": "bench.noop",
                "args": [i],
                "kwargs": {},
                "options": {"queue": queue},
                "schedule": hourly,
                "enabled": True,
            }
            key = f"{prefix}e{i}"
            pipe.hset(key, "definition", json.dumps(definition, cls=RedBeatJSONEncoder))
            pipe.hset(key, "meta", last_run)
            pipe.zadd(schedule_key, {key: due_at})
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()
    scheduler = RedBeatScheduler(app, lazy=False)
    client.delete(queue)
    started = time.perf_counter()
    ticks = 0
    while client.llen(queue) < n and ticks < 100:
        scheduler.tick()
        ticks += 1
    wait_for_length(client, queue, n, 60)
    elapsed = time.perf_counter() - started
    scheduler.close()
    client.delete(queue)
    return elapsed


def run_beat(client: redis.Redis, n: int, tag: str, queue: str, cap_s: float) -> tuple[float, int, bool]:
    """Stock celery.beat.Scheduler with n due entries: (seconds, messages sent, capped)."""
    from celery import beat

    app = stock_app(f"beat_{tag}")
    app.conf.beat_schedule = {
        f"e{i}": {
            "task": "bench.noop",
            "schedule": timedelta(hours=1),
            "args": (i,),
            "options": {"queue": queue},
        }
        for i in range(n)
    }
    scheduler = beat.Scheduler(app, lazy=False)
    past = app.now() - timedelta(hours=2)
    for entry in scheduler.schedule.values():
        entry.last_run_at = past
    scheduler._heap = None  # re-heap with the back-dated entries
    client.delete(queue)
    started = time.perf_counter()
    deadline = started + cap_s
    sent = 0
    while sent < n and time.perf_counter() < deadline:
        scheduler.tick()
        sent += 1
    sent = int(client.llen(queue))
    elapsed = time.perf_counter() - started
    scheduler.close()
    client.delete(queue)
    return elapsed, sent, sent < n


# --------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="tasks due at once (default 10000)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of ours and apply_async (default 3)")
    parser.add_argument(
        "--extra-reps", type=int, default=1, help="repetitions of the other baselines (default 1)"
    )
    parser.add_argument("--batch", type=int, default=None, help="planner_batch_size (default: the setting's)")
    parser.add_argument("--beat-seconds", type=float, default=10.0, help="cap of the stock beat run (s)")
    parser.add_argument("--skip-beat", action="store_true", help="skip the stock celery beat baseline")
    parser.add_argument("--skip-redbeat", action="store_true", help="skip the celery-redbeat baseline")
    parser.add_argument(
        "--profile-n", type=int, default=3000, help="tasks in the profiled burst (default 3000)"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the pyinstrument run")
    parser.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="do not freeze the heap after set-up (the planner's loop does)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    n = args.n

    tag = suffix()
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    figures = Figures()
    try:
        with temp_database() as url:
            engine = make_engine(url)
            overrides: dict[str, Any] = {"max_concurrent_tasks": max(n, 100)}
            if args.batch:
                overrides["planner_batch_size"] = args.batch
            settings = Settings(
                database_url=url, broker_url=REDIS_URL, default_queue=f"bench-{tag}", **overrides
            )
            info = machine_info(engine)
            stock = stock_app(tag, with_task=True)
            ours_app = create_app(settings)
            if not args.no_gc_freeze:
                freeze_start_up_heap()
            timeout = 60 + n / 200
            for rep in range(max(args.reps, args.extra_reps)):
                line = [f"rep {rep + 1}:"]
                if rep < args.reps:
                    run = run_ours(engine, settings, client, n, f"bench-ours-{tag}", timeout)
                    figures.ours.append(run)
                    figures.apply_s.append(run_apply_async(stock, client, n, f"bench-apply-{tag}"))
                    line.append(
                        f"ours {run.seconds:.2f} s ({run.rate:,.0f}/s, {len(run.ticks)} ticks, p99 lag "
                        f"{run.p99:.3f} s); apply_async {figures.apply_s[-1]:.2f} s;"
                    )
                if rep < args.extra_reps:
                    figures.send_s.append(run_send_task_ours(ours_app, client, n, f"bench-send-{tag}"))
                    figures.ceiling_s.append(run_pipelined_ceiling(ours_app, client, n, f"bench-pipe-{tag}"))
                    line.append(
                        f"send_task(our config) {figures.send_s[-1]:.2f} s; pipelined "
                        f"{figures.ceiling_s[-1]:.2f} s;"
                    )
                    if not args.skip_redbeat:
                        seconds = run_redbeat(client, n, f"{tag}{rep}", f"bench-redbeat-{tag}")
                        delete_keys(client, f"{tag}{rep}")
                        if seconds is not None:
                            figures.redbeat_s.append(seconds)
                            line.append(f"redbeat {seconds:.2f} s;")
                    if not args.skip_beat:
                        figures.beat.append(run_beat(client, n, tag, f"bench-beat-{tag}", args.beat_seconds))
                        line.append(f"beat {figures.beat[-1][1]} sent in {figures.beat[-1][0]:.2f} s")
                print(" ".join(line), flush=True)
            profile_n = min(n, args.profile_n)
            profile = (
                []
                if args.no_profile
                else profile_ours(engine, settings, client, profile_n, f"bench-prof-{tag}")
            )
            engine.dispose()
    finally:
        delete_keys(client, tag)

    body = summarise(args, n, figures)
    print("\n".join(body))
    if profile:
        print("\nProfile of the planner ticks (pyinstrument):\n" + "\n".join(profile))
        body += [
            "",
            f"Profile of the planner ticks of one burst of {profile_n} (pyinstrument, untimed run):",
            "",
            *profile,
        ]
    if not args.no_results:
        append_results("dispatch_burst", info, body, sys.argv[1:] if argv is None else argv)
    return 0


@dataclass
class Figures:
    ours: list[OursRun] = field(default_factory=list)
    apply_s: list[float] = field(default_factory=list)
    send_s: list[float] = field(default_factory=list)
    ceiling_s: list[float] = field(default_factory=list)
    redbeat_s: list[float] = field(default_factory=list)
    beat: list[tuple[float, int, bool]] = field(default_factory=list)


def summarise(args: argparse.Namespace, n: int, figures: Figures) -> list[str]:
    ours = figures.ours
    ours_s = median([r.seconds for r in ours])
    ours_rate = n / ours_s
    rows: list[tuple[str, ...]] = [
        (
            f"ours: planner + CeleryPublisher, DB work included ({args.reps})",
            f"{ours_s:.3f}",
            f"{ours_rate:,.0f}",
            "1.00",
        )
    ]

    def add(name: str, seconds: list[float], count: int = n) -> float:
        rate = count / median(seconds)
        rows.append(
            (f"{name} ({len(seconds)})", f"{median(seconds):.3f}", f"{rate:,.0f}", f"{ours_rate / rate:.2f}")
        )
        return rate

    apply_rate = add("apply_async loop, stock Celery, no DB", figures.apply_s)
    if figures.send_s:
        add("send_task loop, our Celery config, no DB", figures.send_s)
        add("pipelined LPUSH of a stored message, no Celery/kombu, no DB (ceiling)", figures.ceiling_s)
    if figures.redbeat_s:
        add(f"celery-redbeat, {n} due entries", figures.redbeat_s)
    if figures.beat:
        beat = figures.beat
        sent = int(median([b[1] for b in beat]))
        capped = any(b[2] for b in beat)
        cap = f", capped at {args.beat_seconds:.0f} s: {sent} sent" if capped else ""
        add(f"stock celery beat, {n} due entries{cap}", [b[0] for b in beat], sent)
    p50 = median([r.p50 for r in ours])
    p99 = median([r.p99 for r in ours])
    worst = median([r.max for r in ours])
    offset = median([r.start_offset for r in ours])
    ratio = ours_rate / apply_rate
    ticks = [len(r.ticks) for r in ours]
    first = ours[-1].ticks[0] if ours[-1].ticks else None
    return [
        f"N = {n} tasks due at one instant; medians (repetitions in brackets); planner_batch_size = "
        f"{args.batch or Settings().planner_batch_size}, max_concurrent_tasks = {max(n, 100)}; heap "
        f"{'not frozen' if args.no_gc_freeze else 'frozen after set-up, as the planner loop does'}.",
        "",
        *table(["run", "seconds", "executions/s", "ours / this"], rows),
        "",
        f"Ours: lag (enqueued_at - scheduled_for) p50 {p50:.3f} s, p99 {p99:.3f} s, max {worst:.3f} s "
        f"(the planner started {offset * 1000:.0f} ms after the slot); ticks per burst {ticks}; "
        f"rows queued {[r.queued for r in ours]}.",
        (
            f"First tick of the last run: due {first.due}, created {first.created}, dispatched "
            f"{first.dispatched}, {first.duration_s:.3f} s, more={first.more}."
            if first
            else ""
        ),
        "",
        f"Targets: ours >= {TARGET_RATIO:.0f}x apply_async: {ratio:.2f}x ({verdict(ratio >= TARGET_RATIO)}); "
        f">= {TARGET_RATE:,.0f} executions/s: {ours_rate:,.0f} ({verdict(ours_rate >= TARGET_RATE)}); "
        f"p99 lag < {TARGET_P99_S} s: {p99:.3f} s ({verdict(p99 < TARGET_P99_S)}).",
    ]


if __name__ == "__main__":
    raise SystemExit(main())
