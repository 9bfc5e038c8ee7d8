"""Fixtures of the integration tests: ``engine_setup`` (see ``workerproc``) and the root conftest's helpers.

The fixture itself lives in ``workerproc`` (the worker subprocesses import that module too). Because neither
``tests`` nor ``tests/integration`` is a package, pytest imports every ``conftest.py`` as the module
``conftest`` and the last one imported wins: a test that runs ``from conftest import PG_ADMIN_URL`` would get
this module. So this module re-exports the root conftest's public helpers, loaded from its file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from workerproc import EngineSetup, engine_setup


def _root_conftest() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "conftest.py"
    spec = importlib.util.spec_from_file_location("_tests_root_conftest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_root = _root_conftest()
IN_CI = _root.IN_CI
PG_ADMIN_URL = _root.PG_ADMIN_URL
REDIS_URL = _root.REDIS_URL
create_pg_database = _root.create_pg_database
drop_pg_database = _root.drop_pg_database
require = _root.require

__all__ = [
    "IN_CI",
    "PG_ADMIN_URL",
    "REDIS_URL",
    "EngineSetup",
    "create_pg_database",
    "drop_pg_database",
    "engine_setup",
    "require",
]
