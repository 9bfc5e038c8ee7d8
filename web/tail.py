"""The live tail of an execution's logs: server-sent events.

The server reads the lines after the client's position from the database (the truth on both backends) every
``POLL_S``, or at once when the deployment's events on Redis say the execution started or finished
(:mod:`web.live`), and sends each as an ``event: line``; ``event: status`` when the execution's status
changes, and ``event: end`` once it has finished and every line was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from scheduler.records import FINISHED_STATUSES
from scheduler.service import SchedulerService
from web.live import Wakeups
from web.views import log_json

POLL_S = 0.5
MAX_STREAM_S = 3600.0


def _event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


async def log_events(
    request: Request, service: SchedulerService, wakeups: Wakeups, execution_id: int, position: int
) -> AsyncIterator[str]:
    with wakeups.watch(execution_id) as woken:
        async for chunk in _stream(request, service, woken, execution_id, position):
            yield chunk


async def _stream(
    request: Request, service: SchedulerService, woken: asyncio.Event, execution_id: int, position: int
) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MAX_STREAM_S
    status = None
    yield "retry: 1000\n\n"
    while loop.time() < deadline and not await request.is_disconnected():
        woken.clear()
        execution = await run_in_threadpool(service.get_execution, execution_id)
        lines = await run_in_threadpool(service.logs_after, execution_id, position)
        for line in lines:
            position += 1
            yield _event("line", {"position": position, **log_json(line)})
        if execution.status != status:
            status = execution.status
            yield _event("status", {"status": status, "error": execution.error})
        if not lines and execution.status in FINISHED_STATUSES:
            yield _event("end", {"status": status, "position": position})
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), POLL_S)
