"""``CeleryPublisher.waiting``: which executions still have a message on their Redis list (the recovery sweep
republishes only the others)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from scheduler.records import Dispatch
from scheduler.settings import Settings
from workers.app import create_app
from workers.publisher import CeleryPublisher

pytestmark = pytest.mark.redis


@pytest.fixture
def queues(redis_url: str) -> Iterator[tuple[str, str]]:
    names = (f"wait-{uuid.uuid4().hex[:10]}", f"wait-{uuid.uuid4().hex[:10]}")
    yield names
    redis.Redis.from_url(redis_url).delete(*names)


@pytest.mark.parametrize("sent_events", [False, True], ids=["sent-events-off", "sent-events-on"])
def test_waiting_names_the_ids_whose_message_is_on_its_queue(
    redis_url: str, queues: tuple[str, str], sent_events: bool
) -> None:
    first, second = queues
    app = create_app(Settings(broker_url=redis_url, default_queue=first))
    app.conf.task_send_sent_event = sent_events  # sent events on: a task-sent PUBLISH joins each LPUSH
    publisher = CeleryPublisher(app)
    published = [Dispatch(i, first if i % 2 else second, "test:echo", f"t{i}") for i in range(1, 9)]
    published.append(Dispatch(9, first, "test:echo", "t9", countdown_s=30))  # an ETA message
    publisher.publish(published)
    taken = redis.Redis.from_url(redis_url).rpop(first)  # the oldest of the first queue, as a worker would
    assert taken is not None
    never_sent = Dispatch(99, first, "test:echo", "t99")

    waiting = publisher.waiting([*published, never_sent])

    assert waiting == {2, 3, 4, 5, 6, 7, 8, 9}  # 1 was taken, 99 never sent


def test_messages_of_other_tasks_and_entries_that_are_not_messages_do_not_count(
    redis_url: str, queues: tuple[str, str]
) -> None:
    first, _ = queues
    app = create_app(Settings(broker_url=redis_url, default_queue=first))
    publisher = CeleryPublisher(app)
    publisher.publish([Dispatch(1, first, "test:echo", "t1")])
    app.send_task("other.task", args=[2], queue=first, ignore_result=True)  # a foreign task, same shape
    client = redis.Redis.from_url(redis_url)
    client.lpush(first, b"not json", b'{"body": "eA==", "headers": {}}', b"[3]")

    waiting = publisher.waiting([Dispatch(i, first, "test:echo", f"t{i}") for i in (1, 2, 3)])

    assert waiting == {1}


def test_a_broker_other_than_redis_cannot_tell(tmp_path: Path) -> None:
    publisher = CeleryPublisher(create_app(Settings(home=tmp_path / "home")))
    assert publisher.waiting([Dispatch(1, "default", "test:echo", "t1")]) is None
