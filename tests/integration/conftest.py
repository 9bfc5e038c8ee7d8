"""Fixtures of the integration tests: ``engine_setup``, defined in ``workerproc`` (the worker subprocesses
import that module too), and ``worker_setup`` (one worker for a module's tests), defined in ``shared_world``,
registered here.

The helpers behind the root ``conftest.py`` (``PG_ADMIN_URL``, ``require``, ...) are in
:mod:`tests.support.services`.
"""

from __future__ import annotations

from shared_world import shared_world, worker_setup
from workerproc import engine_setup

__all__ = ["engine_setup", "shared_world", "worker_setup"]
