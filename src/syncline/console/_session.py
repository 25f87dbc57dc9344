"""Console sign-in: a signed session cookie naming a key or a user, re-checked on every request.

The cookie holds who signed in (``key`` + key id, or ``user`` + username) and a CSRF token,
signed with itsdangerous and limited in age. Every request reloads the principal from the
store, so revoking a key or disabling a user ends their console sessions at once. Forms carry
the CSRF token in a hidden field; the cookie is ``HttpOnly`` and ``SameSite=Strict``.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import Engine, select

from syncline.api.auth import Principal, Role, api_keys, console_users

SESSION_COOKIE = "syncline_session"
LOGIN_CSRF_COOKIE = "syncline_login_csrf"


@dataclass(frozen=True)
class Session:
    """A signed-in console user."""

    principal: Principal
    csrf: str

    def can(self, role: Role) -> bool:
        """Whether the signed-in principal holds ``role`` (or a higher one)."""
        return self.principal.role.includes(role)


class SessionSigner:
    """Signs and reads session cookies."""

    def __init__(self, secret: str | None, max_age_seconds: float) -> None:
        # Without a configured secret, a random one: sessions end when the process restarts.
        self._serializer = URLSafeTimedSerializer(secret or secrets.token_urlsafe(32), salt="syncline-console")
        self.max_age = int(max_age_seconds)

    def issue(self, kind: str, ident: str) -> tuple[str, str]:
        """Return ``(cookie value, csrf token)`` for a new session."""
        csrf = secrets.token_urlsafe(24)
        return self._serializer.dumps({"k": kind, "i": ident, "c": csrf}), csrf

    def read(self, value: str) -> dict[str, Any] | None:
        try:
            data = self._serializer.loads(value, max_age=self.max_age)
        except BadSignature:
            return None
        return data if isinstance(data, dict) else None


def _principal(engine: Engine, kind: str, ident: str) -> Principal | None:
    with engine.connect() as conn:
        if kind == "key":
            row = conn.execute(select(api_keys).where(api_keys.c.key_id == ident)).first()
            if row is None or row.revoked_at is not None:
                return None
            return Principal(row.key_id, row.name, Role(row.role))
        if kind == "user":
            user = conn.execute(select(console_users).where(console_users.c.username == ident)).first()
            if user is None or user.disabled:
                return None
            return Principal(f"user:{user.username}", user.username, Role(user.role))
    return None


def current_session(request: Request, signer: SessionSigner, engine: Engine) -> Session | None:
    """The request's session, or None if there is none, it expired, or its principal is gone."""
    value = request.cookies.get(SESSION_COOKIE)
    if not value:
        return None
    data = signer.read(value)
    if data is None:
        return None
    principal = _principal(engine, str(data.get("k")), str(data.get("i")))
    if principal is None:
        return None
    return Session(principal, str(data.get("c")))


def csrf_ok(expected: str, given: str | None) -> bool:
    """Constant-time comparison of the CSRF token."""
    return bool(given) and hmac.compare_digest(expected, given or "")
