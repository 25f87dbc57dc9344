"""Keys, passwords, roles and rate limits, on the real store."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select

from syncline.api.auth import (
    RateLimiter,
    Role,
    api_keys,
    authenticate_key,
    authenticate_password,
    console_users,
    create_key,
    create_user,
    list_keys,
    revoke_key,
)


def test_roles_are_ordered_by_privilege_not_alphabetically() -> None:
    assert Role.VIEWER < Role.OPERATOR < Role.ADMIN
    assert Role.ADMIN.includes(Role.OPERATOR) and not Role.VIEWER.includes(Role.OPERATOR)
    assert max(Role) is Role.ADMIN
    with pytest.raises(TypeError):
        assert Role.ADMIN > "superuser"


def test_only_a_hash_of_the_key_is_stored_and_revocation_is_immediate(engine: Engine) -> None:
    key_id, key = create_key(engine, "alice", Role.OPERATOR, rate_per_minute=30)
    with engine.connect() as conn:
        stored = conn.execute(select(api_keys)).one()
    assert key not in [str(value) for value in stored]
    assert len(key) > 50 and key.startswith(f"slk_{key_id}_")
    principal, per_minute = authenticate_key(engine, key) or (None, None)
    assert principal is not None and (principal.name, principal.role, per_minute) == ("alice", Role.OPERATOR, 30)
    assert authenticate_key(engine, key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert authenticate_key(engine, "not-a-key") is None
    assert "key_hash" not in list_keys(engine)[0]
    assert revoke_key(engine, key_id) and not revoke_key(engine, key_id)
    assert authenticate_key(engine, key) is None


def test_console_passwords_are_scrypt_hashed_and_checked(engine: Engine) -> None:
    with pytest.raises(ValueError):
        create_user(engine, "bob", "short", Role.VIEWER)
    create_user(engine, "bob", "a long enough passphrase", Role.VIEWER)
    with engine.connect() as conn:
        stored = conn.execute(select(console_users.c.password_hash)).scalar_one()
    assert stored.startswith("scrypt$") and "passphrase" not in stored
    assert authenticate_password(engine, "bob", "a long enough passphrase") is not None
    assert authenticate_password(engine, "bob", "a long enough passphrasf") is None
    assert authenticate_password(engine, "nobody", "a long enough passphrase") is None
    create_user(engine, "bob", "another long passphrase", Role.ADMIN)  # reset: new password and role
    principal = authenticate_password(engine, "bob", "another long passphrase")
    assert principal is not None and principal.role is Role.ADMIN


def test_rate_limiter_allows_a_burst_then_refills_at_the_rate() -> None:
    limiter = RateLimiter(default_per_minute=60)
    assert [limiter.check("k", now=100.0) for _ in range(60)] == [0.0] * 60
    wait = limiter.check("k", now=100.0)
    assert wait == pytest.approx(1.0)
    assert limiter.check("k", now=101.0) == 0.0  # one token back after a second
    assert limiter.check("other", 2, now=100.0) == 0.0  # per key, with its own limit
    assert limiter.check("other", 2, now=100.0) == 0.0
    assert limiter.check("other", 2, now=100.0) == pytest.approx(30.0)
