"""Run now (optionally with this run's data), pause (optionally until a time), resume, skip, edit, roll
back, delete and create: checked (role, CSRF), then done through the service acting as the signed-in user, so
each is validated, audited under their name and emitted as an event."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request

from scheduler.errors import InvalidField
from scheduler.redaction import public_task
from web.context import acting_service, allowed, console
from web.views import execution_json

ACTIONS = ("run", "pause", "resume", "skip", "update", "delete", "rollback")
# What the console edits (the data is not among them: the pages show it redacted, so a form would write the
# redaction back over the secrets); a task is created with its data as JSON text.
EDIT_FIELDS = ("schedule", "timezone", "queue", "retries", "timeout_ms", "overlap_policy", "misfire_policy")
CREATE_FIELDS = ("name", "command", *EDIT_FIELDS, "data")
WHOLE_NUMBERS = ("retries", "timeout_ms")
MAX_FORM_BYTES = 16 * 1024
# A run's body may carry data up to the service's 64 KiB (urlencoded JSON grows up to threefold): a bigger
# body is 413, data between is the service's clear 400.
MAX_RUN_BYTES = 256 * 1024
MAX_FIELDS = 20


async def read_fields(request: Request, limit: int = MAX_FORM_BYTES) -> dict[str, str]:
    """The action's fields: an urlencoded form (pages) or a JSON object (API); 413 past ``limit`` bytes
    (counted as the body arrives, so a chunked body cannot grow past it), 400/415 for anything else."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, "request body too large")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            parsed = json.loads(bytes(body) or b"{}")
        except ValueError:
            raise HTTPException(400, "the body is not JSON") from None
        if not isinstance(parsed, dict):
            raise HTTPException(400, "the body must be a JSON object")
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in parsed.items()}
    if kind in ("", "application/x-www-form-urlencoded"):
        try:
            pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=MAX_FIELDS)
        except (UnicodeDecodeError, ValueError):
            raise HTTPException(400, "the form is malformed") from None
        return dict(pairs)
    raise HTTPException(415, "send a form (application/x-www-form-urlencoded) or JSON")


def check_csrf(request: Request, user_name: str, fields: Mapping[str, str]) -> None:
    given = request.headers.get("x-csrf-token") or fields.get("csrf_token")
    if not console(request).csrf.valid(user_name, given):
        raise HTTPException(403, "missing or invalid CSRF token: reload the page and try again")


async def perform(request: Request, task_id: int, action: str) -> dict[str, Any]:
    """Do ``action`` on task ``task_id``; return what happened (JSON-able)."""
    if action not in ACTIONS:
        raise HTTPException(404, f"no action {action!r}")
    user = allowed(request, action)
    fields = await read_fields(request, MAX_RUN_BYTES if action == "run" else MAX_FORM_BYTES)
    check_csrf(request, user.name, fields)
    service = acting_service(request, user)
    if action == "update":
        before = await run_in_threadpool(service.get_task, task_id)
        # The form sends every field: pass on only those that differ (re-sending a schedule would restart
        # its interval anchor).
        edits = task_fields(fields, EDIT_FIELDS)
        changes = {key: value for key, value in edits.items() if value != getattr(before, key)}
        after = (
            await run_in_threadpool(lambda: service.update_task(task_id, **changes)) if changes else before
        )
        return {"action": action, "task_id": task_id, "changed": after != before}
    if action == "rollback":
        to = whole_number("to", fields.get("to", "").strip(), "must be a version number")
        before = await run_in_threadpool(service.get_task, task_id)
        after = await run_in_threadpool(lambda: service.rollback_task(task_id, to=to))
        return {"action": action, "task_id": task_id, "to": to, "changed": after != before}
    if action == "run":
        data = run_data(fields.get("data", ""))
        execution = await run_in_threadpool(lambda: service.run_task_now(task_id, data=data))
        return {"action": action, "task_id": task_id, "execution": execution_json(execution)}
    note = fields.get("note", "").strip() or None
    if action == "skip":
        count = whole_number("count", fields.get("count", "").strip() or "1")
        skipped = await run_in_threadpool(lambda: service.skip(task_id, count=count, note=note))
        return {"action": action, "task_id": task_id, "skipped": [execution_json(e) for e in skipped]}
    if action == "pause":
        until = pause_end(fields.get("until", ""))
        changed = await run_in_threadpool(lambda: service.pause(task_id, reason=note, until=until))
    elif action == "resume":
        changed = await run_in_threadpool(service.resume, task_id)
    else:
        task = await run_in_threadpool(service.get_task, task_id)
        if fields.get("confirm", "").strip() != task.name:
            raise InvalidField("confirm", "type the task's name to confirm its deletion")
        changed = [await run_in_threadpool(service.delete_task, task_id)]
    return {"action": action, "task_id": task_id, "changed": bool(changed)}


def run_data(text: str) -> Any:
    """A run's data as given (blank: none); the service refuses all but a JSON object of at most 64 KiB."""
    if not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError as error:
        raise InvalidField("data", f"is not valid JSON ({error})") from None


def pause_end(text: str) -> datetime | None:
    """A timed pause's end, ISO 8601 (a time without an offset, as a browser's datetime-local input sends,
    is UTC); blank: none. The service refuses one that is not in the future."""
    text = text.strip()
    if not text:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidField("until", f"{text[:40]!r} is not an ISO-8601 time") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def whole_number(name: str, text: str, problem: str = "must be a whole number") -> int:
    if not (text.isascii() and text.isdigit() and len(text) < 10):
        raise InvalidField(name, problem)
    return int(text)


def task_fields(fields: Mapping[str, str], allowed: tuple[str, ...]) -> dict[str, Any]:
    """The given, non-empty ``allowed`` fields as the service takes them (whole numbers and the data parsed;
    anything else is left to the service's validation, which names the field)."""
    out: dict[str, Any] = {}
    for name in allowed:
        value = fields.get(name, "").strip()
        if not value:
            continue
        if name in WHOLE_NUMBERS and value.isascii() and value.isdigit() and len(value) < 12:
            out[name] = int(value)
        elif name == "data":
            try:
                out[name] = json.loads(value)
            except ValueError:
                raise InvalidField("data", "must be a JSON object") from None
        else:
            out[name] = value
    return out


async def create(request: Request) -> dict[str, Any]:
    """Create a task from the form or JSON fields (admin); return it, data redacted."""
    user = allowed(request, "create")
    fields = await read_fields(request)
    check_csrf(request, user.name, fields)
    service = acting_service(request, user)
    task = await run_in_threadpool(lambda: service.create_task(**task_fields(fields, CREATE_FIELDS)))
    return {"action": "create", "task": public_task(task)}
