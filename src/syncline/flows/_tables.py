"""The flow engine's tables, defined against the store's shared metadata.

Migration ``0004_flows`` creates them. Times are UTC epoch seconds (floats), as everywhere in
the store.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, Integer, String, Table, Text, UniqueConstraint

from syncline.store.schema import metadata

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT identity.
_Id = BigInteger().with_variant(Integer(), "sqlite")

#: One row per running or finished flow instance (the process manager's state).
flow_instances = Table(
    "flow_instances",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("flow", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    # What the instance is about (an opportunity id, a subscription id, an account id).
    Column("key", String(128), nullable=False),
    Column("correlation_id", String(128), nullable=False),
    # runnable | waiting | waiting_for_task | completed | compensated | cancelled | failed
    Column("state", String(24), nullable=False),
    Column("step", String(64), nullable=False),
    # Steps executed so far: makes delivery and task keys deterministic per step execution.
    Column("seq", Integer, nullable=False),
    Column("data", Text, nullable=False),
    # JSON: what the instance waits on ({"deliveries": {name: dedupe_key}, "task": id, "signals": [...]})
    Column("waiting_on", Text),
    # JSON: why a runnable instance was woken (delivery outcomes, task decision, signal)
    Column("resume", Text),
    Column("wake_at", Float),
    Column("check_at", Float),
    Column("error", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float),
    Index(None, "state", "wake_at"),
    Index(None, "state", "check_at"),
    Index(None, "key"),
)

#: Canonical events flows start on or listen to, written in the normalizer's transaction.
flow_events = Table(
    "flow_events",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("event_id", String(128), nullable=False, unique=True),
    Column("type", String(64), nullable=False),
    Column("source", String(128), nullable=False),
    Column("subject", String(128)),
    Column("correlation_id", String(128), nullable=False),
    Column("sequence", String(32)),
    Column("data", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("processed_at", Float),
    Index(None, "processed_at", "id"),
)

#: Events addressed to one instance, consumed in order by the steps that wait for them.
flow_signals = Table(
    "flow_signals",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("instance_id", String(128), nullable=False),
    Column("name", String(64), nullable=False),
    Column("event_id", String(128), nullable=False),
    Column("source", String(128), nullable=False),
    Column("sequence", String(32)),
    Column("data", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("consumed_at", Float),
    UniqueConstraint("instance_id", "event_id"),
    Index(None, "instance_id", "consumed_at", "id"),
)

#: The latest known state of canonical objects flows read (accounts, opportunities).
flow_facts = Table(
    "flow_facts",
    metadata,
    Column("canonical_id", String(128), primary_key=True),
    Column("object_type", String(64), nullable=False),
    # Normalised name and first tax id, for the duplicate check.
    Column("match_name", String(255)),
    Column("tax_id", String(64)),
    # The account an opportunity, subscription or entitlement belongs to.
    Column("account_id", String(128)),
    Column("data", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index(None, "object_type", "match_name"),
    Index(None, "account_id"),
    Index(None, "object_type", "tax_id"),
)

#: Human tasks opened by flows; the decision columns are the audit of who decided what, and why.
flow_tasks = Table(
    "flow_tasks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("instance_id", String(128), nullable=False),
    Column("flow", String(64), nullable=False),
    Column("correlation_id", String(128), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("title", Text, nullable=False),
    Column("owner_role", String(32), nullable=False),
    # open | claimed | completed | cancelled
    Column("state", String(16), nullable=False),
    Column("due_at", Float),
    # JSON: {"to_role": "admin"}; applied once when due_at passes
    Column("escalation", Text),
    Column("escalated_at", Float),
    Column("data", Text, nullable=False),
    Column("outcomes", Text, nullable=False),
    Column("claimed_by", String(128)),
    Column("claimed_at", Float),
    Column("completed_by", String(128)),
    Column("completed_at", Float),
    Column("outcome", String(64)),
    Column("reason", Text),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index(None, "state", "due_at"),
    Index(None, "instance_id"),
)
