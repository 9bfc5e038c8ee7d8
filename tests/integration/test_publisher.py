"""The Celery publisher on Redis: the messages ``send_task`` would have pushed, sent in a kombu batch.

What a real worker does with these messages is covered by the worker tests (they all publish through
:class:`~workers.publisher.CeleryPublisher`), what Flower shows by ``test_flower``; here each message is
compared with the one ``send_task`` pushes for the same dispatch, and read back as a worker reads it (kombu's
``message_to_python``, then the body's serializer).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
import redis
from celery.signals import after_task_publish, before_task_publish

from scheduler.errors import BrokerUnavailable
from scheduler.limits import TASK_NAME, hard_limit_grace_s
from scheduler.records import Dispatch
from scheduler.settings import Settings
from tests.support.processes import wait_for
from workers.app import create_app
from workers.publisher import CeleryPublisher, message_options

RANDOM_HEADERS = ("id", "root_id", "origin")
RANDOM_PROPERTIES = ("correlation_id", "delivery_tag")


@pytest.fixture
def queue(redis_url: str) -> Iterator[str]:
    name = f"pub-{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=f"*{name}*"):
        client.delete(key)


def _app(redis_url: str, queue: str, **conf: Any) -> Any:
    app = create_app(Settings(broker_url=redis_url, default_queue=queue))
    app.conf.update(conf)
    return app


def _entries(redis_url: str, queue: str) -> list[dict[str, Any]]:
    """The queue's messages in delivery order (workers pop from the right), as stored."""
    raw = redis.Redis.from_url(redis_url).lrange(queue, 0, -1)
    return [json.loads(entry) for entry in reversed(raw)]


def _received(app: Any, entries: list[dict[str, Any]]) -> list[Any]:
    """``entries`` as a worker receives them: kombu ``Message`` objects (headers, properties, decode())."""
    with app.connection_for_read() as connection:
        channel = connection.default_channel
        return [channel.message_to_python(entry) for entry in entries]


def _stable(message: dict[str, Any]) -> dict[str, Any]:
    """The message without what differs per message by design (random ids, the sender's node name)."""
    headers = {k: v for k, v in message["headers"].items() if k not in RANDOM_HEADERS}
    properties = {k: v for k, v in message["properties"].items() if k not in RANDOM_PROPERTIES}
    return {**message, "headers": headers, "properties": properties}


def test_a_published_message_is_the_one_send_task_would_have_pushed(redis_url: str, queue: str) -> None:
    app = _app(redis_url, queue)
    dispatch = Dispatch(41, queue, "backup:run", "nightly [prod]", timeout_s=60.0)
    CeleryPublisher(app).publish([dispatch])
    with app.producer_or_acquire() as producer:
        app.send_task(
            TASK_NAME, args=[41], producer=producer, ignore_result=True, **message_options(dispatch)
        )
    entries = _entries(redis_url, queue)
    ours, celerys = entries
    assert _stable(ours) == _stable(celerys)
    message = _received(app, entries)[0]
    assert message.headers["id"] == message.headers["root_id"] == message.properties["correlation_id"]
    assert message.headers["task"] == TASK_NAME
    assert message.headers["shadow"] == "backup:run [nightly [prod]]"
    assert message.headers["argsrepr"] == "[41]"
    assert message.headers["timelimit"] == [60.0 + hard_limit_grace_s(60.0), None]
    args, kwargs, _embed = message.decode()
    assert args == [41] and kwargs == {}


def test_a_countdown_becomes_an_eta_as_with_send_task(redis_url: str, queue: str) -> None:
    app = _app(redis_url, queue)
    before = time.time()
    CeleryPublisher(app).publish([Dispatch(7, queue, "c", "t", countdown_s=30.0)])
    (message,) = _received(app, _entries(redis_url, queue))
    eta = datetime.fromisoformat(message.headers["eta"]).timestamp()
    assert before + 29 <= eta <= time.time() + 31
    assert message.headers["timelimit"] == [None, None]


def test_a_batch_keeps_its_order_per_queue_across_queues(redis_url: str, queue: str) -> None:
    other = queue + "-other"
    try:
        app = _app(redis_url, queue)
        dispatches = [Dispatch(i, queue if i % 3 else other, "c", f"t{i}") for i in range(2500)]
        CeleryPublisher(app).publish(dispatches)
        for name in (queue, other):
            messages = _received(app, _entries(redis_url, name))
            ids = [message.decode()[0][0] for message in messages]
            assert ids == [d.execution_id for d in dispatches if d.queue == name]
            tags = {message.delivery_tag for message in messages}
            assert len(tags) == len(ids)  # one message each, built once
            task_ids = {uuid.UUID(message.headers["id"]) for message in messages}
            assert len(task_ids) == len(ids) and {t.version for t in task_ids} == {4}  # as Celery's uuid()
    finally:
        redis.Redis.from_url(redis_url).delete(other)


def test_names_and_time_limits_of_every_shape_reach_the_message_as_send_task_writes_them(
    redis_url: str, queue: str
) -> None:
    app = _app(redis_url, queue)
    names = ['nightly "prod" \\ backup', "ünïcødé ✓", "plain", "{json}: [x]"]
    shapes = [(queue, 60.0), (queue, None), (queue + "-b", 0.25)]
    dispatches = [
        Dispatch(10**12 + len(shapes) * number + index, shape_queue, "cmd:x", name, timeout_s=timeout)
        for number, name in enumerate(names)
        for index, (shape_queue, timeout) in enumerate(shapes)
    ]
    CeleryPublisher(app).publish(dispatches)  # one batch, three shapes, two queues
    with app.producer_or_acquire() as producer:
        for dispatch in dispatches:
            app.send_task(
                TASK_NAME,
                args=[dispatch.execution_id],
                producer=producer,
                ignore_result=True,
                **message_options(dispatch),
            )
    for name in (queue, queue + "-b"):
        mine = [d for d in dispatches if d.queue == name]
        entries = _entries(redis_url, name)
        ours, celerys = entries[: len(mine)], entries[len(mine) :]
        assert [_stable(m) for m in ours] == [_stable(m) for m in celerys]
        for dispatch, message in zip(mine, _received(app, ours), strict=True):
            timeout = dispatch.timeout_s
            assert message.headers["shadow"] == f"cmd:x [{dispatch.task_name}]"
            assert message.headers["timelimit"] == (
                [timeout + hard_limit_grace_s(timeout), None] if timeout else [None, None]
            )
            assert message.decode()[0] == [dispatch.execution_id]


def test_with_sent_events_on_each_message_is_announced_by_a_task_sent_event(
    redis_url: str, queue: str
) -> None:
    app = _app(redis_url, queue, task_send_sent_event=True)
    publisher = CeleryPublisher(app)
    events: list[dict[str, Any]] = []
    with app.connection_for_read() as connection:
        receiver = app.events.Receiver(connection, handlers={"task-sent": events.append})
        listener = threading.Thread(
            target=receiver.capture, kwargs={"limit": None, "timeout": None, "wakeup": False}, daemon=True
        )
        listener.start()
        try:
            # The receiver subscribes once it polls: publish one at a time until an event comes back.
            for number in range(100):
                publisher.publish([Dispatch(1000 + number, queue, "c", "warm-up")])
                if _arrived(events, 0.2):
                    break
            batch = [Dispatch(i, queue, "c", f"t{i}") for i in (1, 2, 3)]
            publisher.publish(batch)
            messages = _received(app, _entries(redis_url, queue))[-len(batch) :]
            task_ids = [message.headers["id"] for message in messages]
            wait_for(lambda: set(task_ids) <= {event["uuid"] for event in events}, 10, "no task-sent events")
        finally:
            receiver.should_stop = True
            listener.join(timeout=10)
    sent = {event["uuid"]: event for event in events}
    for dispatch, task_id in zip(batch, task_ids, strict=True):
        assert sent[task_id]["name"] == TASK_NAME
        assert sent[task_id]["queue"] == queue
        assert sent[task_id]["args"] == f"[{dispatch.execution_id}]"
    assert [message.decode()[0] for message in messages] == [[1], [2], [3]]


def test_publish_signals_with_receivers_fire_for_each_message_as_with_send_task(
    redis_url: str, queue: str
) -> None:
    app = _app(redis_url, queue)
    seen: list[tuple[str, Any]] = []

    def before(sender: str, headers: dict[str, Any], routing_key: str, **_: Any) -> None:
        seen.append(("before", (sender, headers["id"], routing_key)))

    def after(sender: str, headers: dict[str, Any], routing_key: str, **_: Any) -> None:
        seen.append(("after", (sender, headers["id"], routing_key)))

    before_task_publish.connect(before, weak=False)
    after_task_publish.connect(after, weak=False)
    try:
        CeleryPublisher(app).publish([Dispatch(i, queue, "c", f"t{i}") for i in (1, 2)])
    finally:
        before_task_publish.disconnect(before)
        after_task_publish.disconnect(after)
    messages = _received(app, _entries(redis_url, queue))
    ids = [message.headers["id"] for message in messages]
    assert [message.decode()[0] for message in messages] == [[1], [2]]
    assert seen == [(when, (TASK_NAME, task_id, queue)) for task_id in ids for when in ("before", "after")]


def _arrived(events: list[dict[str, Any]], within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while not events and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(events)


def test_an_unreachable_redis_raises_broker_unavailable_quickly(queue: str) -> None:
    app = create_app(Settings(broker_url="redis://127.0.0.1:1/0", default_queue=queue))
    publisher = CeleryPublisher(app)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        publisher.publish([Dispatch(1, queue, "c", "t")])
    assert time.monotonic() - started < 10
