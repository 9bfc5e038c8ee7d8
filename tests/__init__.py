"""The test suite. A package so that ``tests.support`` (shared helpers, no tests) imports by its full name,
in the test process and in the worker subprocesses the tests start (their ``PYTHONPATH`` holds the
repository)."""
