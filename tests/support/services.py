"""The machine's PostgreSQL and Redis: their URLs, a check that skips a test when one does not answer (a
failure under CI=true), throw-away PostgreSQL databases, and clearing a test queue's keys off Redis."""

from __future__ import annotations

import os
import socket
import uuid

import pytest
import redis
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

PG_ADMIN_URL = os.environ.get(
    "SCHEDULER_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("SCHEDULER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require(service: str, url: str, default_port: int) -> None:
    """Skip the test when ``service`` does not answer, unless CI=true, where that is a failure."""
    parsed = make_url(url) if "://" in url else None
    host = (parsed.host if parsed else None) or "127.0.0.1"
    port = (parsed.port if parsed else None) or default_port
    if _answers(host, port):
        return
    message = f"{service} is not answering on {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: a missing service is a failure)")
    pytest.skip(f"{message}; start it to run this test")


def admin_engine() -> Engine:
    """An AUTOCOMMIT engine on the admin database (for CREATE/DROP DATABASE); dispose of it after use."""
    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


def pg_database_url(database: str) -> str:
    """The URL of ``database`` on the server of :data:`PG_ADMIN_URL`."""
    return make_url(PG_ADMIN_URL).set(database=database).render_as_string(hide_password=False)


def create_pg_database(template: str | None) -> tuple[str, str]:
    """Create a fresh database (cloned from ``template`` when given); return (name, url)."""
    name = f"sched_t_{uuid.uuid4().hex[:12]}"
    admin = admin_engine()
    with admin.connect() as connection:
        clause = f' TEMPLATE "{template}"' if template else ""
        connection.execute(text(f'CREATE DATABASE "{name}"{clause}'))
    admin.dispose()
    return name, pg_database_url(name)


def drop_pg_database(name: str) -> None:
    admin = admin_engine()
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def empty_pg_tables(database_url: str) -> None:
    """Delete every row of the PostgreSQL database at ``database_url`` but the schema's version (ids are not
    restarted): a module's tests that share one database and one worker start each from empty tables."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            names = connection.execute(
                text(
                    "SELECT quote_ident(tablename) FROM pg_tables"
                    " WHERE schemaname = current_schema() AND tablename <> 'alembic_version'"
                )
            ).scalars()
            connection.execute(text("SET LOCAL lock_timeout = '10s'"))
            connection.execute(text(f"TRUNCATE {', '.join(names)} CASCADE"))
    finally:
        engine.dispose()


def delete_queue_keys(broker_url: str, queue: str) -> None:
    """Delete what a test's queue left on the Redis broker at ``broker_url``: the queue's lists and kombu's
    bindings of it (every test has its own queue name, so nothing else is touched)."""
    client = redis.Redis.from_url(broker_url, socket_connect_timeout=1)
    try:
        keys = list(client.scan_iter(match=f"{queue}*", count=1000))
        keys += list(client.scan_iter(match=f"_kombu.binding.{queue}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
