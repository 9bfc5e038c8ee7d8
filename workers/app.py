"""The Celery app: ``create_app(settings)``; the module-level ``app`` for ``celery -A workers.app worker``.

The module-level ``app`` is built from the environment's settings on first access, so importing this module
reads nothing by itself; tests and tools call :func:`create_app` with their own settings.

On worker start (``worker_init``, in the main process) the app checks the database schema: on the embedded
default it is created or upgraded; on PostgreSQL an outdated schema stops the worker with the message naming
``systemprompt scheduler:migrate`` (exit 69). It then loads the command registry: a command defined twice
stops the worker with one line naming both definitions (exit 2). With the embedded broker, a background
thread prunes delivered message files.

Every worker answers the remote-control inspect command :data:`CAPABILITIES_COMMAND` with the queues it
consumes and the commands it knows (:func:`capabilities`): ``scheduler:health`` and ``scheduler:run --wait``
use it to say when no live worker can run a task (see
:func:`workers.health.discover_workers`).
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

from celery import Celery, signals
from celery.worker.control import inspect_command

from scheduler.errors import SchedulerError
from scheduler.observability.log_setup import configure_logging
from scheduler.settings import Settings, load_settings
from scheduler.storage.schema import ensure_schema
from workers.celery_config import build_config
from workers.embedded import is_embedded_broker, start_pruner
from workers.metrics import install as install_metrics
from workers.process_group import lead_own_process_group
from workers.runtime import WorkerRuntime
from workers.tasks import register_tasks

APP_NAME = "systemprompt"
logger = logging.getLogger(__name__)
CAPABILITIES_COMMAND = "scheduler_capabilities"


@inspect_command(name=CAPABILITIES_COMMAND)  # type: ignore[untyped-decorator]
def capabilities(state: Any) -> dict[str, list[str]]:
    """The queues this worker consumes and the commands it can run: ``{"queues": [...], "commands": [...]}``.

    The commands are the registry the worker built from what was installed and configured when it started
    (its pool processes build the same); one installed later is missing until the worker is restarted.
    """
    consumer = state.consumer
    queues = sorted(queue.name for queue in consumer.task_consumer.queues) if consumer.task_consumer else []
    runtime: WorkerRuntime | None = getattr(consumer.app, "scheduler_runtime", None)
    commands = [] if runtime is None else [spec.name for spec in runtime.registry.specs()]
    return {"queues": queues, "commands": commands}


def check_schema(runtime: WorkerRuntime) -> None:
    """Upgrade the embedded database, or raise :class:`~scheduler.errors.SchemaOutdated` on PostgreSQL."""
    ensure_schema(runtime.engine, auto_upgrade=runtime.settings.is_embedded)


def check_commands(runtime: WorkerRuntime) -> None:
    """Load the command registry once at start: a command defined twice raises
    :class:`~scheduler.errors.CommandCollision` here rather than failing every execution."""
    logger.info("%d commands registered", len(runtime.registry))


def create_app(settings: Settings | None = None) -> Any:
    """A Celery app configured from ``settings`` (default: the environment's), with the execution task."""
    settings = settings if settings is not None else load_settings().settings
    app = Celery(APP_NAME, set_as_current=False)
    app.config_from_object(build_config(settings))
    app.scheduler_settings = settings
    app.scheduler_runtime = runtime = WorkerRuntime(settings)
    register_tasks(app)
    install_metrics(app, settings)
    stop_pruner = threading.Event()

    def on_worker_init(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is not app:
            return
        runtime.nodename = sender.hostname
        try:
            check_commands(runtime)  # first: a worker that cannot start creates no database
            check_schema(runtime)
        except SchedulerError as error:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(error.exit_code) from None

    def on_worker_ready(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app and is_embedded_broker(settings.effective_broker_url):
            start_pruner(settings.home, stop_pruner)

    def on_worker_shutdown(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            stop_pruner.set()

    def on_setup_logging(loglevel: Any = None, **_: Any) -> None:
        # A bare `celery -A workers.app worker` logs like `systemprompt scheduler:worker` does; its -l wins.
        level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else loglevel
        configure_logging(settings.model_copy(update={"log_level": level}) if level else settings)

    signals.setup_logging.connect(on_setup_logging, weak=False, dispatch_uid="systemprompt-logging")
    signals.worker_init.connect(on_worker_init, weak=False)
    signals.worker_ready.connect(on_worker_ready, weak=False)
    signals.worker_shutdown.connect(on_worker_shutdown, weak=False)
    # The hard time limit must end a command's children too (see workers.process_group).
    signals.worker_process_init.connect(lead_own_process_group, weak=False, dispatch_uid="own-process-group")
    return app


_app: Any = None


def __getattr__(name: str) -> Any:
    # `celery -A workers.app` reads `workers.app.app`: built from the environment on first access.
    global _app
    if name == "app":
        if _app is None:
            _app = create_app()
        return _app
    raise AttributeError(name)
