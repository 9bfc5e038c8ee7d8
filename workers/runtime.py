"""Per-process state of a worker: database engine, command registry, event bus; and the runtime commands.

Everything is created on first use and again in a forked child (a prefork pool process must not share its
parent's database connections), keyed by process id.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine

from scheduler.commands.loading import load_registry
from scheduler.commands.registry import CommandContext, CommandRegistry
from scheduler.observability.events import EventBus
from scheduler.settings import Settings
from scheduler.storage.clock import db_now
from scheduler.storage.db import IDLE_PING_S, engine_from_settings, make_engine
from scheduler.storage.leases import all_leases
from scheduler.storage.probes import ping
from workers.event_bus import event_bus

logger = logging.getLogger(__name__)

# A running execution whose heartbeat is this many intervals old is presumed dead (the planner's recovery
# sweep uses the same rule: scheduler.planning.recovery.silent_reason).
STALE_AFTER_BEATS = 3


class WorkerRuntime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.nodename: str | None = None  # the Celery node (name@host) of this worker, set when it starts
        self._pid = -1
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._hot_engine: Engine | None = None
        self._local = threading.local()  # per thread: the kept hot connection (hot_connection)
        self._registry: CommandRegistry | None = None
        self._events: EventBus | None = None

    def _ensure_process(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            for engine in (self._engine, self._hot_engine):
                if engine is not None:
                    engine.dispose(close=False)  # the parent's connections stay the parent's
            self._engine = None
            self._hot_engine = None
            self._local = threading.local()  # the parent's kept connections stay the parent's
            self._registry = None
            self._events = None
            self._pid = os.getpid()

    @property
    def engine(self) -> Engine:
        self._ensure_process()
        if self._engine is None:
            self._engine = engine_from_settings(self.settings)
        return self._engine

    @property
    def hot_engine(self) -> Engine:
        """The engine of :func:`workers.runner.execute`: on PostgreSQL a second pool whose connections
        autocommit (the claim and a plain outcome are one statement each, no ``COMMIT`` round trip);
        elsewhere :attr:`engine`."""
        self._ensure_process()
        if self._hot_engine is None:
            url = self.settings.effective_database_url
            self._hot_engine = make_engine(url, autocommit=True) if "postgresql" in url else self.engine
        return self._hot_engine

    @contextmanager
    def hot_connection(self) -> Iterator[Connection]:
        """A connection of :attr:`hot_engine`; on PostgreSQL one kept by this thread between executions
        (checking one out of the pool and back for every execution costs about as much as a statement).

        A kept connection that sat unused for :data:`scheduler.storage.db.IDLE_PING_S` goes back to the pool
        and a fresh checkout replaces it (the pool pings connections that idled). An exception leaving the
        block also gives it back, so the pool resets it, or replaces it when it is broken. SQLite connections
        are not kept (an idle one could hold a read snapshot open).
        """
        self._ensure_process()
        if self.hot_engine is self.engine:
            with self.engine.connect() as fresh:
                yield fresh
            return
        local = self._local
        connection: Connection | None = getattr(local, "connection", None)
        if connection is not None and (
            connection.invalidated or time.monotonic() - local.used_at >= IDLE_PING_S
        ):
            local.connection = None
            connection.close()
            connection = None
        if connection is None:
            connection = local.connection = self.hot_engine.connect()
        try:
            yield connection
        except BaseException:
            local.connection = None
            connection.close()
            raise
        local.used_at = time.monotonic()

    @property
    def registry(self) -> CommandRegistry:
        """Built on first use, so commands that the ``-A`` module or plugins register are all known; the
        worker's start builds it once to refuse a registry that does not load (:mod:`workers.app`)."""
        self._ensure_process()
        if self._registry is None:
            self._registry = load_registry(self.settings, runtime=self, worker=self.nodename)
        return self._registry

    @property
    def events(self) -> EventBus:
        """The in-process bus; forwarded to Redis pub/sub when the broker is Redis."""
        self._ensure_process()
        if self._events is None:
            self._events = event_bus(self.settings)
        return self._events

    @property
    def stale_after(self) -> timedelta:
        return timedelta(milliseconds=self.settings.heartbeat_interval * STALE_AFTER_BEATS)

    def emit(self, event: str, payload: dict[str, Any]) -> None:
        """Emit (the bus redacts secrets); a failing handler is logged, never fails the execution."""
        try:
            self.events.emit(event, payload)
        except Exception:
            logger.exception("an event handler of %s failed", event)

    # ----------------------------------------------------------------------------------- runtime commands

    def check_health(self, ctx: CommandContext) -> dict[str, Any]:
        """system:health: the database answers, the broker accepts a connection, a planner holds the lease."""
        report: dict[str, Any] = {}
        problems: list[str] = []
        try:
            with self.engine.connect() as connection:
                ping(connection)
                report["database"] = "ok"
                now = db_now(connection)
                held = [lease for lease in all_leases(connection) if lease.expires_at > now]
                report["planner"] = {"lease": held[0].name, "holder": held[0].holder} if held else None
        except Exception as error:
            report["database"] = f"unreachable: {error}".splitlines()[0]
            problems.append("database")
        if report.get("planner") is None and "database" not in problems:
            problems.append("planner")
        report["broker"] = _broker_status(self.settings)
        if report["broker"] != "ok":
            problems.append("broker")
        for name, value in report.items():
            ctx.log("INFO" if name not in problems else "ERROR", f"{name}: {value}")
        if problems:
            raise RuntimeError(f"unhealthy: {', '.join(problems)}")
        return report

    def run_cleanup(self, ctx: CommandContext) -> dict[str, Any]:
        """scheduler:cleanup: delete finished executions older than historyRetentionDays."""
        from scheduler.planning.cleanup import run_cleanup

        deleted = run_cleanup(self.engine, self.settings)
        ctx.log("INFO", f"deleted {deleted} finished executions and their logs")
        return {"deleted": deleted}


def _broker_status(settings: Settings) -> str:
    from kombu.connection import Connection

    from workers.celery_config import build_config

    config = build_config(settings)
    try:
        with Connection(  # type: ignore[no-untyped-call]
            config["broker_url"], transport_options=config["broker_transport_options"], connect_timeout=3
        ) as connection:
            connection.ensure_connection(max_retries=1)
        return "ok"
    except Exception as error:
        return f"unreachable: {error}".splitlines()[0]
