"""Engine creation per backend, dialect-specific statements, and migrations."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from syncline.errors import ConfigError

DEFAULT_URL = "sqlite:///syncline.db"
MIGRATIONS = Path(__file__).parent / "migrations"


def database_url(explicit: str | None = None) -> str:
    """Return the store URL: the explicit one, ``SYNCLINE_DATABASE_URL``, or local SQLite."""
    return explicit or os.environ.get("SYNCLINE_DATABASE_URL") or DEFAULT_URL


def create_store_engine(url: str | None = None, *, durable: bool = True) -> Engine:
    """Create an engine for the store at ``url``.

    SQLite runs in WAL mode with ``synchronous=FULL`` (``durable=False`` uses NORMAL, which
    survives a process crash but not a power cut) and every transaction opens with
    ``BEGIN IMMEDIATE`` so writers queue on the busy timeout instead of deadlocking.
    PostgreSQL uses psycopg 3.
    """
    url = database_url(url)
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = create_engine(
            url,
            connect_args={"timeout": 60, "check_same_thread": False, "isolation_level": None},
            poolclass=NullPool if parsed.database in (None, "", ":memory:") else None,
        )
        synchronous = "FULL" if durable else "NORMAL"

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigError(
                "PostgreSQL needs the postgres extra: pip install 'syncline[postgres]'"
            ) from exc
        return create_engine(parsed, pool_size=10, max_overflow=10, pool_pre_ping=True)
    raise ConfigError(f"unsupported store URL scheme {backend!r}: use sqlite:/// or postgresql://")


def insert_ignore(engine: Engine, table: Table) -> Any:
    """Return ``INSERT ... ON CONFLICT DO NOTHING`` for ``table`` in the engine's dialect."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def upsert(engine: Engine, table: Table, keys: list[str], update: list[str]) -> Any:
    """Return ``INSERT ... ON CONFLICT (keys) DO UPDATE SET update = excluded.update``."""
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table)
    return stmt.on_conflict_do_update(
        index_elements=keys, set_={name: stmt.excluded[name] for name in update}
    )


def migrate(engine: Engine) -> None:
    """Bring the store schema up to the newest Alembic revision of every branch.

    Parts of Syncline (ledger, governance, flows) keep their own migration branches off the
    initial schema, so the upgrade goes to all heads.
    """
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "heads")
