"""Helpers shared by the test directories (plain functions and classes; the fixtures stay in ``conftest.py``
files and the modules that register them).

- :mod:`tests.support.services`: the machine's PostgreSQL and Redis, checks that skip (or fail in CI) when
  one does not answer, throw-away PostgreSQL databases.
- :mod:`tests.support.processes`: polling, free ports, process liveness, stopping a process group.
- :mod:`tests.support.celery_worker`: a real Celery worker subprocess: start, wait until ready, stop, kill.
- :mod:`tests.support.fork_bomb`: a self-bounding fork bomb script for the sandbox tests.
"""
