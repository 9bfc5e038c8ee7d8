"""The console's per-application state, and the request helpers every endpoint uses: who is asking, may
they, and the service acting as them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.templating import Jinja2Templates

from scheduler.service import SchedulerService
from web.auth import Authenticator, User
from web.live import Wakeups
from web.security import CsrfTokens

HERE = Path(__file__).parent
WEB_SOURCE = "web"
REALM = 'Basic realm="systemprompt scheduler", charset="UTF-8"'


@dataclass
class Console:
    service: SchedulerService
    auth: Authenticator
    csrf: CsrfTokens
    templates: Jinja2Templates
    wakeups: Wakeups


def console(request: Request) -> Console:
    found: Console = request.app.state.console
    return found


def current_user(request: Request) -> User:
    """The signed-in user; 401 with a basic-auth challenge (or a plain 401 behind a proxy) otherwise."""
    state = console(request)
    user = state.auth.identify({key.lower(): value for key, value in request.headers.items()})
    if user is None:
        headers = {"WWW-Authenticate": REALM} if state.auth.trusted_header is None else None
        raise HTTPException(401, "sign in to use the console", headers=headers)
    return user


def allowed(request: Request, action: str) -> User:
    """The user, if their role may do ``action``; 403 otherwise."""
    user = current_user(request)
    if not user.may(action):
        raise HTTPException(403, f"your role ({user.role}) may not {action} tasks")
    return user


def acting_service(request: Request, user: User) -> SchedulerService:
    """The service acting as ``user`` (their name in the audit trail); the anonymous local user acts as the
    process's own actor. Tasks it creates are owned by the source ``web`` (reserved: no tasks file can
    claim or prune them)."""
    service = console(request).service
    actor = service.actor if console(request).auth.anonymous is not None else f"web:{user.name}"
    return service.as_actor(actor, source=WEB_SOURCE)
