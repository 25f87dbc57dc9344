"""Operator and admin actions shared by the management API and the console, each one audited.

The pipeline's own operations (:mod:`syncline.pipeline.operations`) do the work; this module
decides which rows an action covers, refuses what makes no sense (retrying a resolved
exception, an edited payload that is not a valid canonical object) and writes the audit entry.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError
from sqlalchemy import Connection, Engine, and_, select, update

from syncline.api._queries import ExceptionFilter
from syncline.api.auth import Principal
from syncline.canonical.events import event_type
from syncline.observe.audit import audit
from syncline.observe.redaction import unmask
from syncline.pipeline import operations
from syncline.store import deliveries, exceptions, inbox, timeline

BULK_MAX = 10_000


class ActionRefused(Exception):
    """The action cannot be applied; ``code`` is the stable problem code and ``status`` the HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Outcome:
    """What an action did."""

    matched: int
    changed: int
    audit_seq: int


def _open_exceptions(engine: Engine, where: ExceptionFilter) -> list[Any]:
    open_only = ExceptionFilter(**{**where.__dict__, "state": "open"})
    with engine.connect() as conn:
        return list(conn.execute(
            select(exceptions.c.id, exceptions.c.source, exceptions.c.ref_id, exceptions.c.connection)
            .where(open_only.where()).order_by(exceptions.c.id).limit(BULK_MAX + 1)
        ).all())


def _one_open(engine: Engine, exception_id: int) -> Any:
    with engine.connect() as conn:
        row = conn.execute(select(exceptions).where(exceptions.c.id == exception_id)).first()
    if row is None:
        raise ActionRefused(404, "exception_not_found", f"no exception {exception_id}")
    if row.resolved_at is not None:
        raise ActionRefused(409, "exception_resolved", f"exception {exception_id} is already resolved: "
                                                       f"{row.resolution}")
    return row


def _requeue_inbox(conn: Connection, inbox_ids: list[int], note: str) -> int:
    # retry_parked_inbox works per connection; an operator picks single events, so do the same per id.
    if not inbox_ids:
        return 0
    now = time.time()
    ids = list(conn.execute(
        select(inbox.c.id).where(inbox.c.id.in_(inbox_ids), inbox.c.state == "parked")).scalars())
    if ids:
        conn.execute(update(inbox).where(inbox.c.id.in_(ids)).values(state="received", error=None))
        conn.execute(
            update(exceptions)
            .where(exceptions.c.source == "inbox", exceptions.c.ref_id.in_(ids), exceptions.c.resolved_at.is_(None))
            .values(resolved_at=now, resolution=note)
        )
    return len(ids)


def retry(engine: Engine, principal: Principal, where: ExceptionFilter, note: str | None = None) -> Outcome:
    """Retry the parked deliveries and events behind the open exceptions matching ``where``."""
    rows = _open_exceptions(engine, where)
    if len(rows) > BULK_MAX:
        raise ActionRefused(422, "bulk_too_large", f"more than {BULK_MAX} exceptions match; narrow the filter")
    note = note or f"retried by {principal.name}"
    delivery_ids = tuple(row.ref_id for row in rows if row.source == "delivery")
    # The change and its audit entry commit together, or neither does.
    with engine.begin() as conn:
        changed = operations.retry_parked(conn, operations.Filter(ids=delivery_ids), note=note) if delivery_ids else 0
        changed += _requeue_inbox(conn, [row.ref_id for row in rows if row.source == "inbox"], note)
        seq = audit(conn, principal, "exceptions.retry", _target(rows),
                    {"exception_ids": [row.id for row in rows], "filter": _filter_detail(where), "note": note,
                     "requeued": changed})
    return Outcome(len(rows), changed, seq)


def resolve(engine: Engine, principal: Principal, where: ExceptionFilter, reason: str) -> Outcome:
    """Close the open exceptions matching ``where`` without retrying: someone handled them elsewhere."""
    if not reason.strip():
        raise ActionRefused(422, "reason_required", "resolving needs a reason")
    rows = _open_exceptions(engine, where)
    if len(rows) > BULK_MAX:
        raise ActionRefused(422, "bulk_too_large", f"more than {BULK_MAX} exceptions match; narrow the filter")
    now = time.time()
    resolution = f"resolved by {principal.name}: {reason.strip()}"
    ids = [row.id for row in rows]
    with engine.begin() as conn:
        changed = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            changed += conn.execute(
                update(exceptions).where(exceptions.c.id.in_(chunk), exceptions.c.resolved_at.is_(None))
                .values(resolved_at=now, resolution=resolution)
            ).rowcount
        seq = audit(conn, principal, "exceptions.resolve", _target(rows),
                    {"exception_ids": ids, "filter": _filter_detail(where), "reason": reason.strip()})
    return Outcome(len(rows), changed, seq)


def edit_and_retry(engine: Engine, principal: Principal, exception_id: int, edited: Any,
                   note: str | None = None) -> Outcome:
    """Replace a parked delivery's payload (validated as its canonical event type), then retry it.

    Values the operator left masked keep their stored value. The audit entry records the hashes
    of the payload before and after, never the payload itself.
    """
    row = _one_open(engine, exception_id)
    if row.source != "delivery":
        raise ActionRefused(409, "not_editable", "only parked deliveries have an editable payload; "
                                                 "retry or resolve a parked event instead")
    with engine.connect() as conn:
        target = conn.execute(select(deliveries).where(deliveries.c.id == row.ref_id)).first()
    if target is None or target.state != "parked":
        raise ActionRefused(409, "delivery_not_parked", f"delivery {row.ref_id} is not parked")
    if not isinstance(edited, dict):
        raise ActionRefused(422, "payload_invalid", "the payload must be a JSON object")
    payload = unmask(edited, orjson.loads(target.payload))
    try:
        model = event_type(target.event_type).data_model
    except KeyError:
        raise ActionRefused(409, "event_type_unknown", f"no canonical model for {target.event_type}") from None
    try:
        model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(payload)"
        raise ActionRefused(422, "payload_invalid", f"{where}: {first['msg']}") from None
    before = hashlib.sha256(target.payload.encode()).hexdigest()
    text = orjson.dumps(payload).decode()
    after = hashlib.sha256(text.encode()).hexdigest()
    now = time.time()
    note = note or f"payload edited and retried by {principal.name}"
    with engine.begin() as conn:
        changed = conn.execute(
            update(deliveries).where(and_(deliveries.c.id == target.id, deliveries.c.state == "parked"))
            .values(payload=text, updated_at=now)
        ).rowcount
        if not changed:
            raise ActionRefused(409, "delivery_not_parked", f"delivery {target.id} changed state meanwhile")
        conn.execute(timeline.insert().values(
            at=now, correlation_id=target.correlation_id, canonical_id=target.canonical_id, stage="edited",
            connection=target.connection, ref=str(target.id), detail=f"payload edited by {principal.name}",
        ))
        seq = audit(conn, principal, "delivery.edit", f"delivery:{target.id}",
                    {"exception_id": exception_id, "before_sha256": before, "after_sha256": after})
    with engine.begin() as conn:
        requeued = operations.retry_parked(conn, operations.Filter(ids=(target.id,)), note=note)
        audit(conn, principal, "exceptions.retry", f"exception:{exception_id}",
              {"exception_ids": [exception_id], "note": note, "requeued": requeued})
    return Outcome(1, requeued, seq)


def replay(engine: Engine, principal: Principal, where: operations.Filter, note: str | None = None) -> Outcome:
    """Deliver already-delivered rows again (same idempotency keys)."""
    if where.deliveries_where() is None:
        raise ActionRefused(422, "filter_required", "a replay needs a filter: ids, connection, correlation id or time")
    note = note or f"replayed by {principal.name}"
    with engine.begin() as conn:
        changed = operations.replay(conn, where, note=note)
        seq = audit(conn, principal, "deliveries.replay", where.correlation_id or where.connection or "deliveries",
                    {"filter": {k: v for k, v in where.__dict__.items() if v not in (None, ())}, "note": note,
                     "requeued": changed})
    return Outcome(changed, changed, seq)


def set_paused(engine: Engine, principal: Principal, connection: str, paused: bool, reason: str | None) -> int:
    """Pause or resume deliveries to ``connection``; return the audit sequence number."""
    with engine.begin() as conn:
        if paused:
            operations.pause(conn, connection, reason or f"paused by {principal.name}")
        else:
            operations.resume(conn, connection)
        return audit(conn, principal, "connection.pause" if paused else "connection.resume",
                     f"connection:{connection}", {"reason": reason})


def _target(rows: Iterable[Any]) -> str:
    rows = list(rows)
    return f"exception:{rows[0].id}" if len(rows) == 1 else f"exceptions:{len(rows)}"


def _filter_detail(where: ExceptionFilter) -> dict[str, Any]:
    return {key: value for key, value in where.__dict__.items() if value not in (None, (), "open")}
