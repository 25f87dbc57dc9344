"""The ledger's tables, on the store's shared metadata (migration ``0002_ledger`` creates them)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Date, Float, Index, Integer, String, Table, Text

from syncline.store.schema import metadata

_Id = BigInteger().with_variant(Integer(), "sqlite")

ledger_rates = Table(
    "ledger_rates",
    metadata,
    Column("base", String(3), primary_key=True),
    Column("quote", String(3), primary_key=True),
    Column("rate_date", Date, primary_key=True),
    # Decimal as text: exact on both backends, never a float.
    Column("rate", String(64), nullable=False),
    Column("loaded_at", Float, nullable=False),
)

ledger_periods = Table(
    "ledger_periods",
    metadata,
    Column("entity", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("start", Date, nullable=False),
    Column("end", Date, nullable=False),
    # open | soft_closed | closed
    Column("status", String(16), nullable=False),
    # where the period came from: a connection name (ERP sync) or "file"
    Column("origin", String(64), nullable=False),
    Column("updated_at", Float, nullable=False),
)

ledger_documents = Table(
    "ledger_documents",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("entity", String(64), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("invoice_id", String(128)),
    Column("paid", BigInteger, nullable=False),
)

ledger_posted = Table(
    "ledger_posted",
    metadata,
    # "<rule key>/<source id>": the source was posted under that rule (replays post nothing).
    Column("marker", String(300), primary_key=True),
    Column("source", String(160), nullable=False),
    Column("at", Float, nullable=False),
    Index(None, "source"),
)

ledger_schedules = Table(
    "ledger_schedules",
    metadata,
    Column("line_id", String(128), primary_key=True),
    Column("period", String(64), primary_key=True),
    Column("invoice_id", String(128), nullable=False),
    Column("entity", String(64), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("product_line", String(64)),
    Column("start", Date, nullable=False),
    Column("end", Date, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("released", Boolean, nullable=False),
    Index(None, "released", "end"),
    Index(None, "invoice_id"),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("seq", _Id, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("legal_entity_id", String(64), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("posting_date", Date, nullable=False),
    # detailed | summary
    Column("kind", String(16), nullable=False),
    # posted (sent to the outbox) | pending (waits for its summary) | summarised | held;
    # a summary whose lines all net to zero is 'netted' (kept for the drill-down, never sent)
    Column("state", String(16), nullable=False),
    # the summary entry a detailed entry was folded into: the drill-down link
    Column("summary_id", String(64)),
    Column("payload", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Index(None, "state", "posting_date"),
    Index(None, "summary_id"),
)
