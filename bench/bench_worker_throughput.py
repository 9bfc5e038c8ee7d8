"""No-op executions per second through one worker (prefork, 2 processes), beside raw Celery, same settings.

    .venv/bin/python bench/bench_worker_throughput.py [--count 1000] [--runs 3]

Needs PostgreSQL and Redis (``SCHEDULER_TEST_PG_URL``, ``SCHEDULER_TEST_REDIS_URL``; default: local ones).

- **scheduler**: ``count`` queued executions of a ``bench:noop`` task are inserted (not timed), then
  published through :class:`workers.publisher.CeleryPublisher` in batches of 500 as the planner's relay
  does; the clock stops when the last one is ``completed`` in PostgreSQL. Each one costs the worker a claim,
  a completion and two task events on Redis pub/sub, plus Celery's own work.
- **raw Celery**: ``count`` messages of a task whose body is one Redis ``INCR`` (how the bench sees it
  finish), on a worker with the same Celery settings (``workers.celery_config.build_config``: acks late,
  prefetch 1, events on); the clock stops when the counter reaches ``count``.

Both workers are started and warmed up before timing; each run uses a fresh queue. Prints the median of
``runs`` for both and their ratio.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

PG_ADMIN_URL = os.environ.get(  # psycopg 3, the recommended driver (docs/operations.md)
    "SCHEDULER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("SCHEDULER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MODE_ENV = "BENCH_WORKER_MODE"
COUNTER_ENV = "BENCH_COUNTER_KEY"
BATCH = 500
POLL_S = 0.1  # how often both runs look for their end (the poll's own load stays small)


# ----------------------------------------------------------------------------- the workers' -A module


def _raw_app() -> Any:
    import redis
    from celery import Celery

    from scheduler.settings import load_settings
    from workers.celery_config import build_config

    raw = Celery("raw-bench", set_as_current=False)
    raw.config_from_object(build_config(load_settings().settings))
    client = redis.Redis.from_url(REDIS_URL)
    key = os.environ.get(COUNTER_ENV, "bench:unused")

    @raw.task(name="bench.noop")  # type: ignore[untyped-decorator]
    def noop() -> None:
        client.incr(key)

    return raw


_registered: list[bool] = []


def _register_noop() -> None:
    if _registered:  # bench_scheduler runs once per interleaved run
        return
    from scheduler.commands import CommandContext, command

    @command("bench:noop", "Do nothing (benchmark).")
    def noop(ctx: CommandContext) -> None:
        return None

    _registered.append(True)


def __getattr__(name: str) -> Any:
    if name != "app":
        raise AttributeError(name)
    if os.environ.get(MODE_ENV) == "raw":
        return _raw_app()
    _register_noop()
    from workers import app as app_module

    return app_module.app


# ---------------------------------------------------------------------------------------------- bench


def start_worker(env: dict[str, str], queue: str, log: Path) -> subprocess.Popen[bytes]:
    argv = [
        str(Path(sys.executable).with_name("celery")), "-A", Path(__file__).stem, "worker", "-P", "prefork",
        "-c", "2", "-Q", queue, "-n", f"{queue}@%h", "--without-mingle", "--without-gossip", "-l", "WARNING",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return process


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


@dataclass(frozen=True)
class Run:
    rate: float  # tasks per second
    cpu_ms: dict[str, float]  # CPU milliseconds per task, by part (CpuSplit.PARTS)


class CpuSplit:
    """CPU seconds spent by the worker's main process, its pool processes, PostgreSQL and Redis.

    Wall-clock rates on a shared 2-core machine swing with other tenants' load (steal time); CPU time per
    execution, split by process, says where the work is and varies far less.
    """

    PARTS = ("main", "pool", "postgres", "redis")

    def __init__(self, worker_pid: int) -> None:
        import psutil

        self._psutil = psutil
        self._worker = psutil.Process(worker_pid)
        self._start = self._sample()

    def _sample(self) -> dict[str, float]:
        psutil = self._psutil
        totals = dict.fromkeys(self.PARTS, 0.0)

        def add(part: str, process: Any) -> None:
            try:
                times = process.cpu_times()
            except psutil.Error:
                return
            totals[part] += times.user + times.system

        add("main", self._worker)
        for child in self._worker.children(recursive=True):
            add("pool", child)
        for process in psutil.process_iter(["name"]):
            name = process.info["name"] or ""
            if name.startswith("postgres"):
                add("postgres", process)
            elif name.startswith("redis-server"):
                add("redis", process)
        return totals

    def per_task_ms(self, count: int) -> dict[str, float]:
        """Milliseconds of CPU per task since this split was made, by part."""
        end = self._sample()
        return {part: (end[part] - self._start[part]) / count * 1000 for part in self.PARTS}


def median_split(runs: list[Run]) -> dict[str, float]:
    return {part: statistics.median(r.cpu_ms[part] for r in runs) for part in CpuSplit.PARTS}


def cpu_text(split: dict[str, float]) -> str:
    return " ".join(f"{part} {ms:.2f}" for part, ms in split.items()) + " ms CPU/task"


def wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {what} did not happen within {timeout_s} s")
        time.sleep(POLL_S)


def bench_raw(count: int, runs: int, workdir: Path) -> list[Run]:
    import redis
    from celery import Celery

    from scheduler.settings import Settings
    from workers.celery_config import build_config

    client = redis.Redis.from_url(REDIS_URL)
    results = []
    for run in range(runs + 1):  # run 0 warms up
        queue, key = f"bench-raw-{uuid.uuid4().hex[:8]}", f"bench:{uuid.uuid4().hex}"
        env = dict(os.environ, **{MODE_ENV: "raw", COUNTER_ENV: key, "SCHEDULER_BROKER_URL": REDIS_URL})
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO)])
        worker = start_worker(env, queue, workdir / f"raw-{run}.log")
        try:
            sender = Celery("raw-sender", set_as_current=False)
            sender.config_from_object(build_config(Settings(broker_url=REDIS_URL, default_queue=queue)))
            sender.send_task("bench.noop", queue=queue)
            wait_until(lambda key=key: int(client.get(key) or 0) >= 1, 60, "the raw worker start")
            client.set(key, 0)
            n = count if run else min(count, 200)
            cpu = CpuSplit(worker.pid)
            started = time.monotonic()
            with sender.producer_or_acquire() as producer:
                for _ in range(n):
                    sender.send_task("bench.noop", queue=queue, producer=producer)
            wait_until(lambda key=key, n=n: int(client.get(key) or 0) >= n, 600, "the raw run")
            elapsed = time.monotonic() - started
            split = cpu.per_task_ms(n)
        finally:
            stop_worker(worker)
            client.delete(key)
        if run:
            results.append(Run(n / elapsed, split))
            print(
                f"raw celery run {run}: {n} tasks in {elapsed:.2f} s = {n / elapsed:.0f}/s; "
                f"{cpu_text(split)}",
                flush=True,
            )
    return results


def bench_scheduler(count: int, runs: int, workdir: Path) -> list[Run]:
    from sqlalchemy import func, insert, select, text

    from scheduler.records import Dispatch
    from scheduler.service import SchedulerService
    from scheduler.settings import Settings
    from scheduler.storage.db import make_engine
    from scheduler.storage.schema import upgrade
    from scheduler.storage.tables import executions
    from workers.app import create_app
    from workers.publisher import CeleryPublisher

    _register_noop()
    admin = make_engine(PG_ADMIN_URL).execution_options(isolation_level="AUTOCOMMIT")
    database = f"bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{database}"'))
    url = admin.url.set(database=database).render_as_string(hide_password=False)
    results = []
    try:
        engine = make_engine(url)
        upgrade(engine)
        for run in range(runs + 1):
            queue = f"bench-sched-{uuid.uuid4().hex[:8]}"
            settings = Settings(database_url=url, broker_url=REDIS_URL, default_queue=queue)
            service = SchedulerService.from_settings(settings, actor="bench")
            task = service.create_task(name=queue, command="bench:noop", queue=queue, retries=0)
            env = dict(os.environ, SCHEDULER_DATABASE_URL=url, SCHEDULER_BROKER_URL=REDIS_URL)
            # Our app configures logging from the settings (workers.app), not from `-l`: the same level as
            # the raw worker's `-l WARNING`, or ours would format three INFO lines per execution.
            env["SCHEDULER_LOG_LEVEL"] = "WARNING"
            env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO)])
            env.pop(MODE_ENV, None)
            worker = start_worker(env, queue, workdir / f"sched-{run}.log")
            publisher = CeleryPublisher(create_app(settings))
            n = count if run else min(count, 200)
            try:
                warm = service.run_task_now(task.id)
                publisher.publish([Dispatch(warm.id, queue, "bench:noop", task.name)])
                wait_until(
                    lambda warm=warm, service=service: service.get_execution(warm.id).status == "completed",
                    60,
                    "start",
                )
                with engine.begin() as connection:
                    rows = [
                        {
                            "task_id": task.id,
                            "task_name": task.name,
                            "command": "bench:noop",
                            "scheduled_for": func.now() + text(f"interval '{i + 1} microseconds'"),
                            "trigger": "manual",
                            "status": "queued",
                            "attempt": 1,
                            "max_attempts": 1,
                            "queue": queue,
                        }
                        for i in range(n)
                    ]
                    ids = [
                        row.id
                        for row in connection.execute(
                            insert(executions).values(rows).returning(executions.c.id)
                        )
                    ]
                done = select(func.count()).where(
                    executions.c.queue == queue, executions.c.status == "completed"
                )
                # Polled every POLL_S: look up the last few rows by key (they finish last, the queue being
                # FIFO) and count them all only then, so the poll costs PostgreSQL next to nothing.
                tail_done = select(func.count()).where(
                    executions.c.id.in_(ids[-4:]), executions.c.status == "completed"
                )

                def finished(n: int = n, done: Any = done, tail_done: Any = tail_done) -> bool:
                    with engine.connect() as connection:
                        if int(connection.execute(tail_done).scalar_one()) < min(n, 4):
                            return False
                        return int(connection.execute(done).scalar_one()) >= n + 1

                cpu = CpuSplit(worker.pid)
                started = time.monotonic()
                for first in range(0, n, BATCH):
                    batch = ids[first : first + BATCH]
                    publisher.publish([Dispatch(i, queue, "bench:noop", task.name, 0.0, 60.0) for i in batch])
                wait_until(finished, 600, "the scheduler run")
                elapsed = time.monotonic() - started
                split = cpu.per_task_ms(n)
            finally:
                stop_worker(worker)
                service.engine.dispose()
            if run:
                results.append(Run(n / elapsed, split))
                print(
                    f"scheduler run {run}: {n} executions in {elapsed:.2f} s = {n / elapsed:.0f}/s; "
                    f"{cpu_text(split)}",
                    flush=True,
                )
        engine.dispose()
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
    return results


TARGET_RATIO = 0.8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="tasks per run (default 1000)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each (default 3)")
    parser.add_argument(
        "--no-interleave",
        action="store_true",
        help="all raw runs, then all scheduler runs (default: alternate, so machine load drifts evenly)",
    )
    parser.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-worker-{uuid.uuid4().hex[:6]}"
    workdir.mkdir(parents=True)
    if args.no_interleave:
        raw = bench_raw(args.count, args.runs, workdir)
        ours = bench_scheduler(args.count, args.runs, workdir)
    else:
        raw, ours = [], []
        for _ in range(args.runs):  # each call starts (and warms up) its own worker
            raw += bench_raw(args.count, 1, workdir)
            ours += bench_scheduler(args.count, 1, workdir)
    raw_median = statistics.median(r.rate for r in raw)
    ours_median = statistics.median(r.rate for r in ours)
    ratio = ours_median / raw_median
    # Alternating runs: each scheduler run's rate over the raw run just before it (same machine load).
    paired = [o.rate / r.rate for r, o in zip(raw, ours, strict=True)]
    paired_median = statistics.median(paired)
    raw_cpu, ours_cpu = median_split(raw), median_split(ours)
    lines = [
        f"raw celery no-op tasks: median {raw_median:.0f}/s over {args.runs} runs of {args.count}; "
        f"{cpu_text(raw_cpu)}",
        f"scheduler executions:   median {ours_median:.0f}/s over {args.runs} runs of {args.count}; "
        f"{cpu_text(ours_cpu)}",
        f"ratio scheduler/raw:    {ratio:.2f} (median of paired runs {paired_median:.2f})",
    ]
    print("\n".join(lines))
    if args.no_results:
        return
    from bench._common import append_results, machine_info, table, verdict

    def row(label: str, runs: list[Run], median: float, split: dict[str, float]) -> tuple[str, ...]:
        rates = " ".join(f"{r.rate:.0f}" for r in runs)
        return (
            f"{label} ({len(runs)})",
            f"{median:,.0f}",
            rates,
            *(f"{split[p]:.2f}" for p in CpuSplit.PARTS),
        )

    rows = [
        row("raw Celery, task body one Redis INCR", raw, raw_median, raw_cpu),
        row("scheduler, bench:noop execution", ours, ours_median, ours_cpu),
    ]
    cpu_headers = [f"{part} ms CPU/task" for part in CpuSplit.PARTS]
    body = [
        f"{args.count} no-op executions per run through one worker (prefork -c 2), runs "
        f"{'one after the other' if args.no_interleave else 'alternating'}; each worker warmed up first. "
        "CPU per task: medians over the runs, by process (worker main process, its pool processes, all "
        "PostgreSQL processes, Redis).",
        "",
        *table(["run", "median /s", "runs /s", *cpu_headers], rows),
        "",
        f"Paired ratios (scheduler run / raw run before it): {' '.join(f'{p:.2f}' for p in paired)}.",
        "",
        f"Target: scheduler >= {TARGET_RATIO} x raw Celery: {ratio:.2f} x by medians, {paired_median:.2f} x "
        f"by paired runs ({verdict(min(ratio, paired_median) >= TARGET_RATIO)}).",
    ]
    append_results("bench_worker_throughput", machine_info(), body, sys.argv[1:])


if __name__ == "__main__":
    main()
