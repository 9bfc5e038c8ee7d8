"""A publish whose reply is lost: Redis ran the batch, the planner never heard back (a socket timeout).

The planner used to send the pipeline again and then leave the rows ``pending`` for the next tick, so ids went
to Redis twice. Now the publisher never sends a batch again once it may have been sent
(:class:`~scheduler.errors.PublishUncertain`), the relay marks the rows ``queued``, and the recovery sweep
leaves them alone as long as their message waits on the queue. A relay in front of a private ``redis-server``
drops Redis's answers to the batch's ``LPUSH`` commands (kombu's ``Producer.batch`` pipeline); the
publisher's socket timeout ends the wait.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from sqlalchemy import select, update
from worker_support import PrivateRedis, private_redis

from scheduler.commands.loading import load_registry
from scheduler.planning.planner import Planner
from scheduler.service import SchedulerService
from scheduler.settings import Settings
from scheduler.storage.clock import db_now
from scheduler.storage.db import make_engine
from scheduler.storage.tables import executions, tasks
from tests.support.redis_queue import ids_on_queue
from tests.support.reply_dropper import ReplyDropper
from workers.app import create_app
from workers.publisher import CeleryPublisher

__all__ = ["private_redis"]

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

TASKS = 50
SOCKET_TIMEOUT_S = 0.3


@pytest.fixture
def dropper(private_redis: PrivateRedis) -> Iterator[ReplyDropper]:
    relay = ReplyDropper(private_redis.port)
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


@pytest.mark.timeout(60)
def test_a_batch_whose_reply_is_lost_is_on_redis_once_and_queued(
    pg_url: str, private_redis: PrivateRedis, dropper: ReplyDropper
) -> None:
    queue = f"uncertain-{uuid.uuid4().hex[:10]}"
    settings = Settings(
        database_url=pg_url,
        broker_url=dropper.url,
        default_queue=queue,
        max_concurrent_tasks=1000,
        recovery_after=1000,
        history_retention_days=30,
    )
    app = create_app(settings)
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options,
        "socket_timeout": SOCKET_TIMEOUT_S,
    }
    publisher = CeleryPublisher(app)
    engine = make_engine(pg_url)
    service = SchedulerService(engine, settings, commands=load_registry(settings), actor="test")
    service.create_task(name="first", command="test:echo", schedule="now")
    ids = [service.create_task(name=f"t{i}", command="test:echo", schedule="1h").id for i in range(TASKS)]
    planner = Planner(engine, settings, publisher)
    assert planner.tick().dispatched == 1  # leader; the broker's channel open and the queue declared
    with engine.begin() as connection:
        due = db_now(connection) - timedelta(seconds=1)
        connection.execute(update(tasks).where(tasks.c.id.in_(ids)).values(next_run_at=due, anchor_at=due))

    dropper.arm()
    report = planner.tick()
    time.sleep(1.2)  # past recovery_after: the next tick's sweep looks at the unclaimed rows
    later = planner.tick()

    client = redis.Redis(port=private_redis.port)
    on_queue = ids_on_queue(client, queue)
    with engine.connect() as connection:
        query = select(executions.c.id, executions.c.status, executions.c.enqueued_at)
        rows = connection.execute(query).all()
    engine.dispose()
    assert report.created == TASKS and len(rows) == TASKS + 1
    copies = Counter(on_queue[row.id] for row in rows)  # how many ids are on the queue how often
    assert copies == {1: TASKS + 1}, copies  # each id once
    assert {row.status for row in rows} == {"queued"} and all(row.enqueued_at for row in rows)
    assert report.broker_error is None and report.uncertain == TASKS  # counts as published, and counted
    assert later.dispatched == 0  # their messages wait on the queue: nothing to republish
