"""The spec's events across processes: JSON on the Redis pub/sub channel ``systemprompt:events``.

Used when the broker is Redis. Each message is one JSON object:
``{"event": "task-event", "at": "<ISO UTC>", ...payload}`` where the payload is what
:class:`scheduler.events.EventBus` handlers receive (for ``task-event``: ``type``
``executed``/``completed``/``failed`` and ``execution``), with secret-looking data keys redacted.

Pub/sub keeps nothing, so every message is also pushed onto the capped list ``systemprompt:events:recent``
(the last :data:`RECENT_MAX`) in the same round trip; ``systemprompt scheduler:events`` prints those before it
follows the channel. Publishing never blocks or fails the caller: messages are sent by a background thread,
and a Redis error is logged (once a minute) and the messages dropped.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
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
QUEUE_MAX = 10_000
COALESCE_S = 0.005  # the sender waits this long after a first message, to send what follows with it


def is_redis_url(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))


def message_of(event: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The message of one event, stamped now, payload data redacted (a copy: later changes do not leak in)."""
    return {"event": event, "at": iso_utc(datetime.now(UTC)), **redact(payload)}


def to_text(message: dict[str, Any]) -> str:
    return json.dumps(message, default=str, separators=(",", ":"))


def encode(event: str, payload: dict[str, Any]) -> str:
    """The JSON text of one event message (payload data redacted)."""
    return to_text(message_of(event, payload))


class RedisEventPublisher:
    """Publishes events to ``channel`` and keeps the last :data:`RECENT_MAX` in ``channel + ":recent"``.

    :meth:`publish` only queues the message; a daemon thread encodes and sends it (started on first use,
    again in a forked child), so an execution never waits on Redis nor on JSON. The thread waits
    :data:`COALESCE_S` after the first message so that a burst goes out in one round trip (a worker emits
    two events per execution: one wake-up and one round trip each would cost the execution as much as its
    claim). At most :data:`QUEUE_MAX` messages wait; beyond that they are dropped with a warning.
    :meth:`flush` waits until the queue is empty (also run at interpreter exit).
    """

    def __init__(self, url: str, *, channel: str = CHANNEL) -> None:
        self.channel = channel
        self._url = url
        self._client: redis.Redis | None = None
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=QUEUE_MAX)
        self._thread: threading.Thread | None = None
        self._pid = -1
        self._lock = threading.Lock()
        self._last_warning = 0.0
        atexit.register(self.flush)

    def publish(self, event: str, payload: dict[str, Any]) -> None:
        self._ensure_thread()
        try:
            self._queue.put_nowait(message_of(event, payload))
        except queue.Full:
            self._warn(f"more than {QUEUE_MAX} events wait for Redis; dropping {event}")

    def flush(self, timeout_s: float = 2.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self._thread is not None and self._pid == os.getpid() and time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return
            time.sleep(0.01)

    def _ensure_thread(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._queue = queue.Queue(maxsize=QUEUE_MAX)  # a forked child does not inherit the sender
            self._client = redis.Redis.from_url(
                self._url, socket_connect_timeout=_CONNECT_TIMEOUT_S, socket_timeout=_CONNECT_TIMEOUT_S
            )
            self._thread = threading.Thread(target=self._send_forever, name="event-publisher", daemon=True)
            self._thread.start()
            self._pid = os.getpid()

    def _send_forever(self) -> None:
        events, client = self._queue, self._client
        assert client is not None
        while True:
            batch = [events.get()]
            time.sleep(COALESCE_S)
            while len(batch) < 100:
                try:
                    batch.append(events.get_nowait())
                except queue.Empty:
                    break
            try:
                pipe = client.pipeline(transaction=False)
                for text in map(to_text, batch):
                    pipe.publish(self.channel, text)
                    pipe.lpush(self.channel + RECENT_SUFFIX, text)
                pipe.ltrim(self.channel + RECENT_SUFFIX, 0, RECENT_MAX - 1)
                pipe.execute()
            except (redis.RedisError, OSError) as error:
                self._warn(f"cannot publish {len(batch)} events to Redis: {error}")
            finally:
                for _ in batch:
                    events.task_done()

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning > _WARN_EVERY_S:
            self._last_warning = now
            logger.warning("%s", message)


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
