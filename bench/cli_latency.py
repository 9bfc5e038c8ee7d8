"""CLI latency: wall time of the read verbs (list, history, next, validate) on three databases.

Scenarios, each set up untimed in a throw-away working directory that holds a copy of ``module.yaml``:

- embedded, small: the embedded default (SQLite under ``./.scheduler``, no ``SCHEDULER_*`` variable), two
  tasks created with ``scheduler:create`` and ``--small-executions`` finished executions;
- PostgreSQL, small: the same two tasks and executions in a fresh migrated database;
- PostgreSQL, large (unless ``--no-large``): ``--tasks`` tasks (the varied population of ``bench.idle_tick``)
  and ``--executions`` executions spread over them (finished, with durations; a few queued and running), both
  inserted server-side with ``INSERT ... SELECT generate_series``, then ``VACUUM ANALYZE``.

Each command runs as a subprocess (stdout to a pipe, as a script would read it; ``.pyc`` files written, as
for an installed package, even when ``PYTHONDONTWRITEBYTECODE`` is set here): one warm-up, then ``--runs``
timed runs, round-robin across the scenario's commands so machine noise spreads evenly. Reported per command:
median and minimum wall time, median CPU time (user + system of the child: less sensitive than wall time to
other processes on a shared machine), the median minus the bare interpreter's (``python -c pass``, measured in
the same round), and the verdict. Targets: every read verb under 0.3 s at the small sizes and under 0.5 s at
10k tasks / 1M executions; ``--help`` under 0.3 s.

Then (unless ``--no-profile``) ``python -X importtime`` shows the import time by package of ``--help`` and
of each read verb on the embedded default, and pyinstrument profiles ``list``, ``history`` and ``next``
in-process on the large database (on the small PostgreSQL one with ``--no-large``).

With ``--before DIR`` (another checkout, e.g. ``git worktree add /tmp/before main``) every judged command
is also run on that checkout's code (its directory first on ``PYTHONPATH``, ahead of the installed package),
interleaved in the same rounds: a before/after under the same machine load.

    python -m bench.cli_latency [--tasks 10000] [--executions 1000000] [--runs 5] [--no-large]
                                [--before DIR] [--no-profile] [--no-results]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, MetaData, Table, create_engine, select, text

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
SMALL_TARGET_S = 0.3
LARGE_TARGET_S = 0.5
HELP_TARGET_S = 0.3
SMALL_TASKS = (("bench-echo", "10s"), ("bench-nightly", "0 2 * * *"))
READ_VERBS: tuple[tuple[str, ...], ...] = (
    ("scheduler:list",),
    ("scheduler:history",),
    ("scheduler:next",),
    ("scheduler:validate", "--schedule", "*/5 * * * *"),
)
# Shown at the large size for comparison, not judged.
LARGE_EXTRAS: tuple[tuple[str, ...], ...] = (
    ("scheduler:list", "--limit", "50"),
    ("scheduler:list", "--format", "json"),
    ("scheduler:history", "--format", "json"),
)
# Heavy packages whose import times the importtime tables single out (none of them is needed to read).
WATCHED = ("celery", "kombu", "redis", "alembic", "rich", "pydantic", "pydantic_settings", "croniter")


@dataclass(frozen=True)
class Case:
    label: str
    argv: list[str]
    target: float | None  # None: shown, not judged
    pythonpath: str | None = None  # another checkout's modules, ahead of the installed ones (--before)


@dataclass
class Timing:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    stdout_bytes: int = 0


BASELINE = Case("python -c pass (baseline)", [sys.executable, "-c", "pass"], None)


def verb_cases(verbs: Sequence[tuple[str, ...]], target: float | None) -> list[Case]:
    return [Case(" ".join(verb), [SYSTEMPROMPT, *verb], target) for verb in verbs]


def with_before(cases: Sequence[Case], before: Path | None) -> list[Case]:
    """``cases``, each judged one followed by the same command run on the checkout ``before`` (not judged)."""
    result = []
    for case in cases:
        result.append(case)
        if before is not None and case.target is not None:
            result.append(Case(f"before: {case.label}", case.argv, None, pythonpath=str(before)))
    return result


# ------------------------------------------------------------------------------------------------- set-up

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
    """``total`` executions over ``tasks`` tasks, server-side (PostgreSQL)."""
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


def create_small(workdir: Path, env: dict[str, str], url: str, executions: int) -> None:
    """The two tasks of the small scenarios, through the CLI, and ``executions`` finished runs of the first
    (a plain insert into the reflected table: SQLite and PostgreSQL alike)."""
    for name, schedule in SMALL_TASKS:
        command = [SYSTEMPROMPT, "scheduler:create", "--name", name, "--command", "test:echo"]
        subprocess.run(
            [*command, "--schedule", schedule], cwd=workdir, env=env, capture_output=True, check=True
        )
    engine = create_engine(url)
    runs = Table("task_executions", MetaData(), autoload_with=engine)
    tasks = Table("scheduled_tasks", MetaData(), autoload_with=engine)
    now = datetime.now(UTC).replace(microsecond=0)
    with engine.begin() as connection:
        task_id, task_name = connection.execute(
            select(tasks.c.id, tasks.c.name).order_by(tasks.c.id).limit(1)
        ).one()
        rows = []
        for k in range(executions):
            slot = now - timedelta(minutes=executions - k)
            failed = k % 10 == 9
            rows.append(
                {
                    "task_id": task_id,
                    "task_name": task_name,
                    "command": "test:echo",
                    "scheduled_for": slot,
                    "trigger": "schedule",
                    "status": "failed" if failed else "completed",
                    "attempt": 1,
                    "max_attempts": 1,
                    "queue": "default",
                    "worker": "celery@bench",
                    "created_at": slot,
                    "enqueued_at": slot,
                    "started_at": slot,
                    "finished_at": slot + timedelta(milliseconds=240),
                    "duration_ms": 240,
                    "result": None if failed else {"echo": k},
                    "error": "exit status 1" if failed else None,
                }
            )
        connection.execute(runs.insert(), rows)
    engine.dispose()


def workspace() -> Path:
    """A throw-away working directory with the repository's ``module.yaml``, as a project would have."""
    workdir = Path(tempfile.mkdtemp(prefix="cli_latency_"))
    shutil.copy(ROOT / "module.yaml", workdir / "module.yaml")
    return workdir


def clean_env(url: str | None) -> dict[str, str]:
    """This environment without ``SCHEDULER_*`` variables (but ``url``, when given) and without
    ``PYTHONDONTWRITEBYTECODE``: the warm-up writes the .pyc files an installed package has."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("SCHEDULER_") and key != "PYTHONDONTWRITEBYTECODE"
    }
    if url is not None:
        env["SCHEDULER_DATABASE_URL"] = url
    return env


# ---------------------------------------------------------------------------------------------- measuring


def run_once(case: Case, cwd: Path, env: dict[str, str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the child, bytes of stdout); a failed command stops the benchmark."""
    argv = case.argv
    if case.pythonpath is not None:
        env = {**env, "PYTHONPATH": case.pythonpath}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, timeout=300, check=False)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[1:]} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return elapsed, cpu, len(done.stdout)


def measure(cases: Sequence[Case], cwd: Path, env: dict[str, str], runs: int) -> dict[str, Timing]:
    """One warm-up per case (page cache, .pyc files), then ``runs`` rounds over all cases."""
    timings = {case.label: Timing() for case in cases}
    for case in cases:
        timings[case.label].stdout_bytes = run_once(case, cwd, env)[2]
    for _ in range(runs):
        for case in cases:
            wall, cpu, _ = run_once(case, cwd, env)
            timings[case.label].wall.append(wall)
            timings[case.label].cpu.append(cpu)
    return timings


def report(title: str, cases: Sequence[Case], timings: dict[str, Timing]) -> tuple[list[str], bool]:
    """Markdown lines of one scenario, and whether every judged command met its target."""
    baseline = median(timings[BASELINE.label].wall)
    rows, met = [], True
    for case in cases:
        timing = timings[case.label]
        value = median(timing.wall)
        judged = ""
        if case.target is not None:
            met = met and value < case.target
            judged = f"< {case.target} s: {verdict(value < case.target)}"
        rows.append(
            (
                case.label,
                f"{value:.3f}",
                f"{min(timing.wall):.3f}",
                f"{median(timing.cpu):.3f}",
                f"{value - baseline:.3f}",
                f"{timing.stdout_bytes:,}",
                judged,
            )
        )
    headers = ["command", "median (s)", "min (s)", "CPU median (s)", "minus baseline (s)", "stdout bytes"]
    return ["", f"### {title}", "", *table([*headers, "target"], rows)], met


def import_times(
    args: Sequence[str], cwd: Path, env: dict[str, str], top: int = 8, repeat: int = 3
) -> list[tuple[str, float]]:
    """Import time by top-level package (self times summed, seconds; the median of ``repeat`` runs of
    ``python -X importtime``)."""
    command = [sys.executable, "-X", "importtime", "-m", "cli.main", *args]
    runs: list[dict[str, float]] = []
    for _ in range(repeat):
        done = subprocess.run(
            command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
        )
        by_package: dict[str, float] = {}
        for line in done.stderr.splitlines():
            match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
            if match:
                package = match.group(2).split(".")[0]
                by_package[package] = by_package.get(package, 0.0) + int(match.group(1)) / 1e6
        runs.append(by_package)
    packages = {name for measured in runs for name in measured}
    medians = {name: median([measured.get(name, 0.0) for measured in runs]) for name in packages}
    heaviest = sorted(medians.items(), key=lambda item: -item[1])[:top]
    watched = [(f"{name} (watched)", medians[name]) for name in WATCHED if name in medians]
    total = median([sum(measured.values()) for measured in runs])
    return [("(all imports)", total), *heaviest, *watched]


def import_table(cwd: Path, env: dict[str, str]) -> list[str]:
    """One table: the heaviest packages of ``--help`` and of each read verb, side by side."""
    columns = [("--help",), *READ_VERBS]
    per_verb = [dict(import_times(list(args), cwd, env)) for args in columns]
    names: list[str] = []
    for measured in per_verb:
        names += [name for name in measured if name not in names]
    rows = [
        (name, *(f"{measured[name]:.3f}" if name in measured else "-" for measured in per_verb))
        for name in names
    ]
    headers = ["package", *(args[0].removeprefix("scheduler:") for args in columns)]
    return [
        "",
        "Import time by package on the embedded default (python -X importtime, self times summed, seconds, "
        "median of 3 runs; "
        f"'watched': {', '.join(WATCHED)}, listed when imported at all):",
        "",
        *table(headers, rows),
    ]


def profiles(where: str, cwd: Path, env: dict[str, str]) -> list[str]:
    """pyinstrument profiles of ``list``, ``history`` and ``next``, each run by pyinstrument's own command
    line (``-m cli.main``) in a fresh process, so every import of the verb is in the profile."""
    from pyinstrument.session import Session

    body: list[str] = []
    for verb in READ_VERBS[:3]:
        with tempfile.TemporaryDirectory() as scratch:
            session_file = Path(scratch) / "profile.pyisession"
            command = [sys.executable, "-m", "pyinstrument", "-i", "0.0005", "-r", "pyisession"]
            done = subprocess.run(
                [*command, "-o", str(session_file), "-m", "cli.main", *verb],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            summary = (
                profile_summary(Session.load(str(session_file)), top=10)
                if session_file.exists()
                else [f"(failed: {done.stderr[-500:]})"]
            )
        body += [
            "",
            f"Profile of `{' '.join(verb)}` on {where} (pyinstrument, imports included, exit not):",
            "",
            *summary,
        ]
    return body


# ------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks of the large size (default 10000)")
    parser.add_argument(
        "--executions", type=int, default=1_000_000, help="executions of the large size (default 1000000)"
    )
    parser.add_argument(
        "--small-executions", type=int, default=20, help="executions of the small size (default 20)"
    )
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command (default 5)")
    parser.add_argument("--no-large", action="store_true", help="only the small sizes")
    parser.add_argument("--no-profile", action="store_true", help="skip import times and pyinstrument")
    parser.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    parser.add_argument(
        "--before",
        type=Path,
        metavar="DIR",
        help="also time each judged command on the checkout DIR (e.g. git worktree add DIR main~3), "
        "in the same rounds: a same-run before/after",
    )
    args = parser.parse_args(argv)
    info = machine_info()
    workdir = workspace()
    before = None if args.before is None else args.before.resolve()
    small_cases = with_before([BASELINE, *verb_cases(READ_VERBS, SMALL_TARGET_S)], before)
    body = [
        f"Wall time of a subprocess, median of {args.runs} runs after one warm-up; small: "
        f"{len(SMALL_TASKS)} tasks, {args.small_executions} executions.",
    ]
    verdicts: list[tuple[str, bool]] = []
    extra: list[str] = []
    try:
        env = clean_env(None)
        url = f"sqlite:///{workdir / '.scheduler' / 'scheduler.db'}"
        create_small(workdir, env, url, args.small_executions)
        help_case = Case("systemprompt --help", [SYSTEMPROMPT, "--help"], HELP_TARGET_S)
        cases = [BASELINE, *with_before([help_case], before), *small_cases[1:]]
        lines, met = report(
            "Embedded default (SQLite), small", cases, measure(cases, workdir, env, args.runs)
        )
        print("\n".join(lines), flush=True)
        body += lines
        verdicts.append(("embedded, small", met))
        if not args.no_profile:
            extra += import_table(workdir, env)

        with temp_database() as url:
            env = clean_env(url)
            create_small(workdir, env, url, args.small_executions)
            lines, met = report(
                "PostgreSQL, small", small_cases, measure(small_cases, workdir, env, args.runs)
            )
            print("\n".join(lines), flush=True)
            body += lines
            verdicts.append(("PostgreSQL, small", met))
            if args.no_large and not args.no_profile:
                extra += profiles("the small PostgreSQL database", workdir, env)

        if not args.no_large:
            with temp_database() as url:
                engine = create_engine(url)
                started = time.perf_counter()
                with engine.begin() as connection:
                    insert_tasks(connection, args.tasks, columns=task_columns(0), params={"queue": "default"})
                    insert_executions(connection, args.executions, args.tasks)
                vacuum_analyze(engine, "scheduled_tasks", "task_executions")
                engine.dispose()
                setup = time.perf_counter() - started
                env = clean_env(url)
                cases = [
                    BASELINE,
                    *with_before(verb_cases(READ_VERBS, LARGE_TARGET_S), before),
                    *verb_cases(LARGE_EXTRAS, None),
                ]
                title = (
                    f"PostgreSQL, {args.tasks:,} tasks and {args.executions:,} executions "
                    f"(set-up {setup:.0f} s, not timed)"
                )
                lines, met = report(title, cases, measure(cases, workdir, env, args.runs))
                print("\n".join(lines), flush=True)
                body += lines
                verdicts.append((f"PostgreSQL, {args.tasks:,} / {args.executions:,}", met))
                if not args.no_profile:
                    extra += profiles("the large database", workdir, env)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    summary = "Every read verb within its target: " + "; ".join(
        f"{name}: {verdict(met)}" for name, met in verdicts
    )
    print("\n".join(["", summary, *extra]), flush=True)
    body += ["", summary + ".", *extra]
    if not args.no_results:
        append_results("cli_latency", info, body, sys.argv[1:] if argv is None else argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
