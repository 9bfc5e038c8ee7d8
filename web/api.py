"""The JSON API under ``/api`` (docs/web.md lists its fields). The same roles as the pages; actions need the
``X-CSRF-Token`` header (``GET /api/session`` returns it)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from web.actions import create, perform
from web.context import allowed, console
from web.queries import parse_int, parse_tasks_query
from web.tail import log_events
from web.views import (
    HISTORY_ROWS,
    execution_json,
    execution_view,
    log_json,
    task_view,
    tasks_view,
    versions_view,
)


def session(request: Request) -> Response:
    user = allowed(request, "read")
    token = console(request).csrf.token(user.name)
    return JSONResponse({"user": user.name, "role": user.role, "csrf_token": token})


def tasks(request: Request) -> Response:
    allowed(request, "read")
    query = parse_tasks_query(request.query_params)
    return JSONResponse(tasks_view(console(request).service, query))


def task(request: Request) -> Response:
    allowed(request, "read")
    slots = parse_int(request.query_params, "slots", 30, 1, 500)
    return JSONResponse(task_view(console(request).service, request.path_params["task_id"], slots=slots))


def history(request: Request) -> Response:
    allowed(request, "read")
    limit = parse_int(request.query_params, "limit", HISTORY_ROWS, 1, 1000)
    service = console(request).service
    task_id = service.get_task(request.path_params["task_id"]).id
    return JSONResponse([execution_json(e) for e in service.history(task=task_id, limit=limit)])


def versions(request: Request) -> Response:
    allowed(request, "read")
    found = console(request).service.task_versions(request.path_params["task_id"])
    return JSONResponse(versions_view(found))


def execution(request: Request) -> Response:
    allowed(request, "read")
    return JSONResponse(execution_view(console(request).service, request.path_params["execution_id"]))


def logs(request: Request) -> Response:
    allowed(request, "read")
    after = parse_int(request.query_params, "after", 0, 0, 10**6)
    lines = console(request).service.logs_after(request.path_params["execution_id"], after)
    return JSONResponse({"after": after, "lines": [log_json(line) for line in lines]})


def logs_stream(request: Request) -> Response:
    allowed(request, "read")
    after = parse_int(request.query_params, "after", 0, 0, 10**6)
    service = console(request).service
    execution_id = request.path_params["execution_id"]
    service.get_execution(execution_id)  # 404 before the stream starts
    events = log_events(request, service, console(request).wakeups, execution_id, after)
    return StreamingResponse(events, media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})


async def create_task(request: Request) -> Response:
    return JSONResponse(await create(request), status_code=201)


async def action(request: Request) -> Response:
    done = await perform(request, request.path_params["task_id"], request.path_params["action"])
    return JSONResponse(done)


ROUTES = [
    Route("/api/session", session),
    Route("/api/tasks", tasks),
    Route("/api/tasks", create_task, methods=["POST"]),
    Route("/api/tasks/{task_id:int}", task),
    Route("/api/tasks/{task_id:int}/history", history),
    Route("/api/tasks/{task_id:int}/versions", versions),
    Route("/api/tasks/{task_id:int}/{action:str}", action, methods=["POST"]),
    Route("/api/executions/{execution_id:int}", execution),
    Route("/api/executions/{execution_id:int}/logs", logs),
    Route("/api/executions/{execution_id:int}/logs/stream", logs_stream),
]
