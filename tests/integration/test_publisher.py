"""The Celery publisher's Redis fast path: pipelined ``LPUSH`` of messages Celery and kombu would have sent.

What a real worker does with these messages is covered by the worker tests (they all publish through
:class:`~workers.publisher.CeleryPublisher`); here the envelope itself is compared with ``send_task``'s.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from scheduler.errors import BrokerUnavailable
from scheduler.limits import TASK_NAME
from scheduler.records import Dispatch
from scheduler.settings import Settings
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
    """The queue's messages in delivery order (workers pop from the right)."""
    raw = redis.Redis.from_url(redis_url).lrange(queue, 0, -1)
    return [json.loads(entry) for entry in reversed(raw)]


def _stable(message: dict[str, Any]) -> dict[str, Any]:
    """The message without what differs per message by design (random ids, the sender's node name)."""
    headers = {k: v for k, v in message["headers"].items() if k not in RANDOM_HEADERS}
    properties = {k: v for k, v in message["properties"].items() if k not in RANDOM_PROPERTIES}
    return {**message, "headers": headers, "properties": properties}


def test_the_fast_path_pushes_the_message_send_task_would_have_pushed(redis_url: str, queue: str) -> None:
    app = _app(redis_url, queue)
    publisher = CeleryPublisher(app)
    assert publisher.batched  # Redis broker, sent events off (workers.celery_config)
    dispatch = Dispatch(41, queue, "backup:run", "nightly [prod]", timeout_s=60.0)
    publisher.publish([dispatch])
    with app.producer_or_acquire() as producer:
        app.send_task(
            TASK_NAME, args=[41], producer=producer, ignore_result=True, **message_options(dispatch)
        )
    ours, celerys = _entries(redis_url, queue)
    assert _stable(ours) == _stable(celerys)
    assert ours["headers"]["id"] == ours["headers"]["root_id"] == ours["properties"]["correlation_id"]
    assert ours["headers"]["shadow"] == "backup:run [nightly [prod]]"
    assert ours["headers"]["argsrepr"] == "[41]"
    body = json.loads(base64.b64decode(ours["body"]))
    assert body[0] == [41] and body[1] == {}


def test_a_countdown_becomes_an_eta_as_with_send_task(redis_url: str, queue: str) -> None:
    app = _app(redis_url, queue)
    before = time.time()
    CeleryPublisher(app).publish([Dispatch(7, queue, "c", "t", countdown_s=30.0)])
    (message,) = _entries(redis_url, queue)
    from datetime import datetime

    eta = datetime.fromisoformat(message["headers"]["eta"]).timestamp()
    assert before + 29 <= eta <= time.time() + 31
    assert message["headers"]["timelimit"] == [None, None]


def test_a_batch_keeps_its_order_per_queue_across_queues(redis_url: str, queue: str) -> None:
    other = queue + "-other"
    try:
        app = _app(redis_url, queue)
        dispatches = [Dispatch(i, queue if i % 3 else other, "c", f"t{i}") for i in range(2500)]
        CeleryPublisher(app).publish(dispatches)
        for name in (queue, other):
            ids = [json.loads(base64.b64decode(m["body"]))[0][0] for m in _entries(redis_url, name)]
            assert ids == [d.execution_id for d in dispatches if d.queue == name]
            tags = {m["properties"]["delivery_tag"] for m in _entries(redis_url, name)}
            assert len(tags) == len(ids)  # one message each, built once
    finally:
        redis.Redis.from_url(redis_url).delete(other)


def test_with_sent_events_on_every_message_goes_through_send_task(redis_url: str, queue: str) -> None:
    app = _app(redis_url, queue, task_send_sent_event=True)
    publisher = CeleryPublisher(app)
    assert not publisher.batched
    publisher.publish([Dispatch(1, queue, "c", "t"), Dispatch(2, queue, "c", "t")])
    assert len(_entries(redis_url, queue)) == 2


def test_an_unreachable_redis_raises_broker_unavailable_quickly(queue: str) -> None:
    app = create_app(Settings(broker_url="redis://127.0.0.1:1/0", default_queue=queue))
    publisher = CeleryPublisher(app)
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        publisher.publish([Dispatch(1, queue, "c", "t")])
    assert time.monotonic() - started < 10


def test_a_message_template_fills_in_exactly_what_build_message_builds(
    redis_url: str, queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers import publisher as module

    counter = [0]

    def fixed_ids() -> str:  # the same ids for both builds: task id, then delivery tag
        counter[0] += 1
        return f"aaaaaaaa-0000-4000-8000-{counter[0]:012d}"

    monkeypatch.setattr(module, "uuid4_text", fixed_ids)
    app = _app(redis_url, queue)
    names = ['nightly "prod" \\ backup', "ünïcødé ✓", "plain", "{json}: [x]"]
    shapes = [(queue, 60.0), (queue, None), (queue + "-b", 0.25)]
    with app.producer_or_acquire() as producer:
        channel = producer.channel
        for shape_queue, timeout in shapes:
            sample = Dispatch(1, shape_queue, "c", "sample", timeout_s=timeout)
            template = module.MessageTemplate(app.amqp, channel, sample, "gen1@host", "reply")
            for number, name in enumerate(names):
                dispatch = Dispatch(10**12 + number, shape_queue, "cmd:x", name, timeout_s=timeout)
                counter[0] = 0
                filled = template.fill(dispatch)
                counter[0] = 0
                built = module.build_message(
                    app.amqp, channel, dispatch, origin="gen1@host", reply_to="reply"
                )
                assert filled == built
