"""What lies on a Redis queue: the execution ids of the ``scheduler.execute`` messages on its list."""

from __future__ import annotations

import base64
import json
from collections import Counter

import redis


def message_execution_id(raw: bytes) -> int:
    """The execution id a message carries, decoded as a worker does: the base64 body's first argument."""
    body = json.loads(base64.b64decode(json.loads(raw)["body"]))
    return int(body[0][0])


def ids_on_queue(client: redis.Redis, queue: str) -> Counter[int]:
    """How many messages of each execution id wait on ``queue``."""
    return Counter(message_execution_id(raw) for raw in client.lrange(queue, 0, -1))
