"""kombu's side of a worker losing Redis (workers.redis_transport): what Celery's consumer does with a
connection that lost its broker (``collect()``, then ``close()``) must not fail with anything but a connection
error.

The connection is set up as a worker's is when the loss hurts: a message delivered and not acknowledged (an
execution in flight), a ``BRPOP`` waiting for the next one (a free pool process), and a broadcast consumer on
a second channel (Celery's remote control). Then the private Redis is killed.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue
from worker_support import PrivateRedis, private_redis

from workers.celery_config import REDIS_TRANSPORT

__all__ = ["private_redis"]

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]

TASKS = Queue("loss-tasks", Exchange("loss-tasks"), "loss-tasks")
BROADCAST = Queue("", Exchange("loss-broadcast", "fanout"), auto_delete=True, exclusive=True)


@pytest.fixture
def connection_in_flight(private_redis: PrivateRedis, request: pytest.FixtureRequest) -> Iterator[Connection]:
    connection = Connection(private_redis.url, transport=request.param, transport_options={})
    delivered: list[Any] = []
    tasks = Consumer(connection.default_channel, [TASKS], callbacks=[lambda _, m: delivered.append(m)])
    tasks.qos(prefetch_count=2)  # room for one more: the next BRPOP goes out once the first is delivered
    tasks.consume()
    Consumer(connection.channel(), [BROADCAST], callbacks=[lambda *_: None]).consume()
    Producer(connection.channel()).publish({"n": 1}, exchange=TASKS.exchange, routing_key=TASKS.routing_key)
    while not delivered:
        connection.drain_events(timeout=2)
    with contextlib.suppress(socket.timeout):
        connection.drain_events(timeout=0.2)  # sends the next BRPOP, which waits
    private_redis.stop()
    yield connection


@pytest.mark.parametrize(
    "connection_in_flight",
    [
        REDIS_TRANSPORT,
        # kombu 5.7.0's own transport: once this passes, kombu is fixed and workers.redis_transport can go.
        pytest.param(None, marks=pytest.mark.xfail(raises=AttributeError, strict=True, reason="kombu")),
    ],
    indirect=True,
    ids=["ours", "kombu"],
)
def test_collecting_then_closing_a_connection_that_lost_redis_mid_work_raises_no_attribute_error(
    connection_in_flight: Connection,
) -> None:
    task_channel = connection_in_flight.default_channel
    connection_in_flight.collect(socket_timeout=5)  # what Celery's consumer does on a connection loss ...
    connection_in_flight.close()  # ... and then this (celery/worker/consumer/consumer.py)
    assert task_channel.closed
