"""What lies on a Redis queue: the execution ids of the ``scheduler.execute`` messages on its list, and
whether anything of it is left on the broker."""

from __future__ import annotations

import base64
import json
import time
from collections import Counter

import redis


def message_execution_id(raw: bytes) -> int:
    """The execution id a message carries, decoded as a worker does: the base64 body's first argument."""
    body = json.loads(base64.b64decode(json.loads(raw)["body"]))
    return int(body[0][0])


def ids_on_queue(client: redis.Redis, queue: str) -> Counter[int]:
    """How many messages of each execution id wait on ``queue``."""
    return Counter(message_execution_id(raw) for raw in client.lrange(queue, 0, -1))


def queue_idle(broker_url: str, queue: str) -> bool:
    """Nothing of ``queue`` on the broker: no message waiting on its lists, none reserved by a worker
    (running, prefetched or held for a retry's countdown: kombu keeps those in its ``unacked`` hash until
    they are acknowledged; each entry names its queue)."""
    client = redis.Redis.from_url(broker_url)
    try:
        for key in client.scan_iter(match=f"{queue}*", count=1000):
            if client.type(key) == b"list" and client.llen(key):
                return False
        return not any(queue.encode() in entry for entry in client.hvals("unacked"))
    finally:
        client.close()


def queue_settles(broker_url: str, queue: str, timeout_s: float) -> bool:
    """Whether :func:`queue_idle` holds twice in a row, 0.1 s apart, within ``timeout_s`` (a message moving
    from the list to a worker's ``unacked`` hash is on neither for a moment); False if the broker is down."""
    deadline = time.monotonic() + timeout_s
    was_idle = False
    try:
        while time.monotonic() < deadline:
            idle = queue_idle(broker_url, queue)
            if idle and was_idle:
                return True
            was_idle = idle
            time.sleep(0.1)
    except redis.RedisError:
        return False
    return False
