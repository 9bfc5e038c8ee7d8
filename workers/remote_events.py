"""The spec's events across processes: JSON on the deployment's Redis pub/sub channel.

Used when the broker is Redis. The channel is ``{eventsPrefix}:events:{db}`` (:func:`channel_for`):
``systemprompt:events:0`` by default. Pub/sub channels are server-wide, whatever database number a client
selected, so the broker URL's number is part of the name; ``eventsPrefix`` tells apart deployments that share
one database. Each message is one JSON object:
``{"event": "task-event", "at": "<ISO UTC>", ...payload}`` where the payload is what
:class:`scheduler.observability.events.EventBus` handlers receive (for ``task-event``: ``type``
``executed``/``completed``/``failed`` and ``execution``), with secret-looking data keys redacted.

Pub/sub keeps nothing, so every message is also pushed onto the capped list ``<channel>:recent`` (the last
:data:`RECENT_MAX`) in the same round trip; ``systemprompt scheduler:events`` prints those before it follows
the channel. Publishing never blocks or fails the caller: messages are sent by a background thread,
and a Redis error is logged (once a minute) and the messages dropped.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

import redis
from redis.commands.core import Script

from scheduler.observability.events import EVENT_NAMES, EventBus
from scheduler.redaction import redact
from scheduler.settings import Settings

logger = logging.getLogger(__name__)

RECENT_SUFFIX = ":recent"
RECENT_MAX = 1000
_CONNECT_TIMEOUT_S = 2.0
_WARN_EVERY_S = 60.0
QUEUE_MAX = 10_000
BATCH_MAX = 500  # messages per round trip
COALESCE_S = 0.005  # the sender waits this long after a first message, to send what follows with it,
SEND_EVERY_S = 0.05  # and starts a round trip at most this often

# A batch in one command, run atomically: the list first (so a failure there publishes nothing), then one
# PUBLISH per message. KEYS[1]: the list; ARGV: the channel, the last index kept, the messages oldest first.
_SEND_SCRIPT = """
redis.call('LPUSH', KEYS[1], unpack(ARGV, 3))
redis.call('LTRIM', KEYS[1], 0, ARGV[2])
for i = 3, #ARGV do redis.call('PUBLISH', ARGV[1], ARGV[i]) end
"""
_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"))  # json.dumps builds one per call


def is_redis_url(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))


def channel_for(url: str, prefix: str) -> str:
    """The events channel of the deployment whose broker is ``url``: ``{prefix}:events:{db}``, ``db`` the
    database number that redis-py reads from the URL (the path or ``?db=``; 0 when it names none)."""
    database = int(redis.connection.parse_url(url).get("db", 0))  # type: ignore[no-untyped-call]
    return f"{prefix}:events:{database}"


def events_channel(settings: Settings) -> str:
    """The events channel of the deployment that ``settings`` describe (broker URL and ``eventsPrefix``)."""
    return channel_for(settings.effective_broker_url, settings.events_prefix)


_second_text: tuple[int, str] = (-1, "")  # the last second formatted, replaced whole (threads share it)


def now_text() -> str:
    """Now as :func:`scheduler.records.iso_utc` writes it (``2030-06-12T10:35:00.123456Z``, no fraction at a
    whole second); the date and time are formatted once a second."""
    global _second_text
    second, micro = divmod(time.time_ns() // 1000, 1_000_000)
    cached, text = _second_text
    if second != cached:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_text = (second, text)
    return f"{text}.{micro:06d}Z" if micro else f"{text}Z"


def message_of(event: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The message of one event, stamped now, payload data redacted (a copy: later changes do not leak in)."""
    return {"event": event, "at": now_text(), **redact(payload)}


def to_text(message: dict[str, Any]) -> str:
    return _ENCODER.encode(message)


def encode(event: str, payload: dict[str, Any]) -> str:
    """The JSON text of one event message (payload data redacted)."""
    return to_text(message_of(event, payload))


class RedisEventPublisher:
    """Publishes events to ``channel`` (:func:`channel_for`), keeping the last :data:`RECENT_MAX` in
    ``channel + ":recent"``.

    :meth:`publish` only queues the message; a daemon thread encodes and sends it (started on first use,
    again in a forked child), so an execution never waits on Redis nor on JSON. Woken by a first message,
    the thread waits :data:`COALESCE_S`, or until :data:`SEND_EVERY_S` after the start of its previous round
    trip if that is later, then sends what waits, :data:`BATCH_MAX` messages per round trip: a quiet
    process's events go out within a few milliseconds, a busy one's (a worker emits two per execution)
    together every :data:`SEND_EVERY_S`, the thread waking once per round. A round trip is one script call
    (:data:`_SEND_SCRIPT`); if Redis refuses the script, the thread sends plain commands from then on (LPUSH
    of the batch, LTRIM, one PUBLISH per message, pipelined). At most :data:`QUEUE_MAX` messages wait;
    beyond that they are dropped with a warning. :meth:`flush` waits until the queue is empty (also run at
    interpreter exit).
    """

    def __init__(self, url: str, channel: str) -> None:
        self.channel = channel
        self._recent = channel + RECENT_SUFFIX
        self._url = url
        self._client: redis.Redis | None = None
        self._pending: deque[dict[str, Any]] = deque()
        self._wake = threading.Event()  # set when messages wait and the sender may be asleep
        self._sending = False  # True from before the sender takes messages until they are sent or dropped
        self._scripted = True  # False once Redis refused the script
        self._thread: threading.Thread | None = None
        self._pid = -1
        self._lock = threading.Lock()
        self._last_warning = -_WARN_EVERY_S  # the first warning is logged whatever the clock
        atexit.register(self.flush)

    def publish(self, event: str, payload: dict[str, Any]) -> None:
        """Queue the message of ``event`` (:func:`message_of`: ``payload`` redacted, copied, stamped now)."""
        self._enqueue(message_of(event, payload))

    def publish_redacted(self, event: str, payload: dict[str, Any]) -> None:
        """:meth:`publish` for a payload redacted already that nobody changes afterwards, such as what an
        :class:`~scheduler.observability.events.EventBus` hands its handlers: only its top level is copied."""
        self._enqueue({"event": event, "at": now_text(), **payload})

    def flush(self, timeout_s: float = 2.0) -> None:
        """Wait, at most ``timeout_s``, until the messages queued so far are sent (or dropped)."""
        deadline = time.monotonic() + timeout_s
        while self._thread is not None and self._pid == os.getpid() and time.monotonic() < deadline:
            # In this order: the sender marks itself sending before it takes messages off the queue.
            if not self._pending and not self._sending:
                return
            time.sleep(0.01)

    def _enqueue(self, message: dict[str, Any]) -> None:
        if self._pid != os.getpid():
            self._start()
        if len(self._pending) >= QUEUE_MAX:
            self._warn(f"more than {QUEUE_MAX} events wait for Redis; dropping {message['event']}")
            return
        self._pending.append(message)
        if not self._wake.is_set():  # after the append: the sender clears the flag before it takes messages
            self._wake.set()

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pending = deque()  # a forked child does not inherit the sender
            self._wake = threading.Event()
            self._sending = False
            self._client = redis.Redis.from_url(
                self._url, socket_connect_timeout=_CONNECT_TIMEOUT_S, socket_timeout=_CONNECT_TIMEOUT_S
            )
            self._thread = threading.Thread(target=self._send_forever, name="event-publisher", daemon=True)
            self._thread.start()
            self._pid = os.getpid()

    def _send_forever(self) -> None:
        pending, wake, client = self._pending, self._wake, self._client
        assert client is not None
        script = client.register_script(_SEND_SCRIPT)
        sent_at = -SEND_EVERY_S
        while True:
            wake.wait()
            time.sleep(max(COALESCE_S, sent_at + SEND_EVERY_S - time.monotonic()))
            # Cleared before messages are taken, so the next one queued sets it again. Under a steady load
            # that happens while this round is sent: the next wait returns at once and the thread wakes once
            # a round (from its sleep).
            wake.clear()
            sent_at = time.monotonic()
            self._sending = True
            try:
                waiting = len(pending)  # what comes while these are sent waits for the next round
                while waiting > 0:
                    batch = [pending.popleft() for _ in range(min(waiting, BATCH_MAX))]
                    waiting -= len(batch)
                    self._send(client, script, batch)
            finally:
                self._sending = False

    def _send(self, client: redis.Redis, script: Script, batch: list[dict[str, Any]]) -> None:
        try:
            texts = [_ENCODER.encode(message) for message in batch]
            if self._scripted:
                try:
                    script(keys=[self._recent], args=[self.channel, RECENT_MAX - 1, *texts])
                    return
                except redis.ResponseError as error:
                    # Refused (ACL, scripting disabled), or failed at the list: nothing was published.
                    self._scripted = False
                    logger.warning("cannot publish events with a script (%s); sending plain commands", error)
            pipe = client.pipeline(transaction=False)
            pipe.lpush(self._recent, *texts)  # pushed in order: the newest ends up first
            pipe.ltrim(self._recent, 0, RECENT_MAX - 1)
            for text in texts:
                pipe.publish(self.channel, text)
            pipe.execute()
        except Exception as error:  # redis.RedisError, OSError; anything else must not end the thread either
            self._warn(f"cannot publish {len(batch)} events to Redis: {error}")

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning > _WARN_EVERY_S:
            self._last_warning = now
            logger.warning("%s", message)


def forward(bus: EventBus, publisher: RedisEventPublisher) -> None:
    """Publish every event emitted on ``bus`` through ``publisher`` as well (with
    :meth:`~RedisEventPublisher.publish_redacted`: the bus has redacted the payload)."""
    for name in EVENT_NAMES:
        bus.on(name, functools.partial(publisher.publish_redacted, name))


def listen(
    url: str,
    channel: str,
    *,
    recent: int = 0,
    follow: bool = True,
    stop: threading.Event | None = None,
    poll_s: float = 0.5,
) -> Iterator[dict[str, Any]]:
    """Yield event messages: up to ``recent`` of the latest (oldest first), then, with ``follow``, every new
    one until ``stop`` is set. Raises ``redis.ConnectionError`` when Redis is unreachable."""
    client = redis.Redis.from_url(url, socket_connect_timeout=_CONNECT_TIMEOUT_S)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
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
