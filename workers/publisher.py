"""The Celery-backed :class:`scheduler.planning.publisher.Publisher`: execution ids onto their queues.

Messages are standard Celery protocol messages for the one task ``scheduler.execute`` (args
``[execution_id]``), so any Celery worker of this app and Flower understand them. Each carries:

- ``shadow`` ``"<command> [<task name>]"``: the name Flower and the worker logs show;
- the task's hard time limit, ``time_limit`` = its timeout plus a grace (the pool process is killed; prefork
  pool only); no soft limit: the worker's watchdog enforces the timeout (see
  :mod:`scheduler.execution.watchdog`);
- ``countdown`` when the dispatch is delayed.

How a batch goes out:

- **Redis broker** (kombu's ``redis`` transport, the production path): each message is built once, by Celery
  (``app.amqp.as_task_v2``, the protocol-2 message ``send_task`` builds) and wrapped the way kombu's Redis
  channel wraps it (``prepare_message``, ``encode_body``: base64 body, delivery tag, delivery info of the
  anonymous exchange with the queue as routing key, as Celery routes a direct queue). The messages of each
  queue then go out as multi-value ``LPUSH`` commands in one ``MULTI``/``EXEC`` pipeline: one round trip per
  batch, all or nothing, same order as one ``LPUSH`` per message. The queues are declared through kombu
  (``maybe_declare``) as ``send_task`` declares them. Any Celery worker and Flower read these messages as
  their own. Not done here: the ``before/after_task_publish`` signals and the ``task-sent`` event; sent events
  are off in ``workers.celery_config`` (Flower learns of a task from the worker's ``task-received``), and
  with them on this publisher uses the path below so they are still sent.
- **anything else** (the embedded filesystem broker, sent events on): ``send_task`` per message over one
  producer (one connection).

Connection failures before anything was sent are retried briefly (``PUBLISH_RETRY_POLICY``), then raise
:class:`~scheduler.errors.BrokerUnavailable`: nothing is on the broker, the rows stay ``pending`` for the
relay. A failure once the batch was sent (the ``EXEC`` reply lost: a dropped connection, a socket timeout;
or a ``send_task`` loop cut short) is never retried -- Redis may have run it, and a second push would put
every id on the queue twice -- and raises :class:`~scheduler.errors.PublishUncertain`: the relay marks the
rows ``queued`` and the recovery sweep, which asks :meth:`CeleryPublisher.waiting`, republishes only those
whose message is not on the queue after ``recovery_after``.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from celery.utils.nodenames import anon_nodename
from kombu.exceptions import KombuError

from scheduler.errors import BrokerUnavailable, PublishUncertain
from scheduler.limits import TASK_NAME, hard_limit_grace_s
from scheduler.records import Dispatch
from workers.celery_config import PUBLISH_RETRY_POLICY


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


LPUSH_CHUNK = 1000  # messages per LPUSH command (a batch of several thousand stays a few commands)
LRANGE_CHUNK = 5000  # messages read per LRANGE when looking for waiting ones (Redis answers each at once)
# The execution id in a message as it lies on a Redis list: the header argsrepr "[<id>]" of scheduler.execute,
# as this module and send_task write it (kombu's JSON envelope, json.dumps' default separators).
_WAITING_ID = re.compile(rb'"argsrepr": "\[(\d+)\]"')
JSON_CONTENT = ("application/json", "utf-8")


class CeleryPublisher:
    """Publishes dispatches through ``app`` (a Celery app from :func:`workers.app.create_app`)."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._connection_errors: tuple[type[BaseException], ...] | None = None
        self._transport_errors: tuple[type[BaseException], ...] = ()
        self._redis = False

    def _errors(self) -> tuple[type[BaseException], ...]:
        if self._connection_errors is None:
            with self._app.connection_for_write() as connection:
                transport_errors = tuple(connection.connection_errors) + tuple(connection.channel_errors)
                self._redis = connection.transport.driver_type == "redis"
            self._transport_errors = transport_errors
            self._connection_errors = (KombuError, OSError, *transport_errors)
        return self._connection_errors

    @property
    def batched(self) -> bool:
        """Whether batches go out as pipelined ``LPUSH`` commands (Redis broker, sent events off)."""
        self._errors()
        conf = self._app.conf
        return self._redis and not conf.task_send_sent_event and conf.task_serializer == "json"

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
        errors = self._errors()
        sent = 0
        try:
            if self.batched:
                self._publish_pipelined(dispatches)
                return
            with self._app.producer_or_acquire() as producer:
                for dispatch in dispatches:
                    self._app.send_task(
                        TASK_NAME,
                        args=[dispatch.execution_id],
                        producer=producer,
                        retry=True,
                        retry_policy=PUBLISH_RETRY_POLICY,
                        ignore_result=True,
                        **message_options(dispatch),
                    )
                    sent += 1
        except errors as error:
            if sent:  # the first messages are on the broker: sending the batch again would double them
                raise PublishUncertain(f"{sent} of {len(dispatches)} sent: {_detail(error)}") from error
            raise BrokerUnavailable(_detail(error)) from error

    def waiting(self, dispatches: Sequence[Dispatch]) -> set[int] | None:
        """The ids of ``dispatches`` whose message still lies on its queue's Redis list (no worker took it:
        none runs, or all are busy); None for another broker. Reads each queue once, in ``LRANGE`` chunks.

        A message a worker has taken but not acknowledged (kombu's ``unacked`` hash) does not count: that
        worker may have died with it, which is what the recovery sweep is for.
        """
        self._errors()  # learns whether the broker is Redis
        if not self._redis or not dispatches:
            return None
        wanted: dict[str, set[int]] = {}
        for dispatch in dispatches:
            wanted.setdefault(dispatch.queue, set()).add(dispatch.execution_id)
        found: set[int] = set()
        try:
            # conn_or_acquire: the channel's client, with the transport's key prefix if one is set.
            with self._app.producer_or_acquire() as producer, producer.channel.conn_or_acquire() as client:
                for queue, ids in wanted.items():
                    found |= ids & set(_ids_on_list(client, queue))
        except self._errors() as error:
            raise BrokerUnavailable(_detail(error)) from error
        return found

    # ------------------------------------------------------------------------------- the Redis fast path

    def _publish_pipelined(self, dispatches: Sequence[Dispatch]) -> None:
        """Build every message once, then push them all in one ``MULTI``/``EXEC`` round trip (see the module
        docstring); connection errors are retried as ``PUBLISH_RETRY_POLICY`` says."""
        amqp = self._app.amqp
        origin = anon_nodename()  # what as_task_v2 would compute per message
        reply_to = self._app.thread_oid  # what send_task sets (unused: no result backend)
        by_queue: dict[str, list[str]] | None = None
        policy = PUBLISH_RETRY_POLICY
        retryable: tuple[type[BaseException], ...] = (*self._transport_errors, OSError)
        attempt = 0
        sent = False
        while True:
            try:
                with self._app.producer_or_acquire() as producer:
                    # One connection attempt (this loop is the retry policy): kombu's own back-off (2 s steps
                    # up to the connect timeout) would stall the planner's tick for 6 s per failed publish.
                    producer.connection.ensure_connection(max_retries=0, reraise_as_library_errors=False)
                    channel = producer.channel
                    for name in dict.fromkeys(d.queue for d in dispatches):
                        # Declares exchange, queue and binding as send_task does (kombu caches it).
                        producer.maybe_declare(amqp.queues[name])
                    if by_queue is None:  # built once, whatever the retries
                        built: dict[str, list[str]] = {}
                        shapes: dict[tuple[str, float | None], MessageTemplate] = {}
                        for dispatch in dispatches:
                            if dispatch.countdown_s > 0:  # an ETA: built whole (rare: retries go via Celery)
                                payload = build_message(
                                    amqp, channel, dispatch, origin=origin, reply_to=reply_to
                                )
                            else:
                                shape = (dispatch.queue, dispatch.timeout_s)
                                template = shapes.get(shape)
                                if template is None:
                                    template = MessageTemplate(amqp, channel, dispatch, origin, reply_to)
                                    shapes[shape] = template
                                payload = template.fill(dispatch)
                            built.setdefault(dispatch.queue, []).append(payload)
                        by_queue = built
                    # conn_or_acquire: the channel's client, with the transport's key prefix if one is set.
                    with channel.conn_or_acquire() as client, client.pipeline(transaction=True) as pipe:
                        for queue, payloads in by_queue.items():
                            # Priority 0 (Celery's default): kombu's Redis key of the queue is its name.
                            for first in range(0, len(payloads), LPUSH_CHUNK):
                                pipe.lpush(queue, *payloads[first : first + LPUSH_CHUNK])
                        # The pipeline connects lazily, inside execute(): a PING first leaves it a live
                        # pooled connection, so an unreachable Redis fails here, certainly before sending.
                        client.ping()
                        sent = True  # from here on Redis may run the batch, whatever the client hears
                        pipe.execute()
                return
            except retryable as error:
                if sent:
                    raise PublishUncertain(_detail(error)) from error
                if attempt >= int(policy["max_retries"]):
                    raise
                wait = policy["interval_start"] + attempt * policy["interval_step"]
                time.sleep(min(wait, policy["interval_max"]))
                attempt += 1


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def uuid4_text() -> str:
    """``str(uuid.uuid4())`` at a third of its cost: 16 random bytes with the version and variant bits."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def build_message(
    amqp: Any, channel: Any, dispatch: Dispatch, *, origin: str | None = None, reply_to: str | None = None
) -> str:
    """The Redis list entry of one dispatch: exactly what ``send_task`` + kombu's Redis channel push.

    ``argsrepr``/``kwargsrepr`` are given (what Celery's ``saferepr`` makes of ``[id]`` and ``{}``) because
    computing them is most of ``as_task_v2``'s cost; the JSON is the standard library's, which is what
    kombu's ``json`` serializer produces for these plain values.
    """
    task_id = uuid4_text()
    options = message_options(dispatch)
    headers, properties, body, _ = amqp.as_task_v2(
        task_id,
        TASK_NAME,
        args=[dispatch.execution_id],
        kwargs={},
        countdown=options.get("countdown"),
        time_limit=options.get("time_limit"),
        shadow=options["shadow"],
        ignore_result=True,
        argsrepr=f"[{dispatch.execution_id}]",
        kwargsrepr="{}",
        origin=origin,
        reply_to=reply_to,
    )
    properties["delivery_mode"] = 2  # persistent: the default exchange's mode, as kombu's Producer sets it
    content_type, content_encoding = JSON_CONTENT
    message = channel.prepare_message(
        json.dumps(body), 0, content_type, content_encoding, headers, properties
    )
    message["body"], body_encoding = channel.encode_body(message["body"], channel.body_encoding)
    message["properties"].update(body_encoding=body_encoding, delivery_tag=uuid4_text())
    message["properties"]["delivery_info"].update(exchange="", routing_key=dispatch.queue)
    return json.dumps(message)


_MARK = f"@@{uuid.uuid4().hex}:"  # cannot occur in a message: a random token, JSON-safe as it is


class MessageTemplate:
    """:func:`build_message` for dispatches of one shape (queue, time limit, no countdown), at a fifth of
    its cost: the message is built once by :func:`build_message` (Celery's ``as_task_v2`` and kombu's
    envelope), serialized with markers where dispatches differ -- the task id (``id``, ``root_id``,
    ``correlation_id``), ``shadow``, ``argsrepr``, the base64 body holding the execution id, the delivery
    tag -- and :meth:`fill` joins the pieces with each dispatch's JSON-escaped values. The text equals what
    :func:`build_message` returns for the same ids (tested).
    """

    def __init__(
        self, amqp: Any, channel: Any, sample: Dispatch, origin: str | None, reply_to: str | None
    ) -> None:
        message = json.loads(build_message(amqp, channel, sample, origin=origin, reply_to=reply_to))
        headers, properties = message["headers"], message["properties"]
        for field in ("id", "shadow", "argsrepr"):
            headers[field] = f"{_MARK}{field}@@"
        headers["root_id"] = properties["correlation_id"] = f"{_MARK}id@@"
        properties["delivery_tag"] = f"{_MARK}tag@@"
        message["body"] = f"{_MARK}body@@"
        pieces = json.dumps(message).split(_MARK)
        self._head = pieces[0]
        self._pieces = [tuple(piece.split("@@", 1)) for piece in pieces[1:]]
        body = json.dumps([[0], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
        self._body_head, self._body_tail = body.split("0", 1)
        self._encode_body = channel.encode_body
        self._body_encoding = channel.body_encoding

    def fill(self, dispatch: Dispatch) -> str:
        task_id = uuid4_text()
        body = f"{self._body_head}{dispatch.execution_id}{self._body_tail}"
        values = {
            "id": task_id,
            "shadow": json.dumps(shadow_name(dispatch))[1:-1],
            "argsrepr": f"[{dispatch.execution_id}]",
            "tag": uuid4_text(),
            "body": self._encode_body(body, self._body_encoding)[0],
        }
        out = [self._head]
        for field, rest in self._pieces:
            out.append(values[field])
            out.append(rest)
        return "".join(out)


def _ids_on_list(client: Any, queue: str) -> Iterator[int]:
    """The execution ids of the messages on ``queue``'s list, read in chunks of :data:`LRANGE_CHUNK`.

    Workers pop from the right end and publishers push on the left, so an index only ever moves right while
    the list is read: a message on the list throughout the scan is seen (some perhaps twice), never skipped.
    """
    start = 0
    while chunk := client.lrange(queue, start, start + LRANGE_CHUNK - 1):
        for message in chunk:
            raw = message if isinstance(message, bytes) else str(message).encode()
            if match := _WAITING_ID.search(raw):
                yield int(match.group(1))
        start += len(chunk)


def _detail(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
