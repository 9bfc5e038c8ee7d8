"""CLI latency: wall time of ``systemprompt`` verbs against a database of 10k tasks and 1M executions.

Set-up (not timed): a fresh migrated database; ``--tasks`` tasks (the varied population of
``bench.idle_tick``) and ``--executions`` executions spread over them (finished, with durations; a few
queued and running), both inserted server-side with ``INSERT ... SELECT generate_series``, then
``VACUUM ANALYZE``.

Each command runs as a subprocess (``SCHEDULER_DATABASE_URL`` set, cwd = the repository, stdout to a pipe as
a script would read it): one warm-up, then ``--runs`` timed runs, round-robin across the commands so machine
noise spreads evenly. Baseline in the same run: the bare interpreter (``python -c pass``). Targets:
``--help`` < 0.3 s, ``scheduler:list`` and ``scheduler:history --limit 50`` < 0.5 s.

Then (unless ``--no-profile``) ``python -X importtime`` shows the import time by package of ``--help`` and
``scheduler:list``, and pyinstrument profiles ``scheduler:list`` and ``scheduler:history`` in-process.

    python -m bench.cli_latency [--tasks 10000] [--executions 1000000] [--runs 5]
                                [--no-profile] [--no-results]
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import time
from contextlib import redirect_stdout
from pathlib import Path

from sqlalchemy import Connection, text

from bench._common import (
    ROOT,
    append_results,
    insert_tasks,
    machine_info,
    median,
    profile_summary,
    table,
    temp_database,
    vacuum_analyze,
    verdict,
)
from bench.idle_tick import task_columns

BIN = Path(sys.executable).parent
SYSTEMPROMPT = str(BIN / "systemprompt")
# (label, argv, target seconds or None)
COMMANDS: tuple[tuple[str, list[str], float | None], ...] = (
    ("python -c pass (baseline)", [sys.executable, "-c", "pass"], None),
    ("systemprompt --help", [SYSTEMPROMPT, "--help"], 0.3),
    ("scheduler:list", [SYSTEMPROMPT, "scheduler:list"], 0.5),
    ("scheduler:list --format json", [SYSTEMPROMPT, "scheduler:list", "--format", "json"], None),
    ("scheduler:list --limit 50", [SYSTEMPROMPT, "scheduler:list", "--limit", "50"], None),
    ("scheduler:history --limit 50", [SYSTEMPROMPT, "scheduler:history", "--limit", "50"], 0.5),
    (
        "scheduler:history --limit 50 --format json",
        [SYSTEMPROMPT, "scheduler:history", "--limit", "50", "--format", "json"],
        None,
    ),
)

EXECUTION_COLUMNS = {
    "task_id": "(i % :tasks) + 1",
    "task_name": "'bench-' || ((i % :tasks) + 1)",
    "command": "'test:echo'",
    "scheduled_for": ":base + (i / :tasks) * interval '1 minute'",
    "trigger": "CASE WHEN i % 97 = 0 THEN 'manual' ELSE 'schedule' END",
    "status": (
        "CASE WHEN i >= :total - 20 THEN 'queued' WHEN i >= :total - 40 THEN 'running' "
        "WHEN i % 50 = 0 THEN 'failed' WHEN i % 333 = 0 THEN 'skipped' ELSE 'completed' END"
    ),
    "attempt": "1",
    "max_attempts": "1",
    "queue": "'default'",
    "worker": "'celery@bench-' || (i % 4)",
    "created_at": ":base + (i / :tasks) * interval '1 minute'",
    "enqueued_at": ":base + (i / :tasks) * interval '1 minute' + interval '20 ms'",
    "started_at": ":base + (i / :tasks) * interval '1 minute' + interval '40 ms'",
    "finished_at": (
        "CASE WHEN i >= :total - 40 THEN NULL ELSE :base + (i / :tasks) * interval '1 minute' "
        "+ interval '240 ms' END"
    ),
    "duration_ms": "CASE WHEN i >= :total - 40 THEN NULL ELSE 200 + i % 100 END",
    "result": """CASE WHEN i % 50 = 0 THEN NULL ELSE jsonb_build_object('echo', i) END""",
    "error": "CASE WHEN i % 50 = 0 THEN 'exit status 1' ELSE NULL END",
}


def insert_executions(connection: Connection, total: int, tasks: int, chunk: int = 250_000) -> None:
    names = ", ".join(EXECUTION_COLUMNS)
    expressions = ", ".join(EXECUTION_COLUMNS.values())
    statement = text(
        f"INSERT INTO task_executions ({names}) SELECT {expressions} "
        "FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS i"
    )
    base = connection.execute(
        text("SELECT now() - :span * interval '1 minute'"), {"span": total // tasks + 1}
    )
    start = base.scalar_one()
    for lo in range(0, total, chunk):
        hi = min(lo + chunk, total) - 1
        connection.execute(statement, {"lo": lo, "hi": hi, "tasks": tasks, "total": total, "base": start})


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, int, int]:
    """(seconds, exit code, bytes of stdout)."""
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, timeout=300, check=False)
    elapsed = time.perf_counter() - started
    return elapsed, done.returncode, len(done.stdout)


def import_times(argv: list[str], env: dict[str, str], top: int = 10) -> list[tuple[str, float]]:
    """Import time by top-level package (self times summed, seconds) from ``python -X importtime``."""
    command = [sys.executable, "-X", "importtime", "-m", "cli.main", *argv[1:]]
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    by_package: dict[str, float] = {}
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if match:
            package = match.group(2).split(".")[0]
            by_package[package] = by_package.get(package, 0.0) + int(match.group(1)) / 1e6
    heaviest = sorted(by_package.items(), key=lambda item: -item[1])[:top]
    return [("(all imports)", sum(by_package.values())), *heaviest]


def profile_child(argv: list[str]) -> int:
    """Run one CLI command in this process under pyinstrument; print the summary."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    sink = io.StringIO()
    profiler.start()
    try:
        with redirect_stdout(sink):
            from cli.main import main as cli_main

            cli_main(argv)
    except SystemExit:
        pass
    profiler.stop()
    print("\n".join(profile_summary(profiler.last_session, top=10)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks (default 10000)")
    parser.add_argument("--executions", type=int, default=1_000_000, help="executions (default 1000000)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command (default 5)")
    parser.add_argument("--no-profile", action="store_true", help="skip import times and pyinstrument")
    parser.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    parser.add_argument("--profile-child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.profile_child is not None:
        return profile_child(args.profile_child)

    from scheduler.storage.db import make_engine

    with temp_database() as url:
        engine = make_engine(url)
        info = machine_info(engine)
        started = time.perf_counter()
        with engine.begin() as connection:
            insert_tasks(connection, args.tasks, columns=task_columns(0), params={"queue": "default"})
            insert_executions(connection, args.executions, args.tasks)
        vacuum_analyze(engine, "scheduled_tasks", "task_executions")
        setup = time.perf_counter() - started
        print(f"set-up: {args.tasks:,} tasks, {args.executions:,} executions in {setup:.1f} s", flush=True)
        engine.dispose()

        env = {**os.environ, "SCHEDULER_DATABASE_URL": url}
        env.pop("SCHEDULER_DEBUG", None)
        times: dict[str, list[float]] = {label: [] for label, _, _ in COMMANDS}
        sizes: dict[str, int] = {}
        for label, command, _ in COMMANDS:  # warm-up (page cache, .pyc files)
            _, code, size = run_once(command, env)
            if code != 0:
                raise RuntimeError(f"{label} exited {code}")
            sizes[label] = size
        for _ in range(args.runs):
            for label, command, _ in COMMANDS:
                seconds, code, _ = run_once(command, env)
                if code != 0:
                    raise RuntimeError(f"{label} exited {code}")
                times[label].append(seconds)
        baseline = median(times[COMMANDS[0][0]])
        rows = []
        for label, _, target in COMMANDS:
            value = median(times[label])
            rows.append(
                (
                    label,
                    f"{value:.3f}",
                    f"{min(times[label]):.3f}",
                    f"{value - baseline:.3f}",
                    f"{sizes[label]:,}",
                    "" if target is None else f"< {target} s: {verdict(value < target)}",
                )
            )
        body = [
            f"{args.tasks:,} tasks, {args.executions:,} executions (set-up {setup:.0f} s, not timed). "
            f"Wall time of a subprocess, median of {args.runs} runs after one warm-up.",
            "",
            *table(
                ["command", "median (s)", "min (s)", "minus baseline (s)", "stdout bytes", "target"], rows
            ),
        ]
        print("\n".join(body), flush=True)

        if not args.no_profile:
            for label, command in (
                ("systemprompt --help", COMMANDS[1][1]),
                ("scheduler:list", COMMANDS[2][1]),
            ):
                heaviest = import_times(command, env)
                body += [
                    "",
                    f"Import time of `{label}` by package (python -X importtime, self times summed):",
                    "",
                ]
                body += table(
                    ["package", "seconds"], [(name, f"{seconds:.3f}") for name, seconds in heaviest]
                )
            for label, verb in (
                ("scheduler:list", ["scheduler:list"]),
                ("scheduler:history --limit 50", ["scheduler:history", "--limit", "50"]),
            ):
                done = subprocess.run(
                    [sys.executable, "-m", "bench.cli_latency", "--profile-child", *verb],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=300,
                    check=False,
                )
                body += ["", f"Profile of `{label}` in-process (pyinstrument, imports included):", ""]
                body += done.stdout.strip().splitlines() or [f"(failed: {done.stderr[-500:]})"]
            print("\n".join(body[len(rows) + 4 :]))
    if not args.no_results:
        append_results("cli_latency", info, body, sys.argv[1:] if argv is None else argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
