"""Engines on both PostgreSQL drivers (scheduler.storage.db.make_engine): a pooled connection that idled is
pinged before use, replaced when its server session died, and left without an open transaction."""

from __future__ import annotations

import pytest
from sqlalchemy import text

import scheduler.storage.db
from scheduler.storage.db import make_engine


@pytest.fixture(autouse=True)
def ping_every_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scheduler.storage.db, "IDLE_PING_S", 0.0)  # any pooled connection counts as idle


def test_an_idle_connection_is_pinged_and_can_then_switch_to_autocommit(pg_driver_url: str) -> None:
    engine = make_engine(pg_driver_url)
    try:
        with engine.connect() as connection:
            first = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        # Pinged at checkout; psycopg 3 refuses autocommit inside a transaction a plain SELECT 1 would open.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            again = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
            # Each statement its own transaction: none was left open by the ping.
            own_transaction = connection.execute(text("SELECT now() = statement_timestamp()")).scalar_one()
    finally:
        engine.dispose()
    assert again == first  # the same pooled connection, alive
    assert own_transaction is True


def test_an_idle_connection_whose_session_died_is_replaced(pg_driver_url: str) -> None:
    engine, admin = make_engine(pg_driver_url), make_engine(pg_driver_url)
    try:
        with engine.connect() as connection:
            dead = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with admin.begin() as connection:
            assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": dead}).scalar_one()
        with engine.connect() as connection:
            fresh = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    finally:
        engine.dispose()
        admin.dispose()
    assert fresh != dead
