"""``systemprompt scheduler:serve``: planner and worker in one foreground process (the embedded default).

- The schema is checked first: created or upgraded on SQLite, an outdated PostgreSQL schema stops serve with
  the message naming ``systemprompt scheduler:migrate``.
- The Celery worker runs in the foreground with the **prefork** pool (default 2 processes): that is the only
  pool where Celery enforces the hard time limit, so serve behaves like a production worker. The planner runs
  in a thread of the main process, started once the worker is ready, i.e. after the pool processes were
  forked (a replacement process forked later gets fresh database connections of its own).
- It consumes the default queue plus the queues of the tasks that exist when it starts (and ``queues``).
- Ctrl-C or SIGTERM: Celery's warm shutdown lets running executions finish and record their outcome; then the
  planner stops and releases its lease. A second Ctrl-C is Celery's cold shutdown: running executions are
  killed and keep status ``running`` until a planner's recovery sweep sees their heartbeat is stale and
  retries them or marks them ``lost``; nothing stays ``running`` for ever.
- ``flower=True`` starts Flower (``celery flower``) as a child process for the same broker.
- ``web_port`` starts the operator web console (``systemprompt scheduler:web``, docs/web.md) as a child
  process on that loopback port, with the same settings (environment and working directory).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

from celery import signals

from scheduler.errors import TaskNotFound
from scheduler.observability.metrics import enable as enable_planner_metrics
from scheduler.planning.planner import Planner
from scheduler.settings import Settings
from scheduler.storage.tasks import task_queues
from workers.app import create_app
from workers.publisher import CeleryPublisher
from workers.wiring import alert_senders, event_bus, open_database, open_service

logger = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 2
DEMO_TASK = {
    "name": "demo-echo-2s",
    "command": "test:echo",
    "schedule": "2s",
    "data": {"message": "hello from systemprompt scheduler:serve --demo"},
    "retries": 0,
}
PLANNER_JOIN_S = 15.0


def ensure_demo_task(settings: Settings) -> None:
    """Create the demo task (``test:echo`` every 2 s) unless a task of that name exists."""
    service = open_service(settings, actor="serve --demo")
    try:
        try:
            service.get_task(str(DEMO_TASK["name"]))
        except TaskNotFound:
            task = service.create_task(DEMO_TASK)
            print(f"serve: created the demo task {task.name!r} (test:echo every 2 s)", file=sys.stderr)
    finally:
        service.engine.dispose()


def start_flower(settings: Settings) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "celery", "-A", "workers.app", "flower"]
    if settings.flower_basic_auth:
        argv.append(f"--basic-auth={settings.flower_basic_auth}")
    return subprocess.Popen(argv, env=dict(os.environ))


def start_web(port: int) -> subprocess.Popen[bytes]:
    """``systemprompt scheduler:web`` on loopback ``port``: a child process, like Flower (workers import no
    CLI or web code; the console is started the way a person would start it)."""
    argv = [sys.executable, "-m", "cli.main", "scheduler:web", "--address=127.0.0.1", f"--port={port}"]
    return subprocess.Popen(argv, env=dict(os.environ))


def serve(
    settings: Settings,
    *,
    flower: bool = False,
    web_port: int | None = None,
    demo: bool = False,
    concurrency: int = DEFAULT_CONCURRENCY,
    queues: Sequence[str] = (),
    loglevel: str = "INFO",
) -> int:
    """Run planner + worker until Ctrl-C/SIGTERM; return the exit code. Raises SchemaOutdated (exit 69)."""
    engine = open_database(settings)
    if demo:
        ensure_demo_task(settings)
    with engine.connect() as connection:
        consumed = sorted({settings.default_queue, *task_queues(connection), *queues})

    app = create_app(settings)
    planner = Planner(
        engine, settings, CeleryPublisher(app), events=event_bus(settings), senders=alert_senders(settings)
    )
    enable_planner_metrics(settings)  # served with the worker's on SCHEDULER_METRICS_PORT (workers.metrics)
    stop = threading.Event()
    planner_thread = threading.Thread(target=planner.run_forever, args=(stop,), name="planner", daemon=True)

    def start_planner(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app and not planner_thread.is_alive():
            logger.info("serve: planner %s starting", planner.holder)
            planner_thread.start()

    nodename = f"serve-{os.getpid()}@{socket.gethostname()}"
    shutdown: dict[str, str] = {}

    def stop_planner(sender: Any = None, sig: str = "", how: str = "", **_: Any) -> None:
        # The worker is shutting down: publish nothing more, so its consumer drains quickly.
        if sender == nodename:
            shutdown.update(sig=sig, how=how)
            stop.set()

    signals.worker_ready.connect(start_planner, weak=False)
    signals.worker_shutting_down.connect(stop_planner, weak=False)
    flower_process = start_flower(settings) if flower else None
    web_process = start_web(web_port) if web_port is not None else None
    worker = app.Worker(
        pool="prefork",
        concurrency=concurrency,
        queues=consumed,
        hostname=nodename,
        loglevel=loglevel,
        without_mingle=True,
        without_gossip=True,
    )
    try:
        worker.start()  # returns after Ctrl-C/SIGTERM (warm shutdown: running executions finish first)
    finally:
        signals.worker_ready.disconnect(start_planner)
        signals.worker_shutting_down.disconnect(stop_planner)
        stop.set()
        if planner_thread.is_alive():
            planner_thread.join(PLANNER_JOIN_S)
        for child in (flower_process, web_process):
            if child is not None:
                child.terminate()
                child.wait(10)
        engine.dispose()
    if shutdown.get("how") == "Warm" and shutdown.get("sig") in ("SIGINT", "SIGTERM"):
        return 0  # Ctrl-C or SIGTERM is how serve is meant to stop (Celery reports SIGINT as a failure)
    return int(worker.exitcode or 0)
