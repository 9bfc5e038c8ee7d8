"""The composition root: the one place that decides which parts a process is built from.

Every entry point builds its scheduler objects here: the CLI's verbs, ``scheduler:serve``, the worker's
runtime and programs using the Python API (:func:`open_service`). The core (``scheduler/``) defines the parts
and the ports they need (a :class:`~scheduler.planning.publisher.Publisher`, an
:class:`~scheduler.observability.events.EventBus`); this module plugs in the Celery publisher and the Redis
event channel. Celery and kombu are imported by the functions that need them, not by importing this module,
so a reading verb never loads them (see docs/architecture.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scheduler.commands.loading import load_registry
from scheduler.commands.registry import CommandRegistry
from scheduler.settings import Settings, load_settings
from scheduler.storage.schema import open_database
from workers.event_bus import event_bus
from workers.runtime_commands import deferred_worker_runtime

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from scheduler.alerting.port import Sender
    from scheduler.planning.planner import Planner
    from scheduler.planning.publisher import Publisher
    from scheduler.service import SchedulerService
    from workers.publisher import CeleryPublisher

__all__ = [
    "alert_senders",
    "celery_publisher",
    "commands",
    "event_bus",
    "open_database",
    "open_service",
    "planner",
]


def commands(settings: Settings) -> CommandRegistry:
    """The command registry of ``settings`` (a command defined twice raises
    :class:`~scheduler.errors.CommandCollision`: load it before touching the database). ``system:health``
    and ``scheduler:cleanup`` run on a worker runtime of ``settings``, built when one is first called."""
    return load_registry(settings, runtime=deferred_worker_runtime(settings))


def celery_publisher(settings: Settings, *, check: bool) -> CeleryPublisher:
    """The Celery publisher of ``settings``' broker; with ``check``, one whose broker answered (else
    :class:`~scheduler.errors.BrokerUnavailable`)."""
    from workers.app import create_app
    from workers.publisher import CeleryPublisher

    publisher = CeleryPublisher(create_app(settings))
    if check:
        publisher.check()
    return publisher


def open_service(
    settings: Settings | None = None,
    *,
    actor: str | None = None,
    publisher: Publisher | None = None,
    registry: CommandRegistry | None = None,
) -> SchedulerService:
    """A :class:`~scheduler.service.SchedulerService` wired like the CLI's: the command registry, the
    database on a usable schema, and events that reach the deployment's Redis channel.

    ``publisher``: how ``run_task_now`` sends executions (default none: they stay ``pending`` and the
    planner's relay publishes them; pass :func:`celery_publisher` to publish at once).
    """
    from scheduler.service import SchedulerService

    settings = settings if settings is not None else load_settings().settings
    return SchedulerService.from_settings(
        settings,
        publisher=publisher,
        actor=actor,
        commands=registry if registry is not None else commands(settings),
        events=event_bus(settings),
    )


def planner(settings: Settings, engine: Engine) -> Planner:
    """The planner loop on ``engine``, publishing through Celery, emitting on :func:`event_bus` and sending
    alerts through :func:`alert_senders`."""
    from scheduler.planning.planner import Planner

    return Planner(
        engine,
        settings,
        celery_publisher(settings, check=False),
        events=event_bus(settings),
        senders=alert_senders(settings),
    )


def alert_senders(settings: Settings) -> dict[str, Sender]:
    """The senders of the alert channels of ``settings`` (stdlib HTTP and SMTP: workers.alert_channels)."""
    from workers.alert_channels import alert_senders as senders

    return senders(settings)
