"""Celery settings derived from the one typed settings object (``scheduler.settings``).

:func:`build_config` maps :class:`~scheduler.settings.Settings` to Celery's setting names; ``workers.app``
uses it so tests and tools can pass their own settings. The top-level ``celeryconfig`` module (``celery
--config celeryconfig``) exposes the same values for the settings of the environment.

What the values guarantee, and why:

- ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged after its execution ran, and
  requeued when the process running it died, so a crash never silently drops an attempt. Redelivery is safe:
  the worker's claim is conditional (docs/architecture.md, invariant 3), so a duplicate does nothing.
- ``worker_prefetch_multiplier = 1``: a worker reserves one message per process, so a long task does not hold
  others hostage in its prefetch buffer.
- no result backend: outcomes live in ``task_executions``, not in Celery's results.
- worker events on (``worker_send_task_events``) for Flower: it learns of each task from the worker's
  ``task-received`` (which carries the readable shadow name), then ``task-started``/``-succeeded``.
  ``task_send_sent_event`` is off: a ``task-sent`` event is one more Redis ``PUBLISH`` per message, which
  made the publisher twice as slow; without it a task shows in Flower once a worker took it, not while it
  waits in the queue (``scheduler:history`` shows those). Switched on, the events go out in the same kombu
  batch as the messages (``workers.publisher``).
- ``visibility_timeout`` (Redis): an unacknowledged message is handed to another worker after this long, so it
  must exceed the longest attempt plus its retry countdown: ``max(2 h, taskTimeout + hard-limit grace +
  retry countdown cap + 15 min)``. A task with a longer timeout of its own may see its message redelivered
  while it still runs; the redelivery finds the execution ``running`` with a fresh heartbeat and does nothing.
"""

from __future__ import annotations

import math
from typing import Any

from scheduler.limits import RETRY_COUNTDOWN_CAP_S, hard_limit_grace_s
from scheduler.settings import Settings
from workers.embedded import EMBEDDED_BROKER_URL, EMBEDDED_TRANSPORT, is_embedded_broker, transport_options

MIN_VISIBILITY_TIMEOUT_S = 2 * 3600
VISIBILITY_MARGIN_S = 15 * 60
BROKER_CONNECT_TIMEOUT_S = 3.0
# Celery's broker_transport for redis:// URLs: kombu's Redis transport that survives losing Redis mid-work.
REDIS_TRANSPORT = "workers.redis_transport:Transport"
# Publishing gives up quickly: the caller records BrokerUnavailable and the recovery sweep republishes later.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.25, "interval_max": 0.5}


def visibility_timeout_s(settings: Settings) -> int:
    timeout_s = settings.task_timeout / 1000
    longest = timeout_s + hard_limit_grace_s(timeout_s) + RETRY_COUNTDOWN_CAP_S + VISIBILITY_MARGIN_S
    return max(MIN_VISIBILITY_TIMEOUT_S, math.ceil(longest))


def build_config(settings: Settings) -> dict[str, Any]:
    """Celery settings (lower-case names) for ``settings``; creates the embedded broker's folders if used."""
    broker_url = settings.effective_broker_url
    options: dict[str, Any] = {"visibility_timeout": visibility_timeout_s(settings)}
    transport = None  # the URL's scheme says
    if is_embedded_broker(broker_url):
        options.update(transport_options(settings.home))
        broker_url = EMBEDDED_BROKER_URL  # with a host: kombu warns about a missing one on every connection
        transport = EMBEDDED_TRANSPORT
    elif broker_url.startswith(("redis://", "rediss://", "unix://")):
        options.update(socket_connect_timeout=BROKER_CONNECT_TIMEOUT_S)
        if broker_url.startswith("redis://"):  # kombu turns TLS on from the rediss scheme name: left to kombu
            transport = REDIS_TRANSPORT
    return {
        "broker_url": broker_url,
        "broker_transport": transport,
        "broker_transport_options": options,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": BROKER_CONNECT_TIMEOUT_S,
        "task_default_queue": settings.default_queue,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,
        "result_backend": None,
        "task_store_errors_even_if_ignored": False,
        "worker_send_task_events": True,
        "task_send_sent_event": False,  # see the module docstring
        "task_publish_retry_policy": dict(PUBLISH_RETRY_POLICY),
        # A running execution keeps going when the broker connection drops; its outcome goes to the database.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_hijack_root_logger": False,
        "enable_utc": True,
        "timezone": "UTC",
    }
