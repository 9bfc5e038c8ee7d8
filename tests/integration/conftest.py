"""Fixtures of the integration tests: ``engine_setup``, defined in ``workerproc`` (the worker subprocesses
import that module too), and ``worker_setup`` (one worker for a module's tests), defined in ``shared_world``,
registered here; and ``engines``, a plain and an autocommit engine on one fresh PostgreSQL database through
each driver (the hot-path statement tests).

The helpers behind the root ``conftest.py`` (``PG_ADMIN_URL``, ``require``, ...) are in
:mod:`tests.support.services`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from shared_world import shared_world, worker_setup
from sqlalchemy import Engine
from workerproc import engine_setup

from scheduler.storage.db import make_engine

__all__ = ["engine_setup", "engines", "shared_world", "worker_setup"]


@pytest.fixture
def engines(pg_driver_url: str) -> Iterator[tuple[Engine, Engine]]:
    """(plain engine, autocommit engine) on one fresh database, through one driver."""
    plain, hot = make_engine(pg_driver_url), make_engine(pg_driver_url, autocommit=True)
    yield plain, hot
    plain.dispose()
    hot.dispose()
