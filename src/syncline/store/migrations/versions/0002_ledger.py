"""ledger: fx rates, accounting periods, posted documents, revenue schedules, journal entries

Revision ID: 0002_ledger
Revises: 0001
Create Date: 2026-11-23 14:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_ledger"
down_revision = "0001"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "ledger_rates",
        sa.Column("base", sa.String(length=3), nullable=False),
        sa.Column("quote", sa.String(length=3), nullable=False),
        sa.Column("rate_date", sa.Date(), nullable=False),
        sa.Column("rate", sa.String(length=64), nullable=False),
        sa.Column("loaded_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("base", "quote", "rate_date", name=op.f("pk_ledger_rates")),
    )
    op.create_table(
        "ledger_periods",
        sa.Column("entity", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("start", sa.Date(), nullable=False),
        sa.Column("end", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("origin", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("entity", "id", name=op.f("pk_ledger_periods")),
    )
    op.create_table(
        "ledger_documents",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("entity", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("invoice_id", sa.String(length=128), nullable=True),
        sa.Column("paid", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_documents")),
    )
    op.create_table(
        "ledger_posted",
        sa.Column("marker", sa.String(length=300), nullable=False),
        sa.Column("source", sa.String(length=160), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("marker", name=op.f("pk_ledger_posted")),
    )
    op.create_index(op.f("ix_ledger_posted_source"), "ledger_posted", ["source"], unique=False)
    op.create_table(
        "ledger_schedules",
        sa.Column("line_id", sa.String(length=128), nullable=False),
        sa.Column("period", sa.String(length=64), nullable=False),
        sa.Column("invoice_id", sa.String(length=128), nullable=False),
        sa.Column("entity", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("product_line", sa.String(length=64), nullable=True),
        sa.Column("start", sa.Date(), nullable=False),
        sa.Column("end", sa.Date(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("released", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("line_id", "period", name=op.f("pk_ledger_schedules")),
    )
    op.create_index(op.f("ix_ledger_schedules_released_end"), "ledger_schedules", ["released", "end"], unique=False)
    op.create_index(op.f("ix_ledger_schedules_invoice_id"), "ledger_schedules", ["invoice_id"], unique=False)
    op.create_table(
        "ledger_entries",
        sa.Column("seq", _Id, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("legal_entity_id", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("posting_date", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("summary_id", sa.String(length=64), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_ledger_entries")),
        sa.UniqueConstraint("id", name=op.f("uq_ledger_entries_id")),
    )
    op.create_index(op.f("ix_ledger_entries_state_posting_date"), "ledger_entries", ["state", "posting_date"],
                    unique=False)
    op.create_index(op.f("ix_ledger_entries_summary_id"), "ledger_entries", ["summary_id"], unique=False)


def downgrade() -> None:
    op.drop_table("ledger_entries")
    op.drop_table("ledger_schedules")
    op.drop_table("ledger_posted")
    op.drop_table("ledger_documents")
    op.drop_table("ledger_periods")
    op.drop_table("ledger_rates")
