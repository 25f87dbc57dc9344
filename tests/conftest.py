"""Shared fixtures: the store backend comes from SYNCLINE_TEST_DATABASE_URL (SQLite by default)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from syncline.store import create_store_engine, migrate

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/syncline_test"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def reset_postgres(url: str) -> str:
    """Create the test database if needed and empty it; return its URL."""
    base, _, name = url.rpartition("/")
    admin = create_engine(f"{base}/postgres".replace("postgresql://", "postgresql+psycopg://", 1),
                          isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar():
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    target = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT")
    with target.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    target.dispose()
    return url


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """URL of an empty store on the backend under test."""
    url = os.environ.get("SYNCLINE_TEST_DATABASE_URL")
    if url and url.startswith("postgresql"):
        return reset_postgres(url)
    return f"sqlite:///{tmp_path / 'syncline.db'}"


@pytest.fixture
def pg_url() -> str:
    """URL of an empty PostgreSQL store (tests marked ``postgres`` need the server running)."""
    return reset_postgres(os.environ.get("SYNCLINE_PG_URL", PG_DEFAULT))


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    engine = create_store_engine(store_url)
    migrate(engine)
    yield engine
    engine.dispose()
