"""CSRF tokens and the headers every response carries.

A browser sends basic-auth credentials (or the proxy's cookie) with any request to the console, including
one a hostile page makes it send; so every state-changing request must carry a token that only our pages
know: an HMAC of the user's name under the console's key (``web_secret``, else a random key per process).
Forms send it as the ``csrf_token`` field, API clients as the ``X-CSRF-Token`` header (``GET /api/session``
returns it).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SECURE_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class CsrfTokens:
    def __init__(self, secret: str | None) -> None:
        self._key = secret.encode() if secret else secrets.token_bytes(32)

    def token(self, user: str) -> str:
        return hmac.new(self._key, b"csrf:" + user.encode(), hashlib.sha256).hexdigest()

    def valid(self, user: str, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.token(user), given or "")
