"""Normalize → route → outbox, one transaction per batch of inbox rows.

A batch claims up to N received inbox rows, decodes each through its connector, routes the
canonical events, and in the same transaction writes the outbox rows, the cross-references,
the timeline and the inbox rows' new state. A crash anywhere leaves either all of it or none.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import structlog
from sqlalchemy import Connection, Engine, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from syncline.canonical.events import CloudEvent
from syncline.connectors.base import Connector
from syncline.errors import ErrorClass, SynclineError
from syncline.pipeline import identity
from syncline.pipeline.routing import Router
from syncline.store import deliveries, exceptions, inbox, insert_ignore, object_versions, timeline, xref

log = structlog.get_logger("syncline.pipeline.normalize")


@dataclass
class NormalizeStats:
    """What one batch did."""

    claimed: int = 0
    events: int = 0
    deliveries: int = 0
    ignored: int = 0
    parked: int = 0
    stale: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    #: Connections that reported a change without its content (``record.changed``): their
    #: change feed should be read soon.
    notified: set[str] = field(default_factory=set)


def _sequence(event: CloudEvent) -> int | None:
    try:
        return int(event.sequence) if event.sequence else None
    except ValueError:
        return None


def _raise_version(engine: Engine) -> Any:
    """``INSERT ... ON CONFLICT`` that only ever raises the stored version (safe under races)."""
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(object_versions)
    greatest = func.greatest if engine.dialect.name == "postgresql" else func.max
    return stmt.on_conflict_do_update(
        index_elements=["canonical_id"],
        set_={"version": greatest(object_versions.c.version, stmt.excluded.version)},
    )


class EventObserver(Protocol):
    """Something that records canonical events in the normalizer's transaction (the flow engine)."""

    def record(self, conn: Connection, events: Sequence[CloudEvent], now: float) -> int: ...


def normalize_batch(
    engine: Engine, connectors: Mapping[str, Connector], router: Router, *, limit: int = 500,
    observers: Sequence[EventObserver] = (),
) -> NormalizeStats:
    """Process one batch of received inbox rows; return what happened.

    ``observers`` see every decoded event inside the same transaction (flows start from them).
    """
    stats = NormalizeStats()
    now = time.time()
    with engine.begin() as conn:
        rows = conn.execute(
            select(inbox.c.id, inbox.c.connection, inbox.c.vendor_event_id, inbox.c.body, inbox.c.traceparent)
            .where(inbox.c.state == "received")
            .order_by(inbox.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        if not rows:
            return stats
        stats.claimed = len(rows)
        inbox_updates: list[dict[str, object]] = []
        outbox: list[dict[str, object]] = []
        refs: list[dict[str, object]] = []
        history: list[dict[str, object]] = []
        parked: list[dict[str, object]] = []
        # (ordering key) -> newest sequence seen in this batch, and the events waiting on it
        versions: dict[str, int] = {}
        pending: list[tuple[dict[str, object], str, int | None]] = []
        decoded: list[CloudEvent] = []
        accepted: list[tuple[Any, list[CloudEvent]]] = []

        for row in rows:
            connector = connectors.get(row.connection)
            try:
                if connector is None:
                    raise SynclineError(
                        f"connection {row.connection!r} is no longer configured", code="connection_unknown"
                    )
                events = connector.decode(connector.parse_body(row.body))
            except Exception as exc:
                # Whatever a decoder raises parks this one row: a connector bug (a pydantic
                # ValidationError, a KeyError) must not roll back the batch and block the inbox.
                if isinstance(exc, SynclineError):
                    reason, code = str(exc) or type(exc).__name__, exc.code
                elif isinstance(exc, orjson.JSONDecodeError):
                    reason, code = f"body is not JSON: {exc}", "payload_undecodable"
                else:
                    log.exception("decoder raised an untyped error", connection=row.connection, inbox_id=row.id)
                    reason, code = f"the {row.connection} decoder failed ({type(exc).__name__})", "decoder_failed"
                inbox_updates.append({"b_id": row.id, "b_state": "parked", "b_error": reason, "b_corr": None})
                parked.append({
                    "source": "inbox", "ref_id": row.id, "connection": row.connection,
                    "error_class": ErrorClass.DATA_QUALITY.value, "code": code, "reason": reason,
                    "correlation_id": None, "created_at": now,
                })
                history.append({"at": now, "correlation_id": f"inbox:{row.id}", "canonical_id": None,
                                "stage": "parked", "connection": row.connection, "ref": str(row.id),
                                "detail": f"{row.vendor_event_id}: {reason}"})
                stats.parked += 1
                continue
            if not events:
                inbox_updates.append({"b_id": row.id, "b_state": "ignored", "b_error": None, "b_corr": None})
                stats.ignored += 1
                continue
            inbox_updates.append(
                {"b_id": row.id, "b_state": "done", "b_error": None, "b_corr": events[0].correlationid}
            )
            accepted.append((row, events))

        # Ids a target system echoes back resolve to the ids Syncline delivered (one query).
        resolved = identity.resolve(conn, [event for _, events in accepted for event in events])
        position = 0
        for row, events in accepted:
            events, position = resolved[position:position + len(events)], position + len(events)
            decoded.extend(events)
            for event in events:
                stats.events += 1
                if event.type == "record.changed":
                    stats.notified.add(row.connection)
                subject = event.subject or event.id
                source = event.data.get("source")
                if isinstance(source, dict):
                    refs.append({
                        "system": row.connection, "object_type": str(event.data.get("object_type")),
                        "external_id": str(source.get("external_id")), "canonical_id": subject,
                        "created_at": now,
                    })
                routed = router.route(event)
                payload = orjson.dumps(event.data).decode()
                sequence = _sequence(event)
                targets = ", ".join(f"{d.connection}.{d.operation}" for d in routed) or "no route"
                history.append({"at": now, "correlation_id": event.correlationid, "canonical_id": subject,
                                "stage": "normalized", "connection": row.connection, "ref": str(row.id),
                                "detail": f"{row.vendor_event_id} → {event.type} → {targets}"})
                for delivery in routed:
                    outbox_row: dict[str, object] = {
                        "connection": delivery.connection, "operation": delivery.operation,
                        "ordering_key": delivery.ordering_key, "after_key": delivery.after_key,
                        "dedupe_key": delivery.dedupe_key, "idempotency_key": delivery.idempotency_key,
                        "canonical_id": delivery.canonical_id, "event_type": event.type,
                        "correlation_id": event.correlationid, "source_inbox_id": row.id,
                        "traceparent": row.traceparent,
                        "payload": payload, "state": "pending", "attempts": 0, "next_attempt_at": now,
                        "last_error": None,
                        "created_at": now, "updated_at": now,
                    }
                    if delivery.snapshot and sequence is not None:
                        key = delivery.ordering_key
                        versions[key] = max(versions.get(key, sequence), sequence)
                        pending.append((outbox_row, key, sequence))
                    else:
                        outbox.append(outbox_row)

        if pending:
            stored = dict(
                conn.execute(
                    select(object_versions.c.canonical_id, object_versions.c.version).where(
                        object_versions.c.canonical_id.in_(list(versions))
                    )
                ).all()
            )
            for outbox_row, key, sequence in pending:
                if sequence is not None and sequence < stored.get(key, sequence):
                    # An older snapshot arrived after a newer one reached the outbox: skip it.
                    outbox_row["state"] = "skipped"
                    outbox_row["last_error"] = "superseded by a newer version of the same object"
                    stats.stale += 1
                else:
                    stored[key] = max(stored.get(key, sequence or 0), sequence or 0)
                outbox.append(outbox_row)
            conn.execute(
                _raise_version(engine),
                [{"canonical_id": key, "version": version} for key, version in stored.items() if key in versions],
            )

        if outbox:
            conn.execute(insert_ignore(engine, deliveries), outbox)
            stats.deliveries = sum(1 for item in outbox if item["state"] == "pending")
        if refs:
            conn.execute(insert_ignore(engine, xref), refs)
        if history:
            conn.execute(timeline.insert(), history)
        if parked:
            conn.execute(exceptions.insert(), parked)
        for observer in observers:
            observer.record(conn, decoded, now)
        conn.execute(
            update(inbox)
            .where(inbox.c.id == bindparam("b_id"))
            .values(state=bindparam("b_state"), error=bindparam("b_error"),
                    correlation_id=bindparam("b_corr"), processed_at=now),
            inbox_updates,
        )
    return stats
