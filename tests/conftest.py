"""Shared fixtures: real databases (a fresh one per test) and service checks that skip locally, fail in CI.

The plain helpers behind them (service URLs, ``require``, throw-away databases) are in
:mod:`tests.support.services`; import them from there."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from scheduler.storage.db import make_engine
from scheduler.storage.schema import upgrade
from tests.support import background
from tests.support.services import (
    PG_ADMIN_URL,
    REDIS_URL,
    admin_engine,
    create_pg_database,
    drop_pg_database,
    pg_database_url,
    require,
)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated template database, cloned by every test that asks for ``pg_url``."""
    require("PostgreSQL", PG_ADMIN_URL, 5432)
    name = f"sched_tmpl_{uuid.uuid4().hex[:12]}"
    admin = admin_engine()
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    engine = make_engine(pg_database_url(name))
    upgrade(engine)
    engine.dispose()
    yield name
    drop_pg_database(name)


@pytest.fixture(scope="session", autouse=True)
def background_cleanup() -> Iterator[None]:
    """Wait, at the end of the session, for the clean-up the tests left to :mod:`tests.support.background`."""
    yield
    background.drain()


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """URL of a fresh, migrated PostgreSQL database, dropped after the test (in the background: a DROP
    DATABASE waits for a checkpoint)."""
    name, url = create_pg_database(pg_template)
    yield url
    background.later(drop_pg_database, name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database file, copied by every test that asks for ``sqlite_url`` (migrating a file
    takes ~0.14 s, most of it waiting for SQLite's syncs; a copy of it takes well under a millisecond)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "scheduler.db"
    engine = make_engine(f"sqlite:///{path.as_posix()}")
    upgrade(engine)
    engine.dispose()  # the last connection closed: the write-ahead log is folded into the file and deleted
    assert not path.with_name(f"{path.name}-wal").exists(), "the template's write-ahead log was not folded in"
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """URL of a fresh, migrated SQLite database file (a copy of the session's migrated template)."""
    path = tmp_path / "scheduler.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path.as_posix()}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using this runs on both databases."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    url: str = request.getfixturevalue(fixture)
    return url


PG_DRIVERS = ("psycopg2", "psycopg")  # the PostgreSQL drivers we support (scheduler.storage.db.make_engine)


def with_driver(url: str, driver: str) -> str:
    """``url`` (PostgreSQL) spelt for ``driver``."""
    return make_url(url).set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)


@pytest.fixture(params=PG_DRIVERS)
def pg_driver_url(request: pytest.FixtureRequest, pg_url: str) -> str:
    """``pg_url`` through each PostgreSQL driver: the same statements must behave alike on both."""
    return with_driver(pg_url, request.param)


@pytest.fixture(params=["sqlite", *PG_DRIVERS])
def db_url_each_driver(request: pytest.FixtureRequest) -> str:
    """SQLite, then PostgreSQL through each driver (a module opts in by defining ``db_url`` from this)."""
    if request.param == "sqlite":
        url: str = request.getfixturevalue("sqlite_url")
        return url
    return with_driver(request.getfixturevalue("pg_url"), request.param)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def redis_url() -> str:
    """The machine's Redis; tests isolate themselves by queue names and key prefixes, never by flushing."""
    require("Redis", REDIS_URL, 6379)
    return REDIS_URL
