"""The Celery-backed :class:`scheduler.planning.publisher.Publisher`: execution ids onto their queues.

Messages are standard Celery protocol-2 messages for the one task ``scheduler.execute`` (args
``[execution_id]``), so any Celery worker of this app and Flower understand them. Each carries:

- ``shadow`` ``"<command> [<task name>]"``: the name Flower and the worker logs show;
- the task's hard time limit, ``time_limit`` = its timeout plus a grace (the pool process is killed; prefork
  pool only); no soft limit: the worker's watchdog enforces the timeout (see
  :mod:`scheduler.execution.watchdog`);
- ``countdown`` when the dispatch is delayed (an ``eta``).

How a batch goes out, through Celery's and kombu's public API only, the same way on every broker:

1. each message is built once by Celery (``app.amqp.as_task_v2``, the message ``send_task`` builds);
2. one producer of the app's pool: its connection is made (one attempt per try), the batch's queues are
   declared as ``send_task`` declares them (kombu's ``maybe_declare``, once per connection) and, on Redis,
   a ``PING`` goes out on the connection pool the batch then uses, so an unreachable broker fails here,
   before anything was sent (kombu's batch connects inside its flush, where a failure is an unknown
   outcome); these steps are retried as ``PUBLISH_RETRY_POLICY`` says, then raise
   :class:`~scheduler.errors.BrokerUnavailable` (the rows stay ``pending`` for the relay);
3. the messages go out through kombu's ``Producer.publish`` with the arguments Celery's ``send_task_message``
   would pass it (through ``send_task_message`` itself when it has more to do: a ``task-sent`` event when sent
   events are on, publish signals with receivers) inside kombu's ``Producer.batch``: on Redis kombu buffers
   the ``LPUSH`` commands and sends them all in one pipeline when the batch ends (one round trip); a transport
   that cannot batch (the embedded filesystem broker) publishes each message at once. Nothing here is retried:
   once anything may have reached the broker (kombu's ``BatchPublishError``, or a failure after the first
   immediate publish) a second try could put ids on their queue twice, so the publish raises
   :class:`~scheduler.errors.PublishUncertain`; the relay marks the rows ``queued`` and the recovery sweep,
   which asks :meth:`CeleryPublisher.waiting`, republishes only those whose message is not on its queue after
   ``recovery_after``.

:meth:`CeleryPublisher.waiting` reads the queues' Redis lists (``LRANGE``, the Redis channel's own client)
and decodes each entry as a worker does (kombu's ``message_to_python``, then the JSON serializer).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from celery.signals import after_task_publish, before_task_publish, task_sent
from celery.utils.nodenames import anon_nodename
from kombu.exceptions import BatchPublishError, KombuError
from kombu.serialization import loads
from kombu.utils.json import loads as json_loads

from scheduler.errors import BrokerUnavailable, PublishUncertain
from scheduler.limits import TASK_NAME, hard_limit_grace_s
from scheduler.records import Dispatch
from workers.celery_config import PUBLISH_RETRY_POLICY

LRANGE_CHUNK = 5000  # messages read per LRANGE when looking for waiting ones (Redis answers each at once)
# What a message on our queues is decoded from (accept_content in workers.celery_config).
ACCEPT = ["application/json"]


def shadow_name(dispatch: Dispatch) -> str:
    """``"<command> [<task name>]"``, the name shown for the message in Flower and the worker's log."""
    return f"{dispatch.command} [{dispatch.task_name}]"


def message_options(dispatch: Dispatch) -> dict[str, Any]:
    """The ``send_task`` options of one dispatch (queue, shadow name, hard time limit, countdown)."""
    options: dict[str, Any] = {"queue": dispatch.queue, "shadow": shadow_name(dispatch)}
    if dispatch.timeout_s is not None and dispatch.timeout_s > 0:
        options["time_limit"] = dispatch.timeout_s + hard_limit_grace_s(dispatch.timeout_s)
    if dispatch.countdown_s > 0:
        options["countdown"] = dispatch.countdown_s
    return options


def task_ids(count: int) -> list[str]:
    """``count`` random task ids, as Celery makes them (``str(uuid.uuid4())``), from one ``os.urandom`` call:
    ``uuid4`` reads the OS's random source once per id (a system call that lets go of the GIL, which the
    planner's thread then holds for up to a switch interval)."""
    block = os.urandom(16 * count)
    return [str(uuid.UUID(bytes=block[i : i + 16], version=4)) for i in range(0, 16 * count, 16)]


def task_messages(app: Any, dispatches: Sequence[Dispatch]) -> list[Any]:
    """The protocol-2 messages ``send_task`` builds for ``dispatches`` (Celery's ``as_task_v2``: headers,
    properties, body, sent event). The args' repr is given (computing it, Celery's ``saferepr``, is most of
    ``as_task_v2``'s cost) and what every message shares is looked up once (a setting read from ``app.conf``
    costs as much as a third of a message)."""
    build = app.amqp.as_task_v2
    shared = {
        "origin": anon_nodename(),  # what as_task_v2 would compute per message
        "reply_to": app.thread_oid,  # what send_task sets (unused: no result backend)
        "create_sent_event": app.conf.task_send_sent_event,
        "ignore_result": True,
        "kwargsrepr": "{}",
    }
    messages = []
    for dispatch, task_id in zip(dispatches, task_ids(len(dispatches)), strict=True):
        options = message_options(dispatch)
        messages.append(
            build(
                task_id,
                TASK_NAME,
                args=[dispatch.execution_id],
                kwargs={},
                countdown=options.get("countdown"),
                time_limit=options.get("time_limit"),
                shadow=options["shadow"],
                argsrepr=f"[{dispatch.execution_id}]",
                **shared,
            )
        )
    return messages


class CeleryPublisher:
    """Publishes dispatches through ``app`` (a Celery app from :func:`workers.app.create_app`)."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._connection_errors: tuple[type[BaseException], ...] | None = None
        self._redis = False

    def _errors(self) -> tuple[type[BaseException], ...]:
        if self._connection_errors is None:
            with self._app.connection_for_write() as connection:
                transport_errors = tuple(connection.connection_errors) + tuple(connection.channel_errors)
                self._redis = connection.transport.driver_type == "redis"
            self._connection_errors = (KombuError, OSError, *transport_errors)
        return self._connection_errors

    def check(self) -> None:
        """Connect to the broker once; raise :class:`BrokerUnavailable` when it does not answer."""
        errors = self._errors()
        try:
            with self._app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0.25)
        except errors as error:
            raise BrokerUnavailable(_detail(error)) from error

    def publish(self, dispatches: Sequence[Dispatch]) -> None:
        if not dispatches:
            return
        messages = task_messages(self._app, dispatches)  # built once, whatever the retries
        policy = PUBLISH_RETRY_POLICY
        retries = int(policy["max_retries"])
        for attempt in range(retries + 1):
            if attempt:
                wait = policy["interval_start"] + (attempt - 1) * policy["interval_step"]
                time.sleep(min(wait, policy["interval_max"]))
            with self._app.producer_or_acquire() as producer:
                if self._ready(producer, dispatches, last_try=attempt == retries):
                    self._send(producer, dispatches, messages)
                    return

    def _ready(self, producer: Any, dispatches: Sequence[Dispatch], *, last_try: bool) -> bool:
        """Connect, declare the batch's queues and, on Redis, check the connection; False to try again,
        :class:`BrokerUnavailable` on the last try. Nothing was sent yet."""
        errors = self._errors()
        try:
            # One connection attempt (the caller's loop is the retry policy): kombu's own back-off (2 s steps
            # up to the connect timeout) would stall the planner's tick for 6 s per failed publish.
            producer.connection.ensure_connection(max_retries=0)
            for name in dict.fromkeys(d.queue for d in dispatches):
                producer.maybe_declare(self._app.amqp.queues[name])  # as send_task: once per connection
            if self._redis:
                # kombu's batch takes a connection inside its flush and reports any failure there as an
                # unknown outcome: a PING on the pool it takes from (the channel's conn_or_acquire) first.
                with producer.channel.conn_or_acquire() as client:
                    client.ping()
        except errors as error:
            if last_try:
                raise BrokerUnavailable(_detail(error)) from error
            return False
        return True

    def _send(self, producer: Any, dispatches: Sequence[Dispatch], messages: list[Any]) -> None:
        """Send the built messages in one kombu batch (see the module docstring); never retried."""
        errors = self._errors()
        send = self._send_one(producer)
        immediate = not producer.supports_batch_publish  # else nothing leaves before the batch's one flush
        sent = 0
        try:
            # No size limit: the messages are built and in memory already, and one flush is one round trip.
            with producer.batch(max_size=sys.maxsize):
                for dispatch, message in zip(dispatches, messages, strict=True):
                    send(dispatch.queue, message)
                    sent += 1
        except BatchPublishError as error:  # kombu: the pipeline went out, its outcome is unknown
            raise PublishUncertain(f"a batch of {len(dispatches)}: {_detail(error)}") from error
        except errors as error:
            if immediate and sent:  # those are on the broker: sending the batch again would double them
                raise PublishUncertain(f"{sent} of {len(dispatches)} sent: {_detail(error)}") from error
            raise BrokerUnavailable(_detail(error)) from error

    def _send_one(self, producer: Any) -> Callable[[str, Any], None]:
        """How one built message goes out on ``producer``: ``Producer.publish`` with the arguments Celery's
        ``send_task_message`` passes it for a queue on a direct exchange; through ``send_task_message``
        itself when it would do more (a ``task-sent`` event, publish signals someone listens to, another
        exchange type). The direct call saves Celery's per-message routing and option merging."""
        app = self._app
        queues = app.amqp.queues
        conf = app.conf  # read once: a setting read from app.conf costs a good part of a message
        serializer, compression = conf.task_serializer, conf.task_compression
        default_delivery_mode = conf.task_default_delivery_mode
        listened = any(signal.receivers for signal in (before_task_publish, after_task_publish, task_sent))
        send_task_message = app.amqp.send_task_message
        publish = producer.publish

        def send(queue_name: str, message: Any) -> None:
            queue = queues[queue_name]
            exchange = queue.exchange
            if listened or message.sent_event is not None or (exchange.type or "direct") != "direct":
                send_task_message(producer, TASK_NAME, message, queue=queue_name, retry=False, declare=[])
                return
            publish(
                message.body,
                exchange="",  # the anonymous exchange, routed by the queue's name (as Celery does)
                routing_key=queue_name,
                serializer=serializer,
                compression=compression,
                retry=False,
                delivery_mode=exchange.delivery_mode or default_delivery_mode,
                declare=[],
                headers=message.headers,
                **message.properties,
            )

        return send

    def waiting(self, dispatches: Sequence[Dispatch]) -> set[int] | None:
        """The ids of ``dispatches`` whose message still lies on its queue's Redis list (no worker took it:
        none runs, or all are busy); None for another broker. Reads each queue once, in ``LRANGE`` chunks.

        A message a worker has taken but not acknowledged (kombu's ``unacked`` hash) does not count: that
        worker may have died with it, which is what the recovery sweep is for.
        """
        errors = self._errors()  # learns whether the broker is Redis
        if not self._redis or not dispatches:
            return None
        wanted: dict[str, set[int]] = {}
        for dispatch in dispatches:
            wanted.setdefault(dispatch.queue, set()).add(dispatch.execution_id)
        found: set[int] = set()
        try:
            with self._app.producer_or_acquire() as producer:
                channel = producer.channel
                # conn_or_acquire: the channel's client, with the transport's key prefix if one is set.
                with channel.conn_or_acquire() as client:
                    for queue, ids in wanted.items():
                        found |= ids & set(_ids_on_list(client, channel, queue))
        except errors as error:
            raise BrokerUnavailable(_detail(error)) from error
        return found


def _ids_on_list(client: Any, channel: Any, queue: str) -> Iterator[int]:
    """The execution ids of the messages on ``queue``'s list, read in chunks of :data:`LRANGE_CHUNK`.

    Workers pop from the right end and publishers push on the left, so an index only ever moves right while
    the list is read: a message on the list throughout the scan is seen (some perhaps twice), never skipped.
    Priority 0 (Celery's default, ours): kombu's Redis key of the queue is its name.
    """
    start = 0
    while chunk := client.lrange(queue, start, start + LRANGE_CHUNK - 1):
        for raw in chunk:
            execution_id = execution_id_of(channel, raw)
            if execution_id is not None:
                yield execution_id
        start += len(chunk)


def execution_id_of(channel: Any, raw: bytes | str) -> int | None:
    """The execution id of one message as kombu's Redis transport stores it, decoded as a worker decodes it
    (kombu's ``message_to_python``, then the body's serializer); None for another task's message or one that
    does not decode."""
    try:
        message = channel.message_to_python(json_loads(raw))  # type: ignore[no-untyped-call]
        if message.headers.get("task") != TASK_NAME:
            return None
        args, _kwargs, _embed = loads(  # type: ignore[no-untyped-call]
            message.body, message.content_type, message.content_encoding, accept=ACCEPT
        )
        return int(args[0])
    except (KombuError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None


def _detail(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
