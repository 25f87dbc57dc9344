"""API keys, console users and roles: who may call which endpoint.

A key looks like ``slk_<key id>_<secret>``. Only ``sha256(key)`` is stored; the key itself is
shown once, when created. Three roles, each including the ones below it:

* ``viewer`` reads;
* ``operator`` also retries, edits, resolves and completes tasks;
* ``admin`` also manages connections, configuration and keys.

Endpoints declare what they need with ``Depends(require_role(Role.OPERATOR))``; the dependency
returns the :class:`Principal` or answers 401 (no or unknown key) or 403 (role too low) as
problem+json, and 429 with ``Retry-After`` when the key exceeds its rate limit.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Boolean, Column, Engine, Float, Integer, String, Table, select, update
from starlette.exceptions import HTTPException

from syncline.store.schema import metadata

__all__ = [
    "ApiProblem", "Principal", "RateLimiter", "Role", "api_keys", "authenticate_key", "authenticate_password",
    "console_users", "create_key", "create_user", "list_keys", "require_role", "revoke_key",
]

KEY_PREFIX = "slk"


class Role(StrEnum):
    """What a principal may do; ``viewer < operator < admin`` and a higher role includes the lower."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """Position in the hierarchy (viewer 0, operator 1, admin 2)."""
        return _RANK[self]

    def includes(self, required: Role) -> bool:
        """Whether this role may do what ``required`` may do."""
        return self.rank >= required.rank

    # str ordering would put "admin" first; order by privilege instead.
    def __lt__(self, other: str) -> bool:
        return self.rank < _rank(other)

    def __le__(self, other: str) -> bool:
        return self.rank <= _rank(other)

    def __gt__(self, other: str) -> bool:
        return self.rank > _rank(other)

    def __ge__(self, other: str) -> bool:
        return self.rank >= _rank(other)


def _rank(value: str) -> int:
    try:
        return Role(value).rank
    except ValueError:
        raise TypeError(f"cannot compare a role with {value!r}") from None


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key, a console user, or the local CLI."""

    key_id: str
    name: str
    role: Role


api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False),
    # Requests per minute; NULL means the configured default.
    Column("rate_per_minute", Integer),
    Column("created_at", Float, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("revoked_at", Float),
)

console_users = Table(
    "console_users",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("role", String(16), nullable=False),
    # scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>
    Column("password_hash", String(255), nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
)


class ApiProblem(HTTPException):
    """An HTTP error rendered as RFC 9457 problem+json with a stable ``code``."""

    def __init__(self, status: int, title: str, detail: str, code: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.title = title
        self.code = code


# --- keys -------------------------------------------------------------------------------------


def _hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(engine: Engine, name: str, role: Role, *, created_by: str = "cli",
               rate_per_minute: int | None = None) -> tuple[str, str]:
    """Create an API key; return ``(key_id, key)``. The key is not stored and cannot be shown again."""
    key_id = secrets.token_hex(6)
    key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    with engine.begin() as conn:
        conn.execute(api_keys.insert().values(
            key_id=key_id, name=name, role=str(Role(role)), key_hash=_hash_key(key), rate_per_minute=rate_per_minute,
            created_at=time.time(), created_by=created_by, revoked_at=None,
        ))
    return key_id, key


def revoke_key(engine: Engine, key_id: str) -> bool:
    """Revoke a key; return False if no active key has that id."""
    with engine.begin() as conn:
        result = conn.execute(
            update(api_keys).where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=time.time())
        )
    return bool(result.rowcount)


def list_keys(engine: Engine) -> list[dict[str, Any]]:
    """Return every key's metadata (never its hash)."""
    columns = [c for c in api_keys.c if c.name != "key_hash"]
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(select(*columns).order_by(api_keys.c.created_at))]


def authenticate_key(engine: Engine, key: str) -> tuple[Principal, int | None] | None:
    """Return the key's principal and rate limit, or None if the key is unknown, malformed or revoked."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX:
        return None
    with engine.connect() as conn:
        row = conn.execute(select(api_keys).where(api_keys.c.key_id == parts[1])).first()
    if row is None or row.revoked_at is not None:
        return None
    if not hmac.compare_digest(row.key_hash, _hash_key(key)):
        return None
    return Principal(row.key_id, row.name, Role(row.role)), row.rate_per_minute


# --- console users ----------------------------------------------------------------------------

_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024, dklen=32)


def hash_password(password: str) -> str:
    """Hash a password with scrypt and a random salt."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a :func:`hash_password` result."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        candidate = _scrypt(password, bytes.fromhex(salt), int(n), int(r), int(p))
    except ValueError:
        return False
    return hmac.compare_digest(candidate.hex(), digest)


def create_user(engine: Engine, username: str, password: str, role: Role) -> None:
    """Create or replace a console user with a hashed password."""
    if len(password) < 12:
        raise ValueError("console passwords must be at least 12 characters")
    values = {"role": str(Role(role)), "password_hash": hash_password(password), "disabled": False,
              "created_at": time.time()}
    with engine.begin() as conn:
        updated = conn.execute(update(console_users).where(console_users.c.username == username).values(**values))
        if not updated.rowcount:
            conn.execute(console_users.insert().values(username=username, **values))


@functools.cache
def _dummy_hash() -> str:
    # Compared against when the user does not exist, so timing does not reveal which usernames exist.
    return hash_password(secrets.token_urlsafe(16))


def authenticate_password(engine: Engine, username: str, password: str) -> Principal | None:
    """Return the console user's principal if the password matches and the user is enabled."""
    with engine.connect() as conn:
        row = conn.execute(select(console_users).where(console_users.c.username == username)).first()
    if row is None:
        check_password(password, _dummy_hash())
        return None
    if not check_password(password, row.password_hash) or row.disabled:
        return None
    return Principal(f"user:{row.username}", row.username, Role(row.role))


# --- rate limits ------------------------------------------------------------------------------


class RateLimiter:
    """Token bucket per key, in process memory: ``per_minute`` requests, bursting up to that many."""

    def __init__(self, default_per_minute: int = 600) -> None:
        self.default_per_minute = default_per_minute
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, key_id: str, per_minute: int | None = None, *, now: float | None = None) -> float:
        """Take one token for ``key_id``; return 0 if allowed, else seconds until a token is free."""
        limit = float(per_minute or self.default_per_minute)
        rate = limit / 60.0
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key_id, (limit, now))
        tokens = min(limit, tokens + (now - last) * rate)
        if tokens >= 1.0:
            self._buckets[key_id] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key_id] = (tokens, now)
        return (1.0 - tokens) / rate


_BEARER = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer slk_...`")
_API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key")


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    key = request.headers.get("x-api-key")
    return key.strip() if key else None


def _limiter(request: Request) -> RateLimiter:
    limiter = getattr(request.app.state, "rate_limiter", None)
    if limiter is None:
        limiter = RateLimiter()
        request.app.state.rate_limiter = limiter
    return limiter


def require_role(role: Role) -> Callable[..., Awaitable[Principal]]:
    """Return a FastAPI dependency that authenticates the caller and checks they hold ``role``."""
    required = Role(role)

    async def dependency(
        request: Request,
        _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)],
        _header: Annotated[str | None, Security(_API_KEY_HEADER)],
    ) -> Principal:
        # The two Security parameters only document the schemes in OpenAPI; the headers are read here.
        key = _presented_key(request)
        if key is None:
            raise ApiProblem(401, "Authentication required",
                             "send an API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                             "auth_required", headers={"WWW-Authenticate": "Bearer"})
        engine: Engine = request.app.state.syncline.engine
        found = await asyncio.to_thread(authenticate_key, engine, key)
        if found is None:
            raise ApiProblem(401, "Invalid API key", "the API key is unknown or revoked", "auth_invalid",
                             headers={"WWW-Authenticate": "Bearer"})
        principal, per_minute = found
        wait = _limiter(request).check(principal.key_id, per_minute)
        if wait > 0:
            raise ApiProblem(429, "Too many requests", f"rate limit exceeded for key {principal.key_id}",
                             "rate_limited", headers={"Retry-After": str(max(1, math.ceil(wait)))})
        if not principal.role.includes(required):
            raise ApiProblem(403, "Forbidden", f"this action needs the {required} role; the key has {principal.role}",
                             "role_insufficient")
        request.state.principal = principal
        return principal

    return dependency
