"""One deal's whole timeline across systems: inbound events, flow steps, deliveries, tasks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine, or_, select

from syncline.flows._tables import flow_instances
from syncline.store import timeline, xref


@dataclass(frozen=True)
class TraceEntry:
    """One line of a deal's timeline."""

    at: float
    stage: str
    connection: str | None
    correlation_id: str
    canonical_id: str | None
    detail: str | None


@dataclass(frozen=True)
class Trace:
    """The instances about one deal and every timeline entry that belongs to it, oldest first."""

    subject: str
    instances: list[dict[str, Any]]
    entries: list[TraceEntry]


def resolve(engine: Engine, reference: str) -> str:
    """Return the canonical id for ``reference``: a canonical id, or a vendor record id we know."""
    with engine.connect() as conn:
        found = conn.execute(
            select(xref.c.canonical_id).where(xref.c.external_id == reference).limit(1)
        ).scalar()
    return str(found) if found else reference


def trace(engine: Engine, reference: str) -> Trace:
    """Collect the timeline of the deal ``reference`` (opportunity canonical id or CRM id)."""
    subject = resolve(engine, reference)
    with engine.connect() as conn:
        rows = conn.execute(
            select(flow_instances).where(flow_instances.c.key == subject).order_by(flow_instances.c.created_at)
        ).all()
        correlations = {row.correlation_id for row in rows}
        # Objects the flows created for the deal (customer, subscription, order, entitlement).
        related = {subject}
        for row in rows:
            data = orjson.loads(row.data)
            related.update(str(data[key]) for key in ("customer_id", "subscription_id", "sales_order_id")
                           if data.get(key))
        clauses = [timeline.c.canonical_id.in_(sorted(related))]
        if correlations:
            clauses.append(timeline.c.correlation_id.in_(sorted(correlations)))
        entries = [
            TraceEntry(row.at, row.stage, row.connection, row.correlation_id, row.canonical_id, row.detail)
            for row in conn.execute(select(timeline).where(or_(*clauses)).order_by(timeline.c.at, timeline.c.id))
        ]
    instances = [
        {"id": row.id, "flow": row.flow, "version": row.version, "state": row.state, "step": row.step,
         "correlation_id": row.correlation_id, "error": row.error}
        for row in rows
    ]
    return Trace(subject, instances, entries)
