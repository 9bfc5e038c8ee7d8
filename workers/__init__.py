"""systemprompt-scheduler workers: the Celery app, the execution task, the command registry and the sandbox.

Importing this package (or :mod:`scheduler.commands.registry`, :mod:`scheduler.commands.builtins`,
:mod:`scheduler.execution.sandbox`) imports
neither Celery nor SQLAlchemy; only the Celery app module does.
"""
