"""Shared plumbing of the benchmarks: throw-away databases, bulk task inserts, statistics, profiles, results.

Services (override with environment variables):

- ``BENCH_PG_URL``: an admin URL of the PostgreSQL server (default ``postgresql+psycopg2://postgres@127.0.0.1:5432/postgres``;
  ``postgresql+psycopg://...`` measures psycopg 3);
  every benchmark creates its own ``bench_<random>`` database from it and drops it at the end;
- ``BENCH_REDIS_URL``: the Redis broker (default ``redis://127.0.0.1:6379/13``); benchmarks use queue and key
  names with a random suffix and delete only those keys.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")


def suffix() -> str:
    """A short random suffix for database, queue and key names."""
    return uuid.uuid4().hex[:10]


# --------------------------------------------------------------------------------------------- statistics


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100) of ``values``."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A markdown table (also readable as plain text on a terminal)."""
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    return [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells[1:])]


# --------------------------------------------------------------------------------------------- databases


def _admin_engine() -> Engine:
    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


@contextmanager
def temp_database(*, migrate: bool = True) -> Iterator[str]:
    """A fresh ``bench_<random>`` database (migrated to head unless ``migrate`` is False), dropped after."""
    name = f"bench_{suffix()}"
    admin = _admin_engine()
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        if migrate:
            from scheduler.storage.db import make_engine
            from scheduler.storage.schema import upgrade

            engine = make_engine(url)
            upgrade(engine)
            engine.dispose()
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def vacuum_analyze(engine: Engine, *tables: str) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for name in tables:
            connection.execute(text(f"VACUUM ANALYZE {name}"))


def truncate_all(engine: Engine) -> None:
    """Empty every table of the scheduler (a fresh start between repetitions)."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "TRUNCATE task_logs, task_executions, task_audit, scheduled_tasks, scheduler_leases "
                "RESTART IDENTITY CASCADE"
            )
        )


TASK_DEFAULTS: dict[str, str] = {
    "name": "'bench-' || i",
    "command": "'test:echo'",
    "schedule": "'1h'",
    "schedule_kind": "'interval'",
    "timezone": "'UTC'",
    "data": "'{}'::jsonb",
    "status": "'active'",
    "queue": "'default'",
    "retries": "0",
    "retry_delay_ms": "5000",
    "retry_backoff": "2.0",
    "timeout_ms": "60000",
    "overlap_policy": "'allow'",
    "misfire_policy": "'run_once'",
    "anchor_at": "now()",
    "next_run_at": "now()",
    "run_count": "0",
    "consecutive_failures": "0",
}


def insert_tasks(
    connection: Connection,
    n: int,
    *,
    columns: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    first: int = 1,
    chunk: int = 200_000,
) -> None:
    """Insert ``n`` tasks with one server-side ``INSERT ... SELECT FROM generate_series`` per ``chunk`` rows.

    ``columns`` maps column names to SQL expressions over the series value ``i`` (and bind ``params``),
    overriding :data:`TASK_DEFAULTS`. Nothing is built in Python memory, so the client's RSS stays clean.
    """
    values = {**TASK_DEFAULTS, **(columns or {})}
    names = ", ".join(values)
    expressions = ", ".join(values.values())
    statement = text(
        f"INSERT INTO scheduled_tasks ({names}) SELECT {expressions} FROM generate_series(:lo, :hi) AS i"
    )
    lo = first
    while lo < first + n:
        hi = min(lo + chunk, first + n) - 1
        connection.execute(statement, {**(params or {}), "lo": lo, "hi": hi})
        lo = hi + 1


def db_clock(engine: Engine) -> datetime:
    with engine.connect() as connection:
        value = connection.execute(text("SELECT clock_timestamp()")).scalar_one()
    return value.astimezone(UTC)


# --------------------------------------------------------------------------------------------- machine


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "?"


def machine_info(engine: Engine | None = None) -> dict[str, str]:
    """nproc and the versions of what the figures depend on (the server's through ``engine`` if given)."""
    info = {
        "nproc": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
        "Python": platform.python_version(),
        "Celery": _version("celery"),
        "kombu": _version("kombu"),
        "SQLAlchemy": _version("SQLAlchemy"),
        "psycopg2": _version("psycopg2-binary").split(" ")[0],
        "psycopg": _version("psycopg").split(" ")[0],
        "croniter": _version("croniter"),
    }
    try:
        source = engine if engine is not None else _admin_engine()
        with source.connect() as connection:
            info["PostgreSQL"] = str(connection.execute(text("SHOW server_version")).scalar_one()).split()[0]
        if engine is None:
            source.dispose()
    except Exception:
        info["PostgreSQL"] = "unreachable"
    try:
        import redis

        info["Redis"] = str(redis.Redis.from_url(REDIS_URL).info("server")["redis_version"])
    except Exception:
        pass
    return info


def machine_line(info: Mapping[str, str]) -> str:
    return ", ".join(f"{key} {value}" if key != "nproc" else f"nproc={value}" for key, value in info.items())


def append_results(name: str, info: Mapping[str, str], body: Sequence[str], argv: Sequence[str]) -> None:
    """Append a dated section ``## <date> — <name>`` with the machine line, the command and ``body``."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join(["python -m", f"bench.{name}", *argv])
    lines = [f"## {stamp} — {name}", "", f"Machine: {machine_line(info)}", "", f"Command: `{command}`", ""]
    lines.extend(body)
    header = "" if RESULTS.exists() else "# Benchmark results\n\nAppended by `python -m bench.<name>`.\n"
    with RESULTS.open("a", encoding="utf-8") as out:
        out.write(header + "\n" + "\n".join(lines).rstrip() + "\n")


# --------------------------------------------------------------------------------------------- memory


def rss_mb() -> float:
    """Resident set size of this process now, in MB (psutil when installed, else /proc)."""
    try:
        import psutil

        return float(psutil.Process().memory_info().rss) / 2**20
    except ImportError:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


# --------------------------------------------------------------------------------------------- profiles

_DRIVER_CALLS = {
    "do_execute",
    "do_executemany",
    "do_execute_no_params",
    "do_ping",
    "do_commit",
    "do_rollback",
}
_DB_WAIT = "PostgreSQL round trips (driver calls)"
_BUCKETS = (
    ("scheduler/", "scheduler (ours)"),
    ("workers/", "workers (ours)"),
    ("celeryconfig", "workers (ours)"),
    ("sqlalchemy", "SQLAlchemy"),
    ("psycopg", "psycopg2 / psycopg 3 (their Python code)"),
    ("kombu", "kombu"),
    ("celery", "Celery"),
    ("redis", "redis-py (incl. waiting for Redis)"),
    ("importlib", "imports (importlib: finding, unmarshalling, executing modules)"),
    ("<frozen", "imports (importlib: finding, unmarshalling, executing modules)"),
    ("rich", "rich (rendering)"),
    ("alembic", "alembic"),
    ("pydantic", "pydantic"),
    ("zoneinfo", "zoneinfo/datetime"),
    ("datetime", "zoneinfo/datetime"),
)


def _bucket(path: str) -> str:
    for needle, name in _BUCKETS:
        if needle in path:
            return name
    return "other (stdlib, interpreter)"


def profile_summary(session: Any, *, top: int = 12) -> list[str]:
    """Markdown lines summarising a pyinstrument session: self time by library, hottest functions.

    Self time of a built-in (C) call -- a socket read, a driver's execute -- is charged to the library of the
    Python frame that made it, so "redis-py" includes the time spent waiting for Redis; SQLAlchemy's frames
    that call into the driver (``do_execute``, ``do_commit``, ...) form their own bucket: PostgreSQL round
    trips.
    """
    root = session.root_frame()
    if root is None:
        return ["(no samples)"]
    total = root.time or 1e-9
    by_function: dict[tuple[str, str, int], float] = {}
    inclusive: dict[tuple[str, str, int], float] = {}
    by_bucket: dict[str, float] = {}

    def walk(frame: Any, ancestors: frozenset[tuple[str, str, int]], parent_bucket: str) -> None:
        if frame.is_synthetic:
            return
        key = (frame.function or "?", frame.file_path_short or "?", frame.line_no or 0)
        own = frame.total_self_time
        by_function[key] = by_function.get(key, 0.0) + own
        path = frame.file_path or ""
        builtin = not path or path.startswith("<built-in") or path == "<string>"
        bucket = parent_bucket if builtin else _bucket(path)
        if frame.function in _DRIVER_CALLS and "sqlalchemy" in path:
            bucket = _DB_WAIT  # SQLAlchemy's frame around the driver's C call: mostly waiting for the server
        by_bucket[bucket] = by_bucket.get(bucket, 0.0) + own
        if key not in ancestors:
            inclusive[key] = inclusive.get(key, 0.0) + frame.time
        for child in frame.children:
            walk(child, ancestors | {key}, bucket)

    walk(root, frozenset(), _bucket(""))

    def rows(items: list[tuple[tuple[str, str, int], float]]) -> list[tuple[str, ...]]:
        return [(f, f"{p}:{ln}", f"{t:.3f}", f"{t / total:.0%}") for (f, p, ln), t in items]

    lines = [f"Samples cover {total:.3f} s.", "", "Self time by library:", ""]
    buckets = sorted(by_bucket.items(), key=lambda kv: -kv[1])
    lines += table(
        ["library", "self time (s)", "share"], [(b, f"{t:.3f}", f"{t / total:.0%}") for b, t in buckets]
    )
    lines += ["", f"Top {top} functions by self time:", ""]
    hottest = sorted(by_function.items(), key=lambda kv: -kv[1])[:top]
    lines += table(["function", "where", "self (s)", "share"], rows(hottest))
    ours, theirs = [], []
    for key, spent in sorted(inclusive.items(), key=lambda kv: -kv[1]):
        function, where = key[0], key[1]
        mine = any(part in where for part in ("scheduler/", "workers/"))
        trunk = where.startswith(("bench/", "cli/", "click/")) or (
            where.startswith("<frozen") and function != "_find_and_load"
        )
        if spent / total >= (0.02 if mine else 0.05) and where != "?" and (mine or not trunk):
            (ours if mine else theirs).append((key, spent))
    lines += ["", "Our functions by inclusive time (>= 2%):", ""]
    lines += table(["function", "where", "inclusive (s)", "share"], rows(ours[: top + 6]))
    lines += ["", "Library functions by inclusive time (>= 5%; the click/CLI trunk left out):", ""]
    lines += table(["function", "where", "inclusive (s)", "share"], rows(theirs[: top + 6]))
    return lines
