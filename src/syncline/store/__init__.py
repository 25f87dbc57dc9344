"""The durable store: one SQLAlchemy Core schema on SQLite (embedded) or PostgreSQL."""

from syncline.store._engine import create_store_engine, database_url, insert_ignore, migrate, upsert
from syncline.store.schema import (
    aliases,
    connection_state,
    cursors,
    deliveries,
    exceptions,
    inbox,
    metadata,
    object_versions,
    timeline,
    xref,
)

__all__ = [
    "aliases", "connection_state", "create_store_engine", "cursors", "database_url", "deliveries", "exceptions",
    "inbox", "insert_ignore", "metadata", "migrate", "object_versions", "timeline", "upsert", "xref",
]
