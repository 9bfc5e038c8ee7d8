"""Tasks as code: ``scheduler:apply`` of a 10,000-task file into an empty database, the no-change
``scheduler:plan`` of the same file, and, in the same run, 10,000 single ``create_task`` calls through the
Python API (the only way in before tasks files).

The file mixes every schedule kind (cron in several zones, intervals, once instants, manual) and sets most
fields on some tasks (data, retries, policies, bounds). Apply and plan run as the real ``systemprompt``
executable (a subprocess, as CI would run them: process start included); ``create_task`` runs in this
process on a service of its own, into a second empty database. On the embedded default (SQLite) and, unless
``--no-postgres``, on a fresh PostgreSQL database. Targets: apply < 10 s, no-change plan < 3 s.

    python -m bench.tasks_as_code [--tasks 10000] [--runs 3] [--no-postgres] [--no-results]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench._common import append_results, machine_info, median, table, temp_database, verdict

SYSTEMPROMPT = Path(sys.executable).with_name("systemprompt")
APPLY_TARGET_S = 10.0
PLAN_TARGET_S = 3.0
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo")


def task_entry(i: int) -> dict[str, Any]:
    """Task ``i`` of the file: every fourth kind in turn, with optional fields on some."""
    entry: dict[str, Any] = {"key": f"k{i}", "name": f"task-{i:05d}", "command": "test:echo"}
    kind = i % 4
    if kind == 0:
        entry |= {"schedule": f"{i % 60} {i % 24} * * *", "timezone": ZONES[i % len(ZONES)]}
    elif kind == 1:
        entry["schedule"] = f"{1 + i % 90}m"
    elif kind == 2:
        entry["schedule"] = f"2031-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:00:00Z"
    else:
        entry["schedule"] = "manual"
    if i % 3 == 0:
        entry |= {"data": {"n": i, "tags": ["a", "b"]}, "retries": i % 5, "overlap_policy": "forbid"}
    if i % 7 == 0:
        entry |= {"end_at": "2040-01-01T00:00:00Z", "max_runs": 1000, "queue": "reports"}
    return entry


def write_file(path: Path, count: int) -> None:
    document = {"version": 1, "source": "bench", "tasks": [task_entry(i) for i in range(count)]}
    dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    path.write_text(yaml.dump(document, Dumper=dumper, sort_keys=False), encoding="utf-8")


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float  # user + system of the child: what the machine's other load does not inflate

    def text(self) -> str:
        return f"{self.wall:.2f} s (CPU {self.cpu:.2f} s)"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_cli(env: dict[str, str], *args: str) -> Timing:
    cpu, start = _children_cpu(), time.perf_counter()
    done = subprocess.run([str(SYSTEMPROMPT), *args], env=env, capture_output=True, text=True, check=False)
    timing = Timing(time.perf_counter() - start, _children_cpu() - cpu)
    if done.returncode not in (0, 10):
        raise SystemExit(f"systemprompt {' '.join(args)} -> {done.returncode}: {done.stderr.strip()}")
    return timing


def median_timing(timings: list[Timing]) -> Timing:
    return Timing(median([t.wall for t in timings]), median([t.cpu for t in timings]))


def create_loop(url: str, count: int) -> float:
    """``count`` single create_task calls of the file's tasks, in this process."""
    from scheduler.service import SchedulerService
    from scheduler.settings import Settings

    service = SchedulerService.from_settings(Settings(database_url=url), actor="bench")
    entries = [task_entry(i) for i in range(count)]
    for entry in entries:
        entry.pop("key")
    try:
        start = time.perf_counter()
        for entry in entries:
            service.create_task(**entry)
        return time.perf_counter() - start
    finally:
        service.engine.dispose()


@contextmanager
def sqlite_urls(workdir: Path) -> Iterator[tuple[str, str]]:
    yield f"sqlite:///{workdir / 'apply.db'}", f"sqlite:///{workdir / 'create.db'}"


@contextmanager
def postgres_urls() -> Iterator[tuple[str, str]]:
    with temp_database() as apply_url, temp_database() as create_url:
        yield apply_url, create_url


def measure(
    name: str, urls: tuple[str, str], file: Path, workdir: Path, args: argparse.Namespace
) -> list[Any]:
    apply_url, create_url = urls
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
    env |= {"SCHEDULER_DATABASE_URL": apply_url, "SCHEDULER_HOME": str(workdir / ".scheduler")}
    run_cli(env, "scheduler:list", "--limit", "1")  # creates / migrates the embedded database, untimed
    applied = run_cli(env, "scheduler:apply", "-f", str(file), "--actor", "bench", "--format", "json")
    plans = [run_cli(env, "scheduler:plan", "-f", str(file), "--format", "json") for _ in range(args.runs)]
    plan = median_timing(plans)
    again = run_cli(env, "scheduler:apply", "-f", str(file), "--actor", "bench", "--format", "json")
    creates = create_loop(create_url, args.tasks)
    print(f"{name}: apply {applied.text()}, plan {plan.text()}, create loop {creates:.2f} s", flush=True)
    return [
        name,
        f"{applied.text()} {verdict(applied.wall < APPLY_TARGET_S)}",
        f"{plan.text()} {verdict(plan.wall < PLAN_TARGET_S)}",
        again.text(),
        f"{creates:.2f} s ({args.tasks / creates:.0f}/s)",
        f"{creates / applied.wall:.1f}x",
        " / ".join(f"{value:.1f}" for value in os.getloadavg()),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3, help="no-change plans timed (median reported)")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-tac-") as tmp:
        workdir = Path(tmp)
        file = workdir / "tasks.yaml"
        write_file(file, args.tasks)
        size_kb = file.stat().st_size / 1024
        with sqlite_urls(workdir) as urls:
            rows.append(measure("SQLite (embedded)", urls, file, workdir, args))
        if not args.no_postgres:
            with postgres_urls() as urls:
                rows.append(measure("PostgreSQL", urls, file, workdir, args))
    headers = (
        "database",
        f"apply {args.tasks} into empty (< {APPLY_TARGET_S:.0f} s)",
        f"no-change plan, median of {args.runs} (< {PLAN_TARGET_S:.0f} s)",
        "second apply (no-op)",
        f"{args.tasks} x create_task",
        "create loop / apply",
        "load average after (1/5/15 min)",
    )
    body = [
        f"A {args.tasks}-task YAML file ({size_kb:.0f} KiB; cron, interval, once and manual tasks). apply "
        "and plan are the real executable (process start included); create_task runs in-process into its "
        "own empty database. Wall time is judged; the CPU time (user + system of the child) is what the "
        "machine's other load does not inflate (2 cores shared with other work).",
        "",
        *table(headers, rows),
    ]
    print("\n".join(body))
    if not args.no_results:
        append_results("tasks_as_code", machine_info(), body, sys.argv[1:])


if __name__ == "__main__":
    main()
