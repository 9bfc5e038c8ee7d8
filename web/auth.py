"""Who is asking and what they may do: roles, password hashes, HTTP basic auth and the trusted-header mode.

Users come from the ``web_users`` setting, ``name:role:hash`` separated by commas. A hash is
``scrypt$n$r$p$salt$digest`` (hex), made by :func:`hash_password` (``scheduler:web --hash-password``); an
empty hash allows no password login (a user known only through the trusted header).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Literal

from scheduler.errors import ConfigError

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
# What each action needs (the PostgreSQL roles' split: viewers read; operators run, pause, resume and skip;
# admins also create, edit, roll back and delete).
NEEDS: dict[str, Role] = {"read": "viewer", "run": "operator", "pause": "operator", "resume": "operator",
                          "skip": "operator",
                          "create": "admin", "update": "admin", "delete": "admin",
                          "rollback": "admin"}  # fmt: skip
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MAX_PASSWORD_BYTES = 1024
MAX_NAME = 100  # audited as web:<name>


@dataclass(frozen=True)
class User:
    name: str
    role: Role

    def may(self, action: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(NEEDS[action])


@dataclass(frozen=True)
class Account:
    user: User
    password_hash: str


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A scrypt hash of ``password`` (stdlib hashlib), with a random salt."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored`` (constant-time comparison); False for any malformed hash."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt" or len(password.encode()) > MAX_PASSWORD_BYTES:
        return False
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, expected = bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
        digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(expected))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(digest, expected)


def parse_users(value: str | None) -> dict[str, Account]:
    """The ``web_users`` setting as name -> account; :class:`ConfigError` (exit 2) when malformed."""
    accounts: dict[str, Account] = {}
    if value is None or not value.strip():
        return accounts
    for entry in value.split(","):
        name, _, rest = entry.strip().partition(":")
        role, colon, password_hash = rest.partition(":")
        plain_name = name.isprintable() and not any(ch.isspace() for ch in name) and len(name) <= MAX_NAME
        hashed = not password_hash or password_hash.startswith("scrypt$")
        if not (name and plain_name and colon and role in ROLES and hashed):
            raise ConfigError(
                "invalid setting web_users (SCHEDULER_WEB_USERS): expected name:role:hash (a name of up to "
                f"{MAX_NAME} printable characters without spaces; role one of viewer, operator, admin; a "
                "hash from 'systemprompt scheduler:web --hash-password')"
            )
        accounts[name] = Account(User(name, role), password_hash)
    return accounts


VERIFIED_CACHE_SIZE = 256


@dataclass(frozen=True)
class Authenticator:
    """Answers "who is this request" from its headers; None means "ask for credentials"."""

    accounts: dict[str, Account]
    trusted_header: str | None = None
    anonymous: User | None = None  # no authentication configured (loopback only): everyone is this user
    # sha256 of a basic-auth token already verified -> (its user, the hash it matched): scrypt is slow on
    # purpose, and a browser sends the same header with every request.
    _verified: dict[bytes, tuple[User, str]] = field(default_factory=dict)

    @property
    def required(self) -> bool:
        return self.anonymous is None

    def identify(self, headers: dict[str, str]) -> User | None:
        if self.anonymous is not None:
            return self.anonymous
        if self.trusted_header is not None:
            name = headers.get(self.trusted_header.lower(), "").strip()
            account = self.accounts.get(name)
            return account.user if account is not None else None
        return self._basic(headers.get("authorization", ""))

    def _basic(self, header: str) -> User | None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic" or len(token) > 4 * MAX_PASSWORD_BYTES:
            return None
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        name, colon, password = decoded.partition(":")
        account = self.accounts.get(name)
        if not colon or account is None or not account.password_hash:
            return None
        key = hashlib.sha256(token.encode()).digest()
        cached = self._verified.get(key)
        if cached is not None and cached[1] == account.password_hash:
            return cached[0]
        if not verify_password(password, account.password_hash):
            return None
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[key] = (account.user, account.password_hash)
        return account.user
