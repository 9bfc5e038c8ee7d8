"""One Celery worker for a whole test module instead of one per test (each costs 2-3 s to start and as much to
stop): the ``worker_setup`` fixture.

A worker serves one database (its environment names it), so the module's tests share one database too and
take turns on it: before each test every table but ``alembic_version`` is emptied (ids are not restarted, so
an id never names two executions in one module), and after it the test waits until the worker holds nothing
of the module's queue (no message waiting, reserved, retrying or running). A worker that does not get there,
or died, is replaced on a new queue, so nothing of one test reaches the next. ``setup.worker`` shows the
worker's log from the test's start only.

Tests that need a worker of their own (other options or environment, or started at a given moment) keep
``engine_setup``. Under pytest-xdist each process that runs tests of the module has its own world; ``make
test``'s ``--dist worksteal`` hands each process a contiguous run of tests, so a module's tests mostly stay in
one process.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from workerproc import EngineSetup, build_setup, scheduler_env, start_worker, unique_queue

from tests.support import background
from tests.support.celery_worker import SharedWorkerView, WorkerProcess
from tests.support.redis_queue import queue_settles
from tests.support.services import (
    REDIS_URL,
    create_pg_database,
    delete_queue_keys,
    drop_pg_database,
    empty_pg_tables,
    require,
)

SETTLE_S = 15.0


@dataclass
class SharedWorld:
    """A test module's database, queue and worker (started on first use)."""

    database_name: str
    database_url: str
    broker_url: str
    workdir: Path
    queue: str = field(default_factory=unique_queue)
    worker: WorkerProcess | None = None
    extra_env: dict[str, str] = field(default_factory=dict)  # the module's ``SHARED_WORKER_ENV``

    def running_worker(self) -> WorkerProcess:
        """The module's worker; a fresh one (on a new queue) if there is none or it died."""
        if self.worker is not None and self.worker.process.poll() is not None:
            self.retire()
        if self.worker is None:
            env = scheduler_env(
                self.database_url,
                self.broker_url,
                self.workdir,
                SCHEDULER_DEFAULT_QUEUE=self.queue,
                **self.extra_env,
            )
            self.worker = start_worker(env, self.queue, self.workdir)
        return self.worker

    def empty_tables(self) -> None:
        """Delete every row but the schema's version (without restarting ids)."""
        empty_pg_tables(self.database_url)

    def settle(self) -> None:
        """Wait until the worker is idle (twice in a row: a message moves from the list to the hash); retire
        it if it does not get there."""
        if self.worker is not None and not queue_settles(self.broker_url, self.queue, SETTLE_S):
            self.retire()

    def retire(self) -> None:
        """Stop the worker (in the background) and clear its queue; the next worker gets a new queue."""
        worker, queue = self.worker, self.queue
        self.worker, self.queue = None, unique_queue()
        if worker is not None:
            worker.stop_later(then=lambda: delete_queue_keys(self.broker_url, queue))

    def close(self) -> None:
        """Stop the worker, clear the queue and drop the database (in the background)."""
        worker, queue, self.worker = self.worker, self.queue, None

        def clear() -> None:
            delete_queue_keys(self.broker_url, queue)
            drop_pg_database(self.database_name)

        if worker is None:
            background.later(clear)
        else:
            worker.stop_later(then=clear)


@pytest.fixture(scope="module")
def shared_world(
    request: pytest.FixtureRequest, pg_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedWorld]:
    """The module's world; its worker's environment adds the module's ``SHARED_WORKER_ENV`` (a dict of
    environment variables, if the module defines one: say, external commands that only its tests run)."""
    require("Redis", REDIS_URL, 6379)
    name, url = create_pg_database(pg_template)
    extra_env = dict(getattr(request.module, "SHARED_WORKER_ENV", {}))
    world = SharedWorld(name, url, REDIS_URL, tmp_path_factory.mktemp("shared-world"), extra_env=extra_env)
    try:
        yield world
    finally:
        world.close()


@pytest.fixture
def worker_setup(shared_world: SharedWorld, tmp_path: Path) -> Iterator[EngineSetup]:
    """Like ``engine_setup``, on the module's database (emptied first) and queue, with the module's worker
    running as ``setup.worker``; after the test, the worker is left idle (or replaced)."""
    shared_world.empty_tables()
    worker = shared_world.running_worker()
    setup = build_setup(shared_world.database_url, shared_world.broker_url, shared_world.queue, tmp_path)
    setup.worker = SharedWorkerView(worker, worker.log_size())
    try:
        yield setup
    finally:
        setup.close()
        shared_world.settle()
