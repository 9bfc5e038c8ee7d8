"""The world of the worker-side fault scenarios: real Celery workers (subprocesses), a planner thread with a
publisher that counts what it sends, a private ``redis-server`` a test may kill and start again.

This module is also the ``-A`` module of those workers (``celery -A worker_support worker``): asking it for
``app`` registers the fault commands below in that worker process only. Every fault command first appends
one line (``attempt pid``) to ``<data.dir>/<execution id>.runs``, so a test counts how often a command really
started for an execution, whatever the database says.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy.exc import SQLAlchemyError

from scheduler.commands.loading import load_registry
from scheduler.commands.registry import CommandContext
from scheduler.errors import SchedulerError
from scheduler.observability.events import EventBus
from scheduler.planning.planner import Planner
from scheduler.records import FINISHED_STATUSES, Dispatch, Execution
from scheduler.service import SchedulerService
from scheduler.settings import Settings
from scheduler.storage.db import make_engine
from tests.support import background
from tests.support.celery_worker import SharedWorkerView, WorkerProcess, app_with_commands, start_worker
from tests.support.processes import free_port, wait_for
from tests.support.redis_queue import queue_idle, queue_settles
from tests.support.services import (
    IN_CI,
    REDIS_URL,
    create_pg_database,
    delete_queue_keys,
    drop_pg_database,
    empty_pg_tables,
    require,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

HEARTBEAT_MS = 500
TICK_MS = 200
RECOVERY_AFTER_MS = 1000  # the smallest the settings allow
LEASE_TTL_MS = 2000
STALE_S = 3 * HEARTBEAT_MS / 1000  # a silent running execution is presumed dead after this
MODULE_WORKER_CONCURRENCY = 2
SETTLE_S = 15.0


# ------------------------------------------------------------------------------------------ fault commands


def record_run(ctx: CommandContext) -> None:
    """Append ``attempt pid`` to this execution's runs file (the side effect the tests count)."""
    with (Path(str(ctx.data["dir"])) / f"{ctx.execution_id}.runs").open("a") as runs:
        runs.write(f"{ctx.attempt} {os.getpid()}\n")


def append_and_sleep(ctx: CommandContext) -> dict[str, Any]:
    record_run(ctx)
    deadline = time.monotonic() + float(ctx.data.get("seconds", 0))
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return {"pid": os.getpid()}


def poison(ctx: CommandContext) -> None:
    record_run(ctx)
    os.kill(os.getpid(), signal.SIGKILL)


# The grandchild ignores SIGTERM: only a SIGKILL of its process group ends it.
GRANDCHILD = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"


def spawn_and_hang(ctx: CommandContext) -> None:
    """Start a child that ignores SIGTERM, write its pid to ``<id>.<attempt>.child``, then ignore every
    interruption (only the hard time limit, which kills the process, ends this)."""
    record_run(ctx)
    child = subprocess.Popen([sys.executable, "-c", GRANDCHILD])
    (Path(str(ctx.data["dir"])) / f"{ctx.execution_id}.{ctx.attempt}.child").write_text(str(child.pid))
    while True:
        with contextlib.suppress(BaseException):  # swallowing the soft limit is the point of it
            time.sleep(3600)


FAULT_COMMANDS: dict[str, tuple[Callable[[CommandContext], Any], str]] = {
    "fault:append": (append_and_sleep, "Record the run, then sleep data.seconds."),
    "fault:poison": (poison, "Record the run, then SIGKILL the process running it."),
    "fault:tree": (spawn_and_hang, "Record the run, start a SIGTERM-proof child, hang past every limit."),
}


def __getattr__(name: str) -> Any:
    # Only the worker subprocess asks for `app`: the commands are registered there, not in the test process.
    if name == "app":
        return app_with_commands(FAULT_COMMANDS)
    raise AttributeError(name)


# ----------------------------------------------------------------------------------------------- helpers


def worker_pid(execution: Execution) -> int:
    """The pool process of a running execution (its ``worker`` is ``node:pid``)."""
    assert execution.worker is not None, execution
    return int(execution.worker.rsplit(":", 1)[1])


class CountingPublisher:
    """The real Celery publisher, counting the execution ids of every batch it published without error."""

    def __init__(self, app: Any) -> None:
        from workers.publisher import CeleryPublisher

        self._inner = CeleryPublisher(app)
        self._lock = threading.Lock()
        self.sent: Counter[int] = Counter()

    def publish(self, dispatches: Sequence[Dispatch]) -> None:
        self._inner.publish(dispatches)
        with self._lock:
            self.sent.update(dispatch.execution_id for dispatch in dispatches)

    def waiting(self, dispatches: Sequence[Dispatch]) -> set[int] | None:
        """What the real publisher tells the recovery sweep (which messages still wait on their queue)."""
        return self._inner.waiting(dispatches)


@dataclass
class PlannerThread:
    planner: Planner
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> PlannerThread:
        self.thread = threading.Thread(
            target=self.planner.run_forever, args=(self.stop_event,), name="fault-planner", daemon=True
        )
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(15)


# ---------------------------------------------------------------------------------------- private Redis


@dataclass
class PrivateRedis:
    """A ``redis-server`` on a free port with no persistence: stopping it loses every message."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = shutil.which("redis-server")
        assert server is not None
        argv = [
            server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--daemonize", "no", "--dir", str(self.workdir),
        ]  # fmt: skip
        with (self.workdir / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self.answers, 10, f"private redis-server on port {self.port} did not start")

    def stop(self) -> None:
        """Kill the server (SIGKILL, like a crash); with persistence off it comes back empty."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def answers(self) -> bool:
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def keys(self) -> int:
        client = redis.Redis(port=self.port)
        try:
            return int(client.dbsize())
        finally:
            client.close()


def _started_private_redis(workdir: Path) -> PrivateRedis:
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("redis-server is not installed (CI=true: a missing service is a failure)")
        pytest.skip("redis-server is not installed")
    workdir.mkdir()
    server = PrivateRedis(workdir)
    server.start()
    return server


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = _started_private_redis(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    """One private ``redis-server`` for a module's tests (with ``module_redis_turn``); each test finds it
    running (and empty: every test that stops it starts it again empty, as a restart leaves it)."""
    server = _started_private_redis(tmp_path_factory.mktemp("module-redis") / "redis")
    try:
        yield server
    finally:
        server.stop()


# ----------------------------------------------------------------------------------------------- the world


def worker_env(database_url: str, broker_url: str, workdir: Path, queue: str) -> dict[str, str]:
    """The environment of a worker of this module on ``database_url``, ``broker_url`` and ``queue``."""
    config = workdir / "module.yaml"
    if not config.exists():
        config.write_text("config: {}\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SCHEDULER_", "PG"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(HERE), str(REPO)]),
        PYTHONUNBUFFERED="1",
        NO_COLOR="1",
        SCHEDULER_DATABASE_URL=database_url,
        SCHEDULER_BROKER_URL=broker_url,
        SCHEDULER_CONFIG_FILE=str(config),
        SCHEDULER_HOME=str(workdir / ".scheduler"),
        SCHEDULER_DEFAULT_QUEUE=queue,
        SCHEDULER_HEARTBEAT_INTERVAL=str(HEARTBEAT_MS),
    )
    return env


@dataclass
class WorkerWorld:
    """One scenario: a fresh database, a broker and a unique queue, workers and a planner started here.

    ``service`` has no publisher: its manual runs stay ``pending`` and the planner's relay publishes them, so
    ``publisher.sent`` counts every message of the scenario (apart from the workers' own retries).
    """

    database_url: str
    broker_url: str
    workdir: Path
    overrides: dict[str, Any] = field(default_factory=dict)  # settings of the planner and the test process
    queue: str = field(default_factory=lambda: f"fw-{uuid.uuid4().hex[:10]}")
    workers: list[WorkerProcess] = field(default_factory=list)
    planners: list[PlannerThread] = field(default_factory=list)
    module: ModuleWorker | None = None  # the test module's worker, database and queue (``module_world``)
    module_views: list[SharedWorkerView] = field(default_factory=list)

    def __post_init__(self) -> None:
        from workers.app import create_app

        self.runs_dir = self.workdir / "runs"
        self.runs_dir.mkdir(exist_ok=True)
        values: dict[str, Any] = {
            "database_url": self.database_url,
            "broker_url": self.broker_url,
            "home": self.workdir / ".scheduler",
            "default_queue": self.queue,
            "heartbeat_interval": HEARTBEAT_MS,
            "tick_interval": TICK_MS,
            "recovery_after": RECOVERY_AFTER_MS,
            "lease_ttl": LEASE_TTL_MS,
            "retry_delay": 200,
            "retry_backoff": 1.0,
            "actor": "faults",
        }
        self.settings = Settings(**{**values, **self.overrides})
        self.engine = make_engine(self.database_url)
        self.app = create_app(self.settings)
        self.publisher = CountingPublisher(self.app)
        self.events = EventBus()
        registry = load_registry(self.settings, extra=FAULT_COMMANDS)
        self.service = SchedulerService(self.engine, self.settings, commands=registry, actor="faults")

    # ------------------------------------------------------------------------------------------ processes

    def env(self) -> dict[str, str]:
        return worker_env(self.database_url, self.broker_url, self.workdir, self.queue)

    def start_worker(self, *, concurrency: int = 2, wait: bool = True) -> WorkerProcess:
        """``celery -A worker_support worker`` (prefork) on this queue, in its own process group."""
        index = len(self.workers)
        worker = start_worker(
            "worker_support",
            self.env(),
            self.queue,
            self.workdir / f"worker-{index}.log",
            cwd=HERE,
            name=f"{self.queue}-{index}@%h",
            concurrency=concurrency,
            wait=False,
        )
        self.workers.append(worker)  # before waiting: close() kills it even if it never gets ready
        if wait:
            worker.wait_ready()
        return worker

    def module_worker(self) -> SharedWorkerView:
        """The test module's worker (``module_world``: prefork, :data:`MODULE_WORKER_CONCURRENCY` pool
        processes, the same environment :meth:`start_worker` gives), running and idle; its log from now on."""
        assert self.module is not None, "a module worker needs the module_world fixture"
        worker = self.module.running_worker()
        view = SharedWorkerView(worker, worker.log_size())
        self.module_views.append(view)
        return view

    def start_planner(self) -> PlannerThread:
        """The real planner loop in a thread of the test process, on its own engine, publishing through
        :attr:`publisher`."""
        planner = Planner(
            make_engine(self.database_url),
            self.settings,
            self.publisher,
            holder=f"fault-planner-{len(self.planners)}",
            events=self.events,
        )
        started = PlannerThread(planner).start()
        self.planners.append(started)
        return started

    def close(self) -> None:
        for planner in self.planners:
            planner.stop()
            planner.planner.engine.dispose()
        for worker in self.workers:
            worker.kill()
        self.engine.dispose()
        if self.module is not None:
            return  # the module's queue: its worker still consumes it (ModuleWorker.settle, close)
        with contextlib.suppress(redis.RedisError):  # a private Redis may be down by now
            delete_queue_keys(self.broker_url, self.queue)

    def drained(self) -> bool:
        """Nothing of the queue on the broker (:func:`queue_idle`), twice 0.1 s apart: a message moving from
        the list to a worker's reserved hash is on neither for a moment. With every execution finished,
        nothing can start any more."""
        if not queue_idle(self.broker_url, self.queue):
            return False
        time.sleep(0.1)
        return queue_idle(self.broker_url, self.queue)

    def worker_logs(self) -> str:
        return "\n".join(worker.log()[-3000:] for worker in [*self.workers, *self.module_views])

    # ------------------------------------------------------------------------------------------ database

    def create(self, name: str, command: str, **fields: Any) -> Any:
        fields.setdefault("schedule", "manual")
        data = {"dir": str(self.runs_dir), **fields.pop("data", {})}
        return self.service.create_task(name=name, command=command, queue=self.queue, data=data, **fields)

    def execution(self, execution_id: int) -> Execution:
        return self.service.get_execution(execution_id)

    def wait_status(
        self,
        execution_id: int,
        statuses: Sequence[str],
        timeout_s: float,
        interval_s: float = 0.05,
        *,
        tolerate_errors: bool = False,
    ) -> Execution:
        """Poll the row until its status is one of ``statuses``; ``tolerate_errors``: the database may not
        answer yet (it is restarting)."""

        last: list[Execution] = []

        def reached() -> Execution | None:
            try:
                execution = self.execution(execution_id)
            except (SchedulerError, SQLAlchemyError):
                if not tolerate_errors:
                    raise
                return None
            last[:] = [execution]
            return execution if execution.status in statuses else None

        try:
            found: Execution = wait_for(reached, timeout_s, "", interval_s)
        except AssertionError:
            now = last[0].status if last else "unknown"
            raise AssertionError(
                f"execution {execution_id} never reached {'/'.join(statuses)} within {timeout_s} s "
                f"(now {now})\n{self.worker_logs()}"
            ) from None
        return found

    def wait_finished(
        self, execution_id: int, timeout_s: float, *, tolerate_errors: bool = False
    ) -> Execution:
        return self.wait_status(execution_id, FINISHED_STATUSES, timeout_s, tolerate_errors=tolerate_errors)

    def runs(self, execution_id: int) -> list[str]:
        """The runs file of an execution: one ``attempt pid`` line per start of its command."""
        path = self.runs_dir / f"{execution_id}.runs"
        return path.read_text().splitlines() if path.exists() else []


# ----------------------------------------------------------------------------------- one worker per module


@dataclass
class ModuleWorker:
    """One Celery worker for the tests of a module (each costs 2-3 s to start), with the database and queue it
    serves: the tests take turns. Before each test every table but ``alembic_version`` is emptied (ids are not
    restarted, so an id never names two executions in one module); after it the test waits until nothing of
    the queue is left on the broker (no message waiting, reserved, retrying or running). A worker that does
    not get there, or died, is replaced on a new queue, so nothing of one test reaches the next."""

    database_name: str
    database_url: str
    broker_url: str
    workdir: Path
    queue: str = field(default_factory=lambda: f"fw-{uuid.uuid4().hex[:10]}")
    worker: WorkerProcess | None = None

    def world(self, workdir: Path, **overrides: Any) -> WorkerWorld:
        return WorkerWorld(
            self.database_url, self.broker_url, workdir, overrides, queue=self.queue, module=self
        )

    def running_worker(self) -> WorkerProcess:
        if self.worker is not None and self.worker.process.poll() is not None:
            self.retire()
        if self.worker is None:
            self.worker = start_worker(
                "worker_support",
                worker_env(self.database_url, self.broker_url, self.workdir, self.queue),
                self.queue,
                self.workdir / f"module-worker-{self.queue}.log",
                cwd=HERE,
                name=f"{self.queue}-m@%h",
                concurrency=MODULE_WORKER_CONCURRENCY,
            )
        return self.worker

    def empty_tables(self) -> None:
        """Delete every row but the schema's version (without restarting ids)."""
        empty_pg_tables(self.database_url)

    def settle(self) -> None:
        """Wait until nothing of the queue is on the broker (twice in a row); retire the worker otherwise."""
        if self.worker is not None and not queue_settles(self.broker_url, self.queue, SETTLE_S):
            self.retire()

    def retire(self) -> None:
        worker, queue = self.worker, self.queue
        self.worker, self.queue = None, f"fw-{uuid.uuid4().hex[:10]}"
        if worker is not None:
            worker.kill()
        with contextlib.suppress(redis.RedisError):
            delete_queue_keys(self.broker_url, queue)

    def close(self) -> None:
        self.retire()
        background.later(drop_pg_database, self.database_name)


@contextlib.contextmanager
def _module_worker(pg_template: str, broker_url: str, workdir: Path) -> Iterator[ModuleWorker]:
    name, url = create_pg_database(pg_template)
    shared = ModuleWorker(name, url, broker_url, workdir)
    try:
        yield shared
    finally:
        shared.close()


@contextlib.contextmanager
def _turn(shared: ModuleWorker, workdir: Path, **overrides: Any) -> Iterator[WorkerWorld]:
    shared.empty_tables()
    scenario = shared.world(workdir, **overrides)
    try:
        yield scenario
    finally:
        scenario.close()
        shared.settle()


@pytest.fixture(scope="module")
def module_worker(pg_template: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleWorker]:
    require("Redis", REDIS_URL, 6379)
    with _module_worker(pg_template, REDIS_URL, tmp_path_factory.mktemp("module-worker")) as shared:
        yield shared


@pytest.fixture
def module_world(module_worker: ModuleWorker, tmp_path: Path) -> Iterator[WorkerWorld]:
    """Like ``world`` (PostgreSQL, the machine's Redis), on the module's database (emptied first) and queue,
    whose worker :meth:`WorkerWorld.module_worker` hands out; after the test it is left idle (or replaced)."""
    with _turn(module_worker, tmp_path) as scenario:
        yield scenario


@pytest.fixture(scope="module")
def module_redis_worker(
    pg_template: str, module_redis: PrivateRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModuleWorker]:
    with _module_worker(pg_template, module_redis.url, tmp_path_factory.mktemp("module-worker")) as shared:
        yield shared


@pytest.fixture
def module_redis_turn(
    module_redis_worker: ModuleWorker, module_redis: PrivateRedis
) -> Iterator[tuple[ModuleWorker, PrivateRedis]]:
    """The module's worker on the module's private Redis, which the test may kill and start again (empty);
    :func:`turn_on` gives the test its world on them. The server is running when the test begins."""
    if not module_redis.answers():
        module_redis.start()
    yield module_redis_worker, module_redis
    if not module_redis.answers():
        module_redis.start()


def turn_on(
    shared: ModuleWorker, workdir: Path, **overrides: Any
) -> contextlib.AbstractContextManager[WorkerWorld]:
    """A test's turn on the module's worker: its world (``overrides``: settings of the planner and the test
    process, not of the worker), on the database emptied first; afterwards the worker is left idle."""
    return _turn(shared, workdir, **overrides)


@contextlib.contextmanager
def world_on(database_url: str, broker_url: str, workdir: Path, **overrides: Any) -> Iterator[WorkerWorld]:
    """A :class:`WorkerWorld`, closed afterwards; ``overrides``: settings of the planner, not of workers."""
    world = WorkerWorld(database_url, broker_url, workdir, overrides)
    try:
        yield world
    finally:
        world.close()


@pytest.fixture
def world(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[WorkerWorld]:
    """A fresh PostgreSQL database and the machine's Redis (a unique queue)."""
    with world_on(pg_url, redis_url, tmp_path) as scenario:
        yield scenario


@pytest.fixture
def redis_world(pg_url: str, private_redis: PrivateRedis, tmp_path: Path) -> Iterator[WorkerWorld]:
    """A fresh PostgreSQL database and a private Redis the test may kill and start again."""
    with world_on(pg_url, private_redis.url, tmp_path) as scenario:
        yield scenario


@pytest.fixture
def pg_world(private_postgres: Any, redis_url: str, tmp_path: Path) -> Iterator[WorkerWorld]:
    """A private PostgreSQL server (``private_postgres`` of this directory's conftest) and the machine's
    Redis."""
    with world_on(private_postgres.url, redis_url, tmp_path) as scenario:
        yield scenario
