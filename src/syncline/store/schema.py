"""The durable store's tables (SQLAlchemy Core). Migrations in ``store/migrations`` create them.

Times are UTC epoch seconds as floats: cheap to compare in claim queries on both backends.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
_Id = BigInteger().with_variant(Integer(), "sqlite")

inbox = Table(
    "inbox",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("connection", String(64), nullable=False),
    Column("vendor_event_id", String(255), nullable=False),
    Column("vendor_event_type", String(128)),
    Column("received_at", Float, nullable=False),
    # received -> done | ignored | parked
    Column("state", String(16), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("correlation_id", String(128)),
    #: W3C trace context of the request that brought the event, carried to its deliveries.
    Column("traceparent", String(64)),
    Column("error", Text),
    Column("processed_at", Float),
    UniqueConstraint("connection", "vendor_event_id"),
    Index(None, "state", "id"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("connection", String(64), nullable=False),
    Column("operation", String(64), nullable=False),
    # Rows of one ordering key reach the target in id order; after_key names a key whose earlier
    # rows must be done first (an invoice waits for its customer).
    Column("ordering_key", String(255), nullable=False),
    Column("after_key", String(255)),
    Column("dedupe_key", String(255), nullable=False, unique=True),
    Column("idempotency_key", String(255), nullable=False),
    Column("canonical_id", String(128), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("correlation_id", String(128), nullable=False),
    Column("source_inbox_id", BigInteger),
    Column("traceparent", String(64)),
    Column("payload", Text, nullable=False),
    # pending -> inflight -> done | pending (retry) | parked ; skipped when superseded
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    #: Transient failures (5xx, timeouts) only: what ``retry.max_attempts`` is counted against, so
    #: waiting on a rate limit or on a missing dependency does not use up a record's retries.
    Column("failures", Integer, nullable=False, default=0, server_default="0"),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_owner", String(64)),
    Column("lease_until", Float),
    Column("error_class", String(32)),
    Column("last_error", Text),
    Column("external_id", String(255)),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("delivered_at", Float),
    Index(None, "connection", "state", "next_attempt_at"),
    Index(None, "ordering_key", "id"),
    Index(None, "correlation_id"),
)

xref = Table(
    "xref",
    metadata,
    Column("system", String(64), primary_key=True),
    Column("object_type", String(64), primary_key=True),
    Column("external_id", String(255), primary_key=True),
    Column("canonical_id", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
    Index(None, "canonical_id"),
)

aliases = Table(
    "aliases",
    metadata,
    # A record Syncline created in another system comes back in that system's webhooks under the
    # id that system gave it, which decodes to a second canonical id. The alias maps that id back
    # to the identity Syncline wrote (see syncline.pipeline.identity).
    Column("alias_id", String(128), primary_key=True),
    Column("canonical_id", String(128), nullable=False),
    Column("system", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
)

object_versions = Table(
    "object_versions",
    metadata,
    Column("canonical_id", String(128), primary_key=True),
    Column("version", BigInteger, nullable=False),
)

timeline = Table(
    "timeline",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("correlation_id", String(128), nullable=False),
    Column("canonical_id", String(128)),
    Column("stage", String(32), nullable=False),
    Column("connection", String(64)),
    Column("ref", String(64)),
    Column("detail", Text),
    Index(None, "correlation_id", "id"),
    Index(None, "canonical_id"),
)

exceptions = Table(
    "exceptions",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    # 'inbox' or 'delivery'; ref_id is that table's id
    Column("source", String(16), nullable=False),
    Column("ref_id", BigInteger, nullable=False),
    Column("connection", String(64), nullable=False),
    Column("error_class", String(32), nullable=False),
    Column("code", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("correlation_id", String(128)),
    Column("created_at", Float, nullable=False),
    Column("resolved_at", Float),
    Column("resolution", Text),
    Index(None, "resolved_at", "connection"),
    Index(None, "source", "ref_id"),
)

connection_state = Table(
    "connection_state",
    metadata,
    Column("connection", String(64), primary_key=True),
    Column("paused", Boolean, nullable=False, default=False),
    Column("reason", Text),
    Column("updated_at", Float, nullable=False),
)

cursors = Table(
    "cursors",
    metadata,
    Column("connection", String(64), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)
