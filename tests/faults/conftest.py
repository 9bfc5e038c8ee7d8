"""Fixtures of the fault scenarios: a fresh database + Redis queue with planner processes, and a PRIVATE
PostgreSQL server for the tests that stop or restart one (the machine's servers are never touched): one
cluster per session, a fresh database in it per test."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from faultkit import FaultSetup, base_env, unique_queue
from sqlalchemy import create_engine, text

from scheduler.storage.db import make_engine
from scheduler.storage.schema import upgrade
from tests.support.processes import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "postgres"  # initdb refuses to run as root: the private server runs as this unprivileged user
TEMPLATE = "sched_template"


def _setup(database_url: str, broker_url: str, workdir: Path) -> FaultSetup:
    queue = unique_queue()
    return FaultSetup(
        database_url=database_url,
        broker_url=broker_url,
        queue=queue,
        workdir=workdir,
        engine=make_engine(database_url),
        env=base_env(database_url, broker_url, workdir, queue),
    )


@pytest.fixture
def fault_setup(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[FaultSetup]:
    """A fresh PostgreSQL database and Redis with a unique queue; planners started through it are stopped
    (and the queue's keys deleted) after the test."""
    setup = _setup(pg_url, redis_url, tmp_path)
    try:
        yield setup
    finally:
        setup.close()


@pytest.fixture
def private_fault_setup(
    private_postgres: PrivatePostgres, redis_url: str, tmp_path: Path
) -> Iterator[tuple[FaultSetup, PrivatePostgres]]:
    """Like ``fault_setup``, on a private PostgreSQL server the test may stop and start."""
    setup = _setup(private_postgres.url, redis_url, tmp_path)
    try:
        yield setup, private_postgres
    finally:
        setup.close()


# ---------------------------------------------------------------------------------------- private server


@dataclass(frozen=True)
class PrivatePostgres:
    """A throw-away PostgreSQL cluster on a free port, owned by an unprivileged user; stop/start at will.
    ``database``: the database :attr:`url` names (each test gets one of its own)."""

    datadir: Path
    port: int
    log: Path
    database: str = "postgres"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{self.database}"

    def _pg_ctl(self, *args: str, timeout_s: float = 30) -> None:
        command = [str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.log), "-w", *args]
        _as_pg_user(command, timeout_s)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_ctl("-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "stop")

    def running(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            return True
        return False

    def execute(self, statement: str) -> None:
        """Run ``statement`` outside a transaction on the cluster's ``postgres`` database."""
        admin = create_engine(replace(self, database="postgres").url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.execute(text(statement))
        finally:
            admin.dispose()


def _as_pg_user(command: list[str], timeout_s: float) -> None:
    if os.geteuid() == 0:
        command = ["runuser", "-u", PG_USER, "--", *command]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if completed.returncode != 0:
        raise RuntimeError(f"{command[-1]} failed ({completed.returncode}): {completed.stderr[-2000:]}")


@pytest.fixture(scope="session")
def private_cluster() -> Iterator[PrivatePostgres]:
    """One private PostgreSQL 15 cluster per test session (one ``initdb``), with a migrated template database;
    stopped and deleted when the session ends."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL server binaries are not installed under {PG_BIN}")
    # Not under pytest's tmp dir: that is private to root (0700), and the server runs as another user.
    root = Path(tempfile.mkdtemp(prefix="sched-private-pg-"))
    datadir = root / "data"
    datadir.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, PG_USER)
        shutil.chown(datadir, PG_USER)
    root.chmod(0o755)
    _as_pg_user([str(PG_BIN / "initdb"), "-D", str(datadir), "-U", "postgres", "--auth=trust", "-N"], 60)
    server = PrivatePostgres(datadir=datadir, port=free_port(), log=root / "server.log")
    if os.geteuid() == 0:
        server.log.touch()
        shutil.chown(server.log, PG_USER)
    server.start()
    try:
        server.execute(f'CREATE DATABASE "{TEMPLATE}"')
        engine = make_engine(replace(server, database=TEMPLATE).url)
        upgrade(engine)
        engine.dispose()
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop("immediate")
        deadline = time.monotonic() + 10
        while server.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def private_postgres(private_cluster: PrivatePostgres) -> PrivatePostgres:
    """The session's private server, running, with a fresh migrated database of this test's own (cloned from
    the template); the test may stop and start the server. The database is not dropped: the whole cluster is
    deleted when the session ends, and a test may have left the server stopped."""
    if not private_cluster.running():
        private_cluster.start()
    name = f"sched_t_{uuid.uuid4().hex[:12]}"
    private_cluster.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    return replace(private_cluster, database=name)
