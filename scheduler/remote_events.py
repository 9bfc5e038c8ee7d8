"""The spec's events across processes: JSON on the Redis pub/sub channel ``systemprompt:events``.

Used when the broker is Redis. Each message is one JSON object:
``{"event": "task-event", "at": "<ISO UTC>", ...payload}`` where the payload is what
:class:`scheduler.events.EventBus` handlers receive (for ``task-event``: ``type``
``executed``/``completed``/``failed`` and ``execution``), with secret-looking data keys redacted.

Pub/sub keeps nothing, so every message is also pushed onto the capped list ``systemprompt:events:recent``
(the last :data:`RECENT_MAX`) in the same round trip; ``systemprompt scheduler:events`` prints those before it
follows the channel. Publishing never fails the caller: a Redis error is logged (once a minute) and dropped.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import redis

from scheduler.events import EVENT_NAMES, EventBus
from scheduler.records import iso_utc
from scheduler.redaction import redact

logger = logging.getLogger(__name__)

CHANNEL = "systemprompt:events"
RECENT_SUFFIX = ":recent"
RECENT_MAX = 1000
_CONNECT_TIMEOUT_S = 2.0
_WARN_EVERY_S = 60.0


def is_redis_url(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))


def encode(event: str, payload: dict[str, Any]) -> str:
    """The JSON text of one event message (payload data redacted)."""
    message = {"event": event, "at": iso_utc(datetime.now(UTC)), **redact(payload)}
    return json.dumps(message, default=str, separators=(",", ":"))


class RedisEventPublisher:
    """Publishes events to ``channel`` and keeps the last :data:`RECENT_MAX` in ``channel + ":recent"``."""

    def __init__(self, url: str, *, channel: str = CHANNEL) -> None:
        self.channel = channel
        self._client = redis.Redis.from_url(
            url, socket_connect_timeout=_CONNECT_TIMEOUT_S, socket_timeout=_CONNECT_TIMEOUT_S
        )
        self._last_warning = 0.0
        self._lock = threading.Lock()

    def publish(self, event: str, payload: dict[str, Any]) -> None:
        text = encode(event, payload)
        try:
            with self._lock:  # one client, used from the command thread and the watchdog
                pipe = self._client.pipeline(transaction=False)
                pipe.publish(self.channel, text)
                pipe.lpush(self.channel + RECENT_SUFFIX, text)
                pipe.ltrim(self.channel + RECENT_SUFFIX, 0, RECENT_MAX - 1)
                pipe.execute()
        except (redis.RedisError, OSError) as error:
            now = time.monotonic()
            if now - self._last_warning > _WARN_EVERY_S:
                self._last_warning = now
                logger.warning("cannot publish %s events to Redis: %s", event, error)

    def close(self) -> None:
        self._client.close()


def forward(bus: EventBus, publisher: RedisEventPublisher) -> None:
    """Publish every event emitted on ``bus`` through ``publisher`` as well."""
    for name in EVENT_NAMES:

        def handler(payload: dict[str, Any], name: str = name) -> None:
            publisher.publish(name, payload)

        bus.on(name, handler)


def listen(
    url: str,
    *,
    channel: str = CHANNEL,
    recent: int = 0,
    follow: bool = True,
    stop: threading.Event | None = None,
    poll_s: float = 0.5,
) -> Iterator[dict[str, Any]]:
    """Yield event messages: up to ``recent`` of the latest (oldest first), then, with ``follow``, every new
    one until ``stop`` is set. Raises ``redis.ConnectionError`` when Redis is unreachable."""
    client = redis.Redis.from_url(url, socket_connect_timeout=_CONNECT_TIMEOUT_S)
    pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    try:
        if follow:
            pubsub.subscribe(channel)  # before reading the backlog, so nothing falls between the two
        if recent > 0:
            for raw in reversed(client.lrange(channel + RECENT_SUFFIX, 0, recent - 1)):
                yield json.loads(raw)
        while follow and not (stop is not None and stop.is_set()):
            message = pubsub.get_message(timeout=poll_s)
            if message is not None and message.get("type") == "message":
                yield json.loads(message["data"])
    finally:
        pubsub.close()
        client.close()
