"""The console's Starlette application: routes, static files, error pages and JSON errors."""

from __future__ import annotations

import contextlib
import getpass
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import Scope

from scheduler.errors import ExecutionNotFound, InvalidInput, SchedulerError, TaskNotFound
from scheduler.service import SchedulerService
from web import api, pages
from web.auth import Authenticator, User, parse_users
from web.context import HERE, Console, console
from web.describe import short_time
from web.live import EventSource, Wakeups
from web.metrics import ConsoleMetrics, ResponseMiddleware
from web.queries import BadQuery
from web.security import CsrfTokens

TITLES = {400: "Bad request", 401: "Sign in", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
          413: "Too large", 415: "Unsupported body", 500: "Server error", 503: "Unavailable"}  # fmt: skip


def _error(request: Request, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    if request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", "text/html"):
        return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)
    response = pages.render(
        request,
        "error.html",
        {"status": status, "title": TITLES.get(status, "Error"), "message": message},
        status,
    )
    response.headers.update(headers or {})
    return response


async def http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    return _error(request, error.status_code, str(error.detail), dict(error.headers or {}))


async def not_found(request: Request, error: Exception) -> Response:
    return _error(request, 404, str(error))


async def bad_input(request: Request, error: Exception) -> Response:
    return _error(request, 400, str(error))


async def scheduler_error(request: Request, error: Exception) -> Response:
    return _error(request, 503, f"{type(error).__name__}: {error}")


def server_error(scope: Scope) -> Response:
    """The answer to an unexpected error (its traceback goes to the log only): the error page or JSON."""
    message = "an unexpected error; the console logged it"
    try:
        return _error(Request(scope), 500, message)
    except Exception:  # the error page itself failed
        return JSONResponse({"error": message, "status": 500}, status_code=500)


async def health(request: Request) -> Response:
    """200 when the database answers (a count of tasks), 503 otherwise; no authentication."""
    service = console(request).service
    try:
        tasks = await run_in_threadpool(service.count_tasks)
    except SchedulerError as error:
        return JSONResponse({"status": "unavailable", "error": str(error)}, status_code=503)
    return JSONResponse({"status": "ok", "tasks": tasks})


def metrics(request: Request) -> Response:
    exposition = request.app.state.metrics.exposition()
    return PlainTextResponse(exposition, media_type="text/plain; version=0.0.4")


def create_app(
    service: SchedulerService, *, require_auth: bool = False, events: EventSource | None = None
) -> Starlette:
    """The console on ``service``. Users come from ``web_users``; with none and ``require_auth`` False,
    everyone is a local admin (``scheduler:web`` allows that on a loopback address only). ``events``: the
    deployment's events channel, followed while the application runs to wake live tails (:mod:`web.live`)."""
    settings = service.settings
    accounts = parse_users(settings.web_users)
    trusted = (settings.web_trusted_header or "").strip() or None
    anonymous = None
    if not accounts and not require_auth:
        anonymous = User(_local_name(), "admin")
    auth = Authenticator(accounts, trusted_header=trusted, anonymous=anonymous)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["when"] = short_time
    metrics_state = ConsoleMetrics()
    wakeups = Wakeups(on_event=metrics_state.events.inc)
    state = Console(service, auth, CsrfTokens(settings.web_secret), templates, wakeups)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if events is not None:
            wakeups.follow(events)
        try:
            yield
        finally:
            wakeups.close()

    app = Starlette(
        routes=[
            Route("/healthz", health),
            Route("/metrics", metrics),
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
            *api.ROUTES,
            *pages.ROUTES,
        ],
        middleware=[Middleware(ResponseMiddleware, metrics=metrics_state, server_error=server_error)],
        lifespan=lifespan,
        exception_handlers={
            HTTPException: http_error,
            TaskNotFound: not_found,
            ExecutionNotFound: not_found,
            BadQuery: bad_input,
            InvalidInput: bad_input,
            SchedulerError: scheduler_error,
        },
    )
    app.state.console = state
    app.state.metrics = metrics_state
    return app


def _local_name() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (a container without a passwd entry)
        return "local"
