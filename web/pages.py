"""The HTML pages: the tasks list, a task, an execution; and the actions' form posts (303 to a page)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from scheduler.records import TASK_STATUSES
from scheduler.storage.console import SORT_KEYS
from web.actions import create, perform
from web.context import allowed, console
from web.queries import parse_tasks_query
from web.views import execution_view, task_view, tasks_view


def render(request: Request, template: str, context: dict[str, Any], status_code: int = 200) -> Response:
    state = console(request)
    user = state.auth.identify({key.lower(): value for key, value in request.headers.items()})
    base = {
        "user": user,
        "csrf_token": state.csrf.token(user.name) if user else "",
        "anonymous": state.auth.anonymous is not None,
    }
    return state.templates.TemplateResponse(request, template, {**base, **context}, status_code=status_code)


def tasks_page(request: Request) -> Response:
    allowed(request, "read")
    query = parse_tasks_query(request.query_params)
    service = console(request).service
    view = tasks_view(service, query)
    context = {
        "query": query,
        "statuses": TASK_STATUSES,
        "sort_keys": SORT_KEYS,
        "queues": service.task_queues(),
        "sources": service.task_sources(),
    }
    return render(request, "tasks.html", {**view, **context})


def task_page(request: Request) -> Response:
    allowed(request, "read")
    view = task_view(console(request).service, request.path_params["task_id"])
    return render(request, "task.html", view)


def execution_page(request: Request) -> Response:
    allowed(request, "read")
    view = execution_view(console(request).service, request.path_params["execution_id"])
    return render(request, "execution.html", view)


async def create_form(request: Request) -> Response:
    done = await create(request)
    return RedirectResponse(f"/tasks/{done['task']['id']}", status_code=303)


async def action_form(request: Request) -> Response:
    task_id = request.path_params["task_id"]
    done = await perform(request, task_id, request.path_params["action"])
    if done["action"] == "run":
        return RedirectResponse(f"/executions/{done['execution']['id']}", status_code=303)
    if done["action"] == "delete":
        return RedirectResponse("/", status_code=303)
    return RedirectResponse(f"/tasks/{task_id}", status_code=303)


ROUTES = [
    Route("/", tasks_page),
    Route("/tasks", create_form, methods=["POST"]),
    Route("/tasks/{task_id:int}", task_page),
    Route("/executions/{execution_id:int}", execution_page),
    Route("/tasks/{task_id:int}/{action:str}", action_form, methods=["POST"]),
]
