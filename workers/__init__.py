"""systemprompt-scheduler workers: the Celery app, the execution task, the command registry and the sandbox.

Importing this package (or :mod:`workers.commands`, :mod:`workers.builtins`, :mod:`workers.sandbox`) imports
neither Celery nor SQLAlchemy; only the Celery app module does.
"""
