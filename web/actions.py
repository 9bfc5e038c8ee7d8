"""Run now, pause, resume and delete: checked (role, CSRF), then done through the service acting as the
signed-in user, so each is validated, audited under their name and emitted as an event."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request

from scheduler.errors import InvalidField
from web.context import acting_service, allowed, console
from web.views import execution_json

ACTIONS = ("run", "pause", "resume", "delete")
MAX_FORM_BYTES = 16 * 1024


async def read_fields(request: Request) -> dict[str, str]:
    """The action's fields: a form (pages) or a JSON object (API); 413/400 for oversized or malformed."""
    if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
        raise HTTPException(413, "request body too large")
    if request.headers.get("content-type", "").startswith("application/json"):
        body = await request.body()
        try:
            parsed = json.loads(body or b"{}")
        except ValueError:
            raise HTTPException(400, "the body is not JSON") from None
        if not isinstance(parsed, dict):
            raise HTTPException(400, "the body must be a JSON object")
        return {str(k): v if isinstance(v, str) else str(v) for k, v in parsed.items()}
    async with request.form(max_files=0, max_fields=20) as form:
        return {key: value for key, value in form.items() if isinstance(value, str)}


def check_csrf(request: Request, user_name: str, fields: Mapping[str, str]) -> None:
    given = request.headers.get("x-csrf-token") or fields.get("csrf_token")
    if not console(request).csrf.valid(user_name, given):
        raise HTTPException(403, "missing or invalid CSRF token: reload the page and try again")


async def perform(request: Request, task_id: int, action: str) -> dict[str, Any]:
    """Do ``action`` on task ``task_id``; return what happened (JSON-able)."""
    if action not in ACTIONS:
        raise HTTPException(404, f"no action {action!r}")
    user = allowed(request, action)
    fields = await read_fields(request)
    check_csrf(request, user.name, fields)
    service = acting_service(request, user)
    if action == "run":
        execution = await run_in_threadpool(service.run_task_now, task_id)
        return {"action": action, "task_id": task_id, "execution": execution_json(execution)}
    if action == "pause":
        changed = await run_in_threadpool(lambda: service.pause(task_id, reason=fields.get("note") or None))
    elif action == "resume":
        changed = await run_in_threadpool(service.resume, task_id)
    else:
        task = await run_in_threadpool(service.get_task, task_id)
        if fields.get("confirm", "").strip() != task.name:
            raise InvalidField("confirm", "type the task's name to confirm its deletion")
        changed = [await run_in_threadpool(service.delete_task, task_id)]
    return {"action": action, "task_id": task_id, "changed": bool(changed)}
