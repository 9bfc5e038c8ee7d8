"""The web console at 10,000 tasks: server time of its pages and API calls (target: under 300 ms).

Set-up (untimed): a fresh PostgreSQL database with ``--tasks`` tasks (a tenth paused, varied names, cron and
interval schedules in several zones and queues) and ``--executions`` finished executions spread over them
(``bench.cli_latency``'s population), then ``VACUUM ANALYZE``. Then ``systemprompt scheduler:web`` runs as
a subprocess with one basic-auth user (the password hash is checked once, then cached, as for a browser).

Each request runs once to warm up, then ``--runs`` times, round-robin across requests so noise spreads
evenly. Reported per request: median and p95 of the server time (the console's ``Server-Timing: app;dur``
header: from the request's arrival to its response's headers, i.e. everything but the socket) and the median
wall time seen by the client. The verdict judges the median server time against 300 ms.

    python -m bench.web_console [--tasks 10000] [--executions 200000] [--runs 15] [--no-results]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench._common import (
    append_results,
    insert_tasks,
    machine_info,
    median,
    percentile,
    table,
    temp_database,
    vacuum_analyze,
    verdict,
)
from bench.cli_latency import insert_executions

TARGET_MS = 300.0
SYSTEMPROMPT = Path(sys.executable).with_name("systemprompt")
POPULATION = {
    "name": "'bench-' || i || CASE WHEN i % 7 = 0 THEN '-nightly-report' ELSE '-sync' END",
    "status": "CASE WHEN i % 10 = 0 THEN 'paused' ELSE 'active' END",
    "status_reason": "CASE WHEN i % 10 = 0 THEN 'maintenance' ELSE NULL END",
    "schedule": "CASE WHEN i % 3 = 0 THEN '*/5 * * * *' WHEN i % 3 = 1 THEN '30 2 * * *' ELSE '1h' END",
    "schedule_kind": "CASE WHEN i % 3 = 2 THEN 'interval' ELSE 'cron' END",
    "timezone": (
        "CASE WHEN i % 4 = 0 THEN 'Europe/Berlin' WHEN i % 4 = 1 THEN 'America/New_York' ELSE 'UTC' END"
    ),
    "queue": "'q' || (i % 5)",
    "next_run_at": "now() + (i % 1440) * interval '1 minute'",
}


def requests_to_time(first_task: int) -> list[tuple[str, str]]:
    return [
        ("tasks page, first 50 by id", "/"),
        ("tasks page, sorted by next run", "/?sort=next_run_at&order=asc"),
        ("tasks page, sorted by name, descending", "/?sort=name&order=desc"),
        ("tasks page, paused only", "/?status=paused"),
        ("tasks page, queue + text filter", "/?queue=q3&q=nightly"),
        ("tasks page, deep keyset page (after id 9000)", "/?after=WyJpZCIsOTAwMCw5MDAwXQ"),
        ("API tasks, limit 200", "/api/tasks?limit=200"),
        ("task page (history, stats, audit)", f"/tasks/{first_task}"),
        ("API task", f"/api/tasks/{first_task}"),
    ]


def timed_get(base: str, path: str, auth: str) -> tuple[float, float]:
    """(server ms from Server-Timing, client wall ms) of one GET; the response must be 200."""
    request = urllib.request.Request(base + path, headers={"Authorization": auth})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as answer:
        answer.read()
        wall = (time.perf_counter() - started) * 1000
        assert answer.status == 200, (path, answer.status)
        match = re.search(r"app;dur=([\d.]+)", answer.headers.get("server-timing", ""))
    assert match, f"no Server-Timing header on {path}"
    return float(match.group(1)), wall


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--executions", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args(argv)
    from scheduler.storage.db import make_engine
    from web.auth import hash_password

    with temp_database() as url:
        engine = make_engine(url)
        with engine.begin() as connection:
            insert_tasks(connection, args.tasks, columns=POPULATION)
            insert_executions(connection, args.executions, args.tasks)
        vacuum_analyze(engine, "scheduled_tasks", "task_executions")
        info = machine_info(engine)
        engine.dispose()
        from tests.support.processes import free_port

        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEDULER_")}
        env |= {"SCHEDULER_DATABASE_URL": url, "SCHEDULER_WEB_USERS": f"bench:viewer:{hash_password('pw')}"}
        auth = "Basic " + base64.b64encode(b"bench:pw").decode()
        base = f"http://127.0.0.1:{port}"
        process = subprocess.Popen(
            [str(SYSTEMPROMPT), "scheduler:web", f"--port={port}"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(OSError):
                    urllib.request.urlopen(base + "/healthz", timeout=2).read()
                    break
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("scheduler:web did not start")
                time.sleep(0.1)
            timed = requests_to_time(first_task=1)
            samples: dict[str, list[tuple[float, float]]] = {label: [] for label, _ in timed}
            for _label, path in timed:
                timed_get(base, path, auth)  # warm-up
            for _ in range(args.runs):
                for label, path in timed:
                    samples[label].append(timed_get(base, path, auth))
        finally:
            process.terminate()
            process.wait(15)
    rows = []
    for label, _ in timed:
        server = [s for s, _ in samples[label]]
        wall = [w for _, w in samples[label]]
        rows.append(
            (label, f"{median(server):.1f}", f"{percentile(server, 95):.1f}", f"{median(wall):.1f}",
             verdict(median(server) < TARGET_MS))
        )  # fmt: skip
    body = [
        f"{args.tasks:,} tasks, {args.executions:,} executions, PostgreSQL; {args.runs} runs per request "
        f"after a warm-up. Target: server time under {TARGET_MS:.0f} ms.",
        "",
        *table(
            ("request", "server ms (median)", "server ms (p95)", "client wall ms (median)", "verdict"), rows
        ),
    ]
    print("\n".join(body))
    if not args.no_results:
        append_results("web_console", info, body, argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
