"""Engine creation: one place that knows SQLite's and PostgreSQL's connection quirks, and the drivers'.

Everything above this module runs the same SQLAlchemy statements whatever the driver; how they reach the
server is the driver's business, configured here (see :func:`make_engine`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import URL, Dialect, make_url

from scheduler.settings import PREPARE_THRESHOLD, Settings, prepare_threshold, supported_database_url

# A pooled connection idle at least this long is pinged when checked out (see _ping_if_idle).
IDLE_PING_S = 10.0


def _tune_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers and one writer share the file across processes; the busy timeout makes writers queue
    # instead of failing with "database is locked"; foreign keys are off by default in SQLite.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _announce_created(path: Path) -> Any:
    """A one-shot ``connect`` listener that names the SQLite file its first connection just created."""

    def announce(_dbapi_connection: Any, _record: Any) -> None:
        print(f"note: created the embedded database {path}", file=sys.stderr)

    return announce


def _stamp_checkin(_dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dialect: Dialect) -> Any:
    """A ``checkout`` listener: pessimistic disconnect check, only for a connection that sat idle in the pool
    for ``IDLE_PING_S``.

    ``pool_pre_ping`` would spend a round trip on every checkout: five per planner tick, one per worker
    execution. Connections in steady use are not pinged; one whose server went away while it was in use
    fails its statement, which invalidates the pool (SQLAlchemy's disconnect handling), and the caller's
    retry (the planner's next tick, the worker's database retry) gets a fresh connection. One that idled
    -- the usual victim of a server restart, a proxy or firewall timeout -- is pinged, and replaced if
    dead (raising ``DisconnectionError`` here makes the pool reconnect and check out again). The ping is the
    dialect's (``Dialect.do_ping``, what ``pool_pre_ping`` runs): it leaves no transaction open, which
    psycopg 3 would refuse to switch to autocommit.
    """

    def ping(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_S:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.DisconnectionError(f"stale pooled connection: {error}") from error

    return ping


def _mark_autocommit(_dbapi_connection: Any, record: Any) -> None:
    record.info["autocommit"] = True


def autocommits(connection: Connection) -> bool:
    """Whether ``connection`` comes from an ``autocommit`` engine (each statement its own transaction)."""
    return bool(connection.info.get("autocommit"))


def _psycopg_options(parsed: URL) -> tuple[URL, dict[str, Any]]:
    """psycopg 3's ``prepare_threshold``, moved from the URL's query to its connect arguments (it wants a
    whole number or None, and SQLAlchemy would pass the query's text)."""
    if parsed.get_driver_name() != "psycopg" or PREPARE_THRESHOLD not in parsed.query:
        return parsed, {}
    raw = parsed.query[PREPARE_THRESHOLD]
    threshold = prepare_threshold(raw if isinstance(raw, str) else raw[-1])
    return parsed.difference_update_query([PREPARE_THRESHOLD]), {PREPARE_THRESHOLD: threshold}


def make_engine(url: str, *, autocommit: bool = False) -> Engine:
    """Create an engine for ``url``; SQLite files get their directory created and WAL mode, and a file that
    does not exist yet is named (absolute path, on stderr) when the first connection creates it.

    PostgreSQL drivers: a bare ``postgresql://`` URL means psycopg2 (the design card's driver), whatever
    SQLAlchemy's default is; ``postgresql+psycopg://`` means psycopg 3, the one we recommend. Both run the
    same statements. psycopg 3 binds values on the server and prepares a statement on a connection once it
    has run there ``prepare_threshold`` times (psycopg's default, 5): the worker's claim and completion and
    the planner's statements are then planned once per connection, not on every run. ``?prepare_threshold=N``
    in the URL changes the threshold; ``?prepare_threshold=none`` turns preparing off (behind PgBouncer in
    transaction mode without ``max_prepared_statements``, where a prepared statement can vanish).
    ``autocommit`` (PostgreSQL only; ignored for SQLite): see :func:`autocommits`.
    """
    parsed = make_url(supported_database_url(url))
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg2")
    parsed, connect_args = _psycopg_options(parsed)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": 30})
        event.listen(engine, "connect", _tune_sqlite)
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database).resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                event.listen(engine, "connect", _announce_created(path), once=True)
        return engine
    if autocommit:
        # Each statement commits by itself (no COMMIT round trip); transactions send BEGIN/COMMIT themselves
        # (scheduler.storage.transactions.write_transaction). Set when connecting: no per-checkout switching.
        engine = create_engine(parsed, isolation_level="AUTOCOMMIT", connect_args=connect_args)
        event.listen(engine, "connect", _mark_autocommit)
    else:
        engine = create_engine(parsed, connect_args=connect_args)
    event.listen(engine.pool, "checkin", _stamp_checkin)
    event.listen(engine.pool, "checkout", _ping_if_idle(engine.dialect))
    return engine


def engine_from_settings(settings: Settings) -> Engine:
    return make_engine(settings.effective_database_url)
