"""Execution: the Celery-free parts of running one attempt of an execution."""
