"""The event bus of a process: in-process handlers, and the Redis channel of the deployment on Redis.

redis-py (about 60 ms of imports) is loaded by the first event, not here, so a CLI verb that only reads
never pays for it. One Redis publisher per deployment and process: one sender thread, one flush at exit.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from scheduler.observability.events import EVENT_NAMES, EventBus
from scheduler.settings import Settings

if TYPE_CHECKING:
    from workers.remote_events import RedisEventPublisher

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def event_bus(settings: Settings) -> EventBus:
    """A new bus; with a Redis broker, every event also goes to the channel of ``settings``' deployment."""
    bus = EventBus()
    url = settings.effective_broker_url
    if url.startswith(REDIS_SCHEMES):
        for name in EVENT_NAMES:
            bus.on(name, functools.partial(_to_redis, url, settings.events_prefix, name))
    return bus


@functools.cache
def _redis_publisher(url: str, prefix: str) -> RedisEventPublisher:
    from workers.remote_events import RedisEventPublisher, channel_for

    return RedisEventPublisher(url, channel_for(url, prefix))


def _to_redis(url: str, prefix: str, name: str, payload: dict[str, Any]) -> None:
    _redis_publisher(url, prefix).publish_redacted(name, payload)
