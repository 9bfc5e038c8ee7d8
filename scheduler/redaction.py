"""Hide secret-looking values before data leaves the process in audit rows, events or CLI output.

The command itself always receives the data intact; redaction is for what people and logs see.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from scheduler.records import Task

REDACTED = "***"
# "apikey" and "api_key" are covered by "key"; "auth" also covers "authorization".
SECRET_MARKERS = ("password", "passwd", "token", "secret", "key", "credential", "auth")
_PLAIN = frozenset({str, int, float, bool, type(None)})  # values redact returns as they are


def is_secret_key(key: object) -> bool:
    """True when ``key`` contains (any case) password, passwd, token, secret, key, credential or auth."""
    return isinstance(key, str) and _secret_name(key)


@functools.lru_cache(maxsize=4096)
def _secret_name(key: str) -> bool:
    # Cached: the same few keys come by in every event payload and audit row.
    lowered = key.lower()
    return any(marker in lowered for marker in SECRET_MARKERS)


def redact(data: Any) -> Any:
    """A copy of ``data`` with the values of secret-looking keys replaced by ``"***"``, at any depth.

    Mappings are copied to dicts and lists/tuples to lists; the input is never modified. A secret key's value
    is replaced whole, whatever its type.
    """
    kind = type(data)
    if kind in _PLAIN:  # exact types first: isinstance against the Mapping ABC is slow for every leaf
        return data
    if kind is dict or isinstance(data, Mapping):
        out: dict[Any, Any] = {}
        for key, value in data.items():
            if isinstance(key, str) and _secret_name(key):
                out[key] = REDACTED
            elif type(value) in _PLAIN:
                out[key] = value
            else:
                out[key] = redact(value)
        return out
    if isinstance(data, list | tuple):
        return [item if type(item) in _PLAIN else redact(item) for item in data]
    return data


def public_task(task: Task) -> dict[str, Any]:
    """The task's JSON with its data redacted: what audit rows and events carry."""
    out = task.to_json()
    out["data"] = redact(task.data)
    return out
