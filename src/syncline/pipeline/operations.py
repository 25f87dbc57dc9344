"""Operator actions on the pipeline: retry parked work, replay, pause/resume, status."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, select, update

from syncline.pipeline.delivery import set_paused
from syncline.store import connection_state, deliveries, exceptions, inbox, timeline


@dataclass(frozen=True)
class Filter:
    """Which rows an action applies to; unset fields match everything."""

    ids: tuple[int, ...] = ()
    connection: str | None = None
    error_class: str | None = None
    operation: str | None = None
    correlation_id: str | None = None
    since: float | None = None
    until: float | None = None

    def deliveries_where(self) -> Any:
        clauses: list[Any] = []
        if self.ids:
            clauses.append(deliveries.c.id.in_(self.ids))
        if self.connection:
            clauses.append(deliveries.c.connection == self.connection)
        if self.error_class:
            clauses.append(deliveries.c.error_class == self.error_class)
        if self.operation:
            clauses.append(deliveries.c.operation == self.operation)
        if self.correlation_id:
            clauses.append(deliveries.c.correlation_id == self.correlation_id)
        if self.since is not None:
            clauses.append(deliveries.c.created_at >= self.since)
        if self.until is not None:
            clauses.append(deliveries.c.created_at < self.until)
        return and_(*clauses) if clauses else None


@contextmanager
def _begin(bind: Engine | Connection) -> Iterator[Connection]:
    """A transaction of its own on an Engine; the caller's, on a Connection (to audit atomically)."""
    if isinstance(bind, Connection):
        yield bind
    else:
        with bind.begin() as conn:
            yield conn


def _reset(bind: Engine | Connection, where: Any, states: tuple[str, ...], stage: str, note: str) -> int:
    now = time.time()
    condition = deliveries.c.state.in_(states) if where is None else and_(where, deliveries.c.state.in_(states))
    with _begin(bind) as conn:
        rows = conn.execute(
            select(deliveries.c.id, deliveries.c.correlation_id, deliveries.c.canonical_id, deliveries.c.connection)
            .where(condition)
        ).all()
        if not rows:
            return 0
        ids = [row.id for row in rows]
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            conn.execute(
                update(deliveries).where(deliveries.c.id.in_(chunk)).values(
                    state="pending", attempts=0, failures=0, next_attempt_at=now, lease_owner=None, lease_until=None,
                    updated_at=now,
                )
            )
            conn.execute(
                update(exceptions)
                .where(exceptions.c.source == "delivery", exceptions.c.ref_id.in_(chunk),
                       exceptions.c.resolved_at.is_(None))
                .values(resolved_at=now, resolution=note)
            )
        conn.execute(timeline.insert(), [
            {"at": now, "correlation_id": row.correlation_id, "canonical_id": row.canonical_id, "stage": stage,
             "connection": row.connection, "ref": str(row.id), "detail": note}
            for row in rows
        ])
    return len(rows)


def retry_parked(bind: Engine | Connection, where: Filter = Filter(), *, note: str = "retried by operator") -> int:
    """Send parked deliveries matching ``where`` again (same budgets, same idempotency keys).

    Given a Connection, the change joins the caller's transaction (e.g. with its audit entry).
    """
    return _reset(bind, where.deliveries_where(), ("parked",), "retried", note)


def replay(bind: Engine | Connection, where: Filter, *, note: str = "replayed by operator") -> int:
    """Deliver already-delivered (or skipped) rows again; the idempotency key keeps it one record."""
    return _reset(bind, where.deliveries_where(), ("done", "skipped"), "replayed", note)


def retry_parked_inbox(engine: Engine, connection: str | None = None) -> int:
    """Put parked inbox rows back for decoding (after a connector or mapping fix)."""
    now = time.time()
    with engine.begin() as conn:
        where = inbox.c.state == "parked"
        if connection:
            where = and_(where, inbox.c.connection == connection)
        ids = list(conn.execute(select(inbox.c.id).where(where)).scalars())
        if ids:
            conn.execute(update(inbox).where(inbox.c.id.in_(ids)).values(state="received", error=None))
            conn.execute(
                update(exceptions)
                .where(exceptions.c.source == "inbox", exceptions.c.ref_id.in_(ids), exceptions.c.resolved_at.is_(None))
                .values(resolved_at=now, resolution="re-queued for decoding")
            )
    return len(ids)


def pause(bind: Engine | Connection, connection: str, reason: str) -> None:
    """Stop deliveries to ``connection`` until resumed; rows keep waiting in the outbox."""
    with _begin(bind) as conn:
        set_paused(conn, connection, True, reason)


def resume(bind: Engine | Connection, connection: str) -> None:
    """Resume deliveries to ``connection``."""
    with _begin(bind) as conn:
        set_paused(conn, connection, False, None)


def status(engine: Engine) -> dict[str, Any]:
    """Return counts of inbox and outbox rows by state, open exceptions and paused connections."""
    with engine.connect() as conn:
        inbox_states: dict[str, int] = {
            state: count for state, count in conn.execute(select(inbox.c.state, func.count()).group_by(inbox.c.state))
        }
        outbox: dict[str, dict[str, int]] = {}
        for connection, state, count in conn.execute(
            select(deliveries.c.connection, deliveries.c.state, func.count()).group_by(
                deliveries.c.connection, deliveries.c.state
            )
        ).all():
            outbox.setdefault(connection, {})[state] = count
        open_exceptions = conn.execute(
            select(func.count()).select_from(exceptions).where(exceptions.c.resolved_at.is_(None))
        ).scalar_one()
        paused = {
            row.connection: row.reason
            for row in conn.execute(
                select(connection_state.c.connection, connection_state.c.reason).where(connection_state.c.paused)
            )
        }
    return {"inbox": inbox_states, "outbox": outbox, "open_exceptions": open_exceptions, "paused": paused}
