"""Read side shared by the management API and the console: searches, details, health figures.

Every payload or raw body leaves this module masked (see :mod:`syncline.observe.redaction`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine, and_, func, or_, select

from syncline.observe.redaction import mask
from syncline.runtime import Syncline
from syncline.store import connection_state, deliveries, exceptions, inbox, timeline, xref

PAGE_MAX = 500


@dataclass(frozen=True)
class ExceptionFilter:
    """Which exceptions a list or bulk action covers; unset fields match everything."""

    ids: tuple[int, ...] = ()
    state: str = "open"  # open | resolved | all
    connection: str | None = None
    error_class: str | None = None
    code: str | None = None
    source: str | None = None
    correlation_id: str | None = None
    since: float | None = None
    until: float | None = None

    def where(self) -> Any:
        clauses: list[Any] = []
        if self.ids:
            clauses.append(exceptions.c.id.in_(self.ids))
        if self.state == "open":
            clauses.append(exceptions.c.resolved_at.is_(None))
        elif self.state == "resolved":
            clauses.append(exceptions.c.resolved_at.is_not(None))
        for column, value in ((exceptions.c.connection, self.connection), (exceptions.c.error_class, self.error_class),
                              (exceptions.c.code, self.code), (exceptions.c.source, self.source),
                              (exceptions.c.correlation_id, self.correlation_id)):
            if value:
                clauses.append(column == value)
        if self.since is not None:
            clauses.append(exceptions.c.created_at >= self.since)
        if self.until is not None:
            clauses.append(exceptions.c.created_at < self.until)
        return and_(True, *clauses)


def _decode(text: str | bytes | None, pii: Iterable[str]) -> Any:
    if text is None:
        return None
    try:
        return mask(orjson.loads(text), tuple(pii))
    except orjson.JSONDecodeError:
        return {"unreadable": True, "bytes": len(text)}


def exception_rows(engine: Engine, where: ExceptionFilter, *, limit: int = 100, after_id: int | None = None,
                   ) -> list[dict[str, Any]]:
    """Exceptions matching ``where``, newest first, with the delivery or event they concern."""
    query = (
        select(exceptions, deliveries.c.operation, deliveries.c.event_type, deliveries.c.canonical_id,
               deliveries.c.state.label("delivery_state"), deliveries.c.attempts)
        .select_from(exceptions.outerjoin(
            deliveries, and_(exceptions.c.source == "delivery", deliveries.c.id == exceptions.c.ref_id)))
        .where(where.where())
        .order_by(exceptions.c.id.desc())
        .limit(min(limit, PAGE_MAX))
    )
    if after_id is not None:
        query = query.where(exceptions.c.id < after_id)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def exception_detail(engine: Engine, exception_id: int, pii: Iterable[str]) -> dict[str, Any] | None:
    """One exception with its masked payload (delivery) or masked raw body (inbox event)."""
    with engine.connect() as conn:
        row = conn.execute(select(exceptions).where(exceptions.c.id == exception_id)).first()
        if row is None:
            return None
        detail = dict(row._mapping)
        if row.source == "delivery":
            target = conn.execute(select(deliveries).where(deliveries.c.id == row.ref_id)).first()
            detail["delivery"] = _delivery_dict(target, pii) if target is not None else None
            if target is not None:
                detail.update(operation=target.operation, event_type=target.event_type,
                              canonical_id=target.canonical_id, delivery_state=target.state,
                              attempts=target.attempts)
        else:
            event = conn.execute(select(inbox).where(inbox.c.id == row.ref_id)).first()
            detail["event"] = _event_dict(event, pii) if event is not None else None
    return detail


def _delivery_dict(row: Any, pii: Iterable[str] | None) -> dict[str, Any]:
    data = {key: value for key, value in row._mapping.items() if key not in ("payload", "lease_owner")}
    if pii is not None:
        data["payload"] = _decode(row.payload, pii)
    return data


def _event_dict(row: Any, pii: Iterable[str] | None) -> dict[str, Any]:
    data = {key: value for key, value in row._mapping.items() if key != "body"}
    if pii is not None:
        data["body"] = _decode(row.body, pii)
    return data


@dataclass(frozen=True)
class DeliverySearch:
    """Search for outbox rows; a vendor id is looked up through the cross-reference."""

    correlation_id: str | None = None
    canonical_id: str | None = None
    vendor_id: str | None = None
    connection: str | None = None
    state: str | None = None
    event_type: str | None = None
    since: float | None = None
    until: float | None = None


def canonical_ids_for_vendor_id(engine: Engine, vendor_id: str) -> list[str]:
    """Canonical ids that ``vendor_id`` stands for in any system."""
    with engine.connect() as conn:
        return list(conn.execute(select(xref.c.canonical_id).where(xref.c.external_id == vendor_id).distinct())
                    .scalars())


def delivery_rows(engine: Engine, search: DeliverySearch, *, limit: int = 100,
                  after_id: int | None = None) -> list[dict[str, Any]]:
    """Outbox rows matching ``search``, newest first (payloads omitted)."""
    clauses: list[Any] = []
    for column, value in ((deliveries.c.correlation_id, search.correlation_id),
                          (deliveries.c.canonical_id, search.canonical_id),
                          (deliveries.c.connection, search.connection), (deliveries.c.state, search.state),
                          (deliveries.c.event_type, search.event_type)):
        if value:
            clauses.append(column == value)
    if search.vendor_id:
        ids = canonical_ids_for_vendor_id(engine, search.vendor_id)
        clauses.append(or_(deliveries.c.external_id == search.vendor_id, deliveries.c.canonical_id.in_(ids)))
    if search.since is not None:
        clauses.append(deliveries.c.created_at >= search.since)
    if search.until is not None:
        clauses.append(deliveries.c.created_at < search.until)
    if after_id is not None:
        clauses.append(deliveries.c.id < after_id)
    query = select(deliveries).where(and_(True, *clauses)).order_by(deliveries.c.id.desc()).limit(min(limit, PAGE_MAX))
    with engine.connect() as conn:
        return [_delivery_dict(row, None) for row in conn.execute(query)]


def delivery_detail(engine: Engine, delivery_id: int, pii: Iterable[str]) -> dict[str, Any] | None:
    """One outbox row with its masked payload."""
    with engine.connect() as conn:
        row = conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)).first()
    return _delivery_dict(row, pii) if row is not None else None


@dataclass(frozen=True)
class EventSearch:
    """Search for inbox rows."""

    connection: str | None = None
    vendor_event_id: str | None = None
    correlation_id: str | None = None
    state: str | None = None
    since: float | None = None
    until: float | None = None


def event_rows(engine: Engine, search: EventSearch, *, limit: int = 100, after_id: int | None = None,
               ) -> list[dict[str, Any]]:
    """Inbox rows matching ``search``, newest first (bodies omitted)."""
    clauses: list[Any] = []
    for column, value in ((inbox.c.connection, search.connection), (inbox.c.vendor_event_id, search.vendor_event_id),
                          (inbox.c.correlation_id, search.correlation_id), (inbox.c.state, search.state)):
        if value:
            clauses.append(column == value)
    if search.since is not None:
        clauses.append(inbox.c.received_at >= search.since)
    if search.until is not None:
        clauses.append(inbox.c.received_at < search.until)
    if after_id is not None:
        clauses.append(inbox.c.id < after_id)
    query = select(inbox).where(and_(True, *clauses)).order_by(inbox.c.id.desc()).limit(min(limit, PAGE_MAX))
    with engine.connect() as conn:
        return [_event_dict(row, None) for row in conn.execute(query)]


def event_detail(engine: Engine, event_id: int, pii: Iterable[str]) -> dict[str, Any] | None:
    """One inbox row with its masked body."""
    with engine.connect() as conn:
        row = conn.execute(select(inbox).where(inbox.c.id == event_id)).first()
    return _event_dict(row, pii) if row is not None else None


def transaction(engine: Engine, key: str) -> dict[str, Any]:
    """Everything known about one business transaction: ``key`` is a correlation, canonical or vendor id.

    Returns the correlation and canonical ids it resolved to, the timeline across systems in time
    order, the deliveries, and the cross-reference (the object's id in each system).
    """
    with engine.connect() as conn:
        canonical = {key} | set(conn.execute(
            select(xref.c.canonical_id).where(xref.c.external_id == key)).scalars())
        canonical |= set(conn.execute(
            select(deliveries.c.canonical_id).where(
                or_(deliveries.c.correlation_id == key, deliveries.c.external_id == key))).scalars())
        correlations = set(conn.execute(
            select(timeline.c.correlation_id).where(
                or_(timeline.c.correlation_id == key, timeline.c.canonical_id.in_(canonical))).distinct()).scalars())
        events = conn.execute(
            select(timeline).where(or_(timeline.c.correlation_id.in_(correlations | {key}),
                                       timeline.c.canonical_id.in_(canonical)))
            .order_by(timeline.c.at, timeline.c.id).limit(1000)
        ).all()
        rows = conn.execute(
            select(deliveries).where(or_(deliveries.c.canonical_id.in_(canonical),
                                         deliveries.c.correlation_id.in_(correlations | {key})))
            .order_by(deliveries.c.id).limit(500)
        ).all()
        refs = conn.execute(select(xref).where(xref.c.canonical_id.in_(canonical))).all()
    found_canonical = sorted({row.canonical_id for row in rows} | {row.canonical_id for row in refs}
                             | {row.canonical_id for row in events if row.canonical_id})
    return {
        "key": key,
        "canonical_ids": found_canonical,
        "correlation_ids": sorted(correlations | {row.correlation_id for row in rows}),
        "timeline": [dict(row._mapping) for row in events],
        "deliveries": [_delivery_dict(row, None) for row in rows],
        "references": [dict(row._mapping) for row in refs],
    }


def connection_health(syncline: Syncline) -> list[dict[str, Any]]:
    """Per connection: paused?, breaker, budget use, outbox by state, oldest waiting age, open exceptions."""
    now = time.time()
    with syncline.engine.connect() as conn:
        states: dict[str, dict[str, int]] = {}
        for name, state, count in conn.execute(
            select(deliveries.c.connection, deliveries.c.state, func.count())
            .where(deliveries.c.state.in_(("pending", "inflight", "parked")))
            .group_by(deliveries.c.connection, deliveries.c.state)
        ):
            states.setdefault(name, {})[state] = int(count)
        oldest: dict[str, float] = dict(conn.execute(
            select(deliveries.c.connection, func.min(deliveries.c.created_at))
            .where(deliveries.c.state.in_(("pending", "inflight"))).group_by(deliveries.c.connection)
        ).all())
        open_exceptions: dict[str, int] = dict(conn.execute(
            select(exceptions.c.connection, func.count()).where(exceptions.c.resolved_at.is_(None))
            .group_by(exceptions.c.connection)
        ).all())
        paused = {row.connection: row for row in conn.execute(select(connection_state))}
        delivered_last_hour: dict[str, int] = dict(conn.execute(
            select(deliveries.c.connection, func.count())
            .where(deliveries.c.state == "done", deliveries.c.delivered_at >= now - 3600)
            .group_by(deliveries.c.connection)
        ).all())
    out = []
    for name, connector in syncline.connectors.items():
        budget = syncline.budgets[name]
        breaker = syncline.breakers[name]
        pause_row = paused.get(name)
        is_paused = bool(pause_row.paused) if pause_row is not None else False
        counts = states.get(name, {})
        first = oldest.get(name)
        health = "paused" if is_paused else ("degraded" if str(breaker.state) != "closed" or open_exceptions.get(name)
                                             else "healthy")
        out.append({
            "name": name,
            "vendor": connector.vendor,
            "health": health,
            "paused": is_paused,
            "paused_reason": pause_row.reason if is_paused and pause_row is not None else None,
            "breaker": str(breaker.state),
            "budget_in_use": budget.in_use,
            "budget_limit": budget.limit,
            "budget_ceiling": budget.ceiling,
            "rate_per_second": budget.rate,
            "pending": counts.get("pending", 0),
            "inflight": counts.get("inflight", 0),
            "parked": counts.get("parked", 0),
            "oldest_waiting_seconds": round(now - float(first), 3) if first is not None else None,
            "open_exceptions": int(open_exceptions.get(name, 0)),
            "delivered_last_hour": int(delivered_last_hour.get(name, 0)),
        })
    return out


def delivery_amounts(engine: Engine, delivery_ids: list[int]) -> dict[int, Any]:
    """The headline amount (``total`` or ``amount``) of each delivery's payload, for lists."""
    if not delivery_ids:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(select(deliveries.c.id, deliveries.c.payload)
                            .where(deliveries.c.id.in_(delivery_ids[:PAGE_MAX]))).all()
    amounts: dict[int, Any] = {}
    for row in rows:
        try:
            payload = orjson.loads(row.payload)
        except orjson.JSONDecodeError:
            continue
        if isinstance(payload, dict):
            amount = payload.get("total") or payload.get("amount")
            if isinstance(amount, dict):
                amounts[int(row.id)] = amount
    return amounts
