"""flow engine: instances, events, signals, facts, human tasks

Revision ID: 0004_flows
Revises: 0001
Create Date: 2026-11-23 14:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_flows"
down_revision = "0001"
branch_labels = ("flows",)
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "flow_instances",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("correlation_id", sa.String(128), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("waiting_on", sa.Text(), nullable=True),
        sa.Column("resume", sa.Text(), nullable=True),
        sa.Column("wake_at", sa.Float(), nullable=True),
        sa.Column("check_at", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flow_instances")),
    )
    op.create_index(op.f("ix_flow_instances_state_wake_at"), "flow_instances", ["state", "wake_at"])
    op.create_index(op.f("ix_flow_instances_state_check_at"), "flow_instances", ["state", "check_at"])
    op.create_index(op.f("ix_flow_instances_key"), "flow_instances", ["key"])

    op.create_table(
        "flow_events",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("subject", sa.String(128), nullable=True),
        sa.Column("correlation_id", sa.String(128), nullable=False),
        sa.Column("sequence", sa.String(32), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("processed_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flow_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_flow_events_event_id")),
    )
    op.create_index(op.f("ix_flow_events_processed_at_id"), "flow_events", ["processed_at", "id"])

    op.create_table(
        "flow_signals",
        sa.Column("id", _Id, autoincrement=True, nullable=False),
        sa.Column("instance_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("sequence", sa.String(32), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("consumed_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flow_signals")),
        sa.UniqueConstraint("instance_id", "event_id", name=op.f("uq_flow_signals_instance_id_event_id")),
    )
    op.create_index(op.f("ix_flow_signals_instance_id_consumed_at_id"), "flow_signals",
                    ["instance_id", "consumed_at", "id"])

    op.create_table(
        "flow_facts",
        sa.Column("canonical_id", sa.String(128), nullable=False),
        sa.Column("object_type", sa.String(64), nullable=False),
        sa.Column("match_name", sa.String(255), nullable=True),
        sa.Column("tax_id", sa.String(64), nullable=True),
        sa.Column("account_id", sa.String(128), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("canonical_id", name=op.f("pk_flow_facts")),
    )
    op.create_index(op.f("ix_flow_facts_object_type_match_name"), "flow_facts", ["object_type", "match_name"])
    op.create_index(op.f("ix_flow_facts_object_type_tax_id"), "flow_facts", ["object_type", "tax_id"])
    op.create_index(op.f("ix_flow_facts_account_id"), "flow_facts", ["account_id"])

    op.create_table(
        "flow_tasks",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("instance_id", sa.String(128), nullable=False),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("correlation_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("owner_role", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("due_at", sa.Float(), nullable=True),
        sa.Column("escalation", sa.Text(), nullable=True),
        sa.Column("escalated_at", sa.Float(), nullable=True),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("outcomes", sa.Text(), nullable=False),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.Column("claimed_at", sa.Float(), nullable=True),
        sa.Column("completed_by", sa.String(128), nullable=True),
        sa.Column("completed_at", sa.Float(), nullable=True),
        sa.Column("outcome", sa.String(64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flow_tasks")),
    )
    op.create_index(op.f("ix_flow_tasks_state_due_at"), "flow_tasks", ["state", "due_at"])
    op.create_index(op.f("ix_flow_tasks_instance_id"), "flow_tasks", ["instance_id"])


def downgrade() -> None:
    for table in ("flow_tasks", "flow_facts", "flow_signals", "flow_events", "flow_instances"):
        op.drop_table(table)
