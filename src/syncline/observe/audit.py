"""Hash-chained audit log: every operator action, admin action and config change, append-only.

Each row carries ``seq`` (1, 2, 3, ... without gaps), the hash of the previous row and its own
hash over its content and that previous hash. Editing a row breaks its hash, deleting a row
breaks the sequence or the link, and deleting the newest rows is caught by ``audit_head``, a
one-row table that the same transaction moves forward. :func:`verify` walks the whole chain.

Appends are serialised (``BEGIN IMMEDIATE`` on SQLite, a transaction-scoped advisory lock on
PostgreSQL) so two concurrent writers cannot fork the chain; the unique ``seq`` is the backstop.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    select,
    text,
    update,
)

from syncline.store.schema import metadata

if TYPE_CHECKING:
    from syncline.api.auth import Principal

__all__ = ["AuditEntry", "ChainBreak", "audit", "audit_head", "audit_log", "entries", "verify"]

GENESIS = "0" * 64
# Arbitrary constant naming the PostgreSQL advisory lock that serialises audit appends.
_PG_LOCK_KEY = 0x5359_4E43_4155_4454 & 0x7FFF_FFFF_FFFF_FFFF

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT.
_Id = BigInteger().with_variant(Integer(), "sqlite")

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("seq", BigInteger, nullable=False, unique=True),
    Column("at", Float, nullable=False),
    Column("actor_id", String(64), nullable=False),
    Column("actor_name", String(128), nullable=False),
    Column("actor_role", String(16), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(255), nullable=False),
    Column("detail", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index(None, "action", "at"),
    Index(None, "target"),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)


@dataclass(frozen=True)
class AuditEntry:
    """One row of the audit log as read back."""

    seq: int
    at: float
    actor_id: str
    actor_name: str
    actor_role: str
    action: str
    target: str
    detail: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class ChainBreak:
    """Where and why the chain does not verify."""

    seq: int
    problem: str


def _digest(prev_hash: str, seq: int, at: float, actor_id: str, actor_name: str, actor_role: str,
            action: str, target: str, detail: str) -> str:
    # A JSON array, not a concatenation: no two different field tuples serialise alike.
    material = orjson.dumps([prev_hash, seq, repr(float(at)), actor_id, actor_name, actor_role, action, target,
                             detail])
    return hashlib.sha256(material).hexdigest()


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})


def _append(conn: Connection, principal: Principal, action: str, target: str, detail: Mapping[str, Any]) -> int:
    _lock(conn)
    head = conn.execute(select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)).first()
    prev_seq, prev_hash = (int(head.seq), str(head.hash)) if head is not None else (0, GENESIS)
    seq = prev_seq + 1
    at = time.time()
    body = orjson.dumps(dict(detail), option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()
    role = str(principal.role)
    digest = _digest(prev_hash, seq, at, principal.key_id, principal.name, role, action, target, body)
    conn.execute(audit_log.insert().values(
        seq=seq, at=at, actor_id=principal.key_id, actor_name=principal.name, actor_role=role, action=action,
        target=target, detail=body, prev_hash=prev_hash, hash=digest,
    ))
    if head is None:
        conn.execute(audit_head.insert().values(id=1, seq=seq, hash=digest))
    else:
        conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=seq, hash=digest))
    return seq


def audit(engine: Engine | Connection, principal: Principal, action: str, target: str,
          detail: Mapping[str, Any] | None = None) -> int:
    """Append one entry to the audit log and return its sequence number.

    Pass a :class:`~sqlalchemy.Connection` inside an open transaction to record the entry
    atomically with the action it describes; with an :class:`~sqlalchemy.Engine` the entry gets
    its own transaction. ``detail`` must be JSON-serialisable and must not hold secrets or raw
    payloads (record hashes of payloads instead).
    """
    detail = detail or {}
    if isinstance(engine, Connection):
        return _append(engine, principal, action, target, detail)
    with engine.begin() as conn:
        return _append(conn, principal, action, target, detail)


def entries(engine: Engine, *, action: str | None = None, actor: str | None = None, target: str | None = None,
            before_seq: int | None = None, limit: int = 100) -> list[AuditEntry]:
    """Return audit entries newest first, optionally filtered."""
    query = select(audit_log).order_by(audit_log.c.seq.desc()).limit(limit)
    if action:
        query = query.where(audit_log.c.action == action)
    if actor:
        query = query.where((audit_log.c.actor_id == actor) | (audit_log.c.actor_name == actor))
    if target:
        query = query.where(audit_log.c.target == target)
    if before_seq is not None:
        query = query.where(audit_log.c.seq < before_seq)
    with engine.connect() as conn:
        return [_entry(row) for row in conn.execute(query)]


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(
        seq=int(row.seq), at=float(row.at), actor_id=row.actor_id, actor_name=row.actor_name,
        actor_role=row.actor_role, action=row.action, target=row.target, detail=orjson.loads(row.detail),
        prev_hash=row.prev_hash, hash=row.hash,
    )


def _walk(conn: Connection, batch: int = 1000) -> Iterator[Any]:
    last = 0
    while True:
        rows = conn.execute(
            select(audit_log).where(audit_log.c.seq > last).order_by(audit_log.c.seq).limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last = int(rows[-1].seq)


def verify(engine: Engine) -> tuple[int, list[ChainBreak]]:
    """Check the whole chain; return the number of rows checked and every break found."""
    breaks: list[ChainBreak] = []
    expected_seq, prev_hash, count = 1, GENESIS, 0
    with engine.connect() as conn:
        for row in _walk(conn):
            count += 1
            seq = int(row.seq)
            if seq != expected_seq:
                breaks.append(ChainBreak(expected_seq, f"rows {expected_seq}..{seq - 1} are missing"))
            if row.prev_hash != prev_hash:
                breaks.append(ChainBreak(seq, "does not link to the previous row (a row was removed or replaced)"))
            digest = _digest(row.prev_hash, seq, float(row.at), row.actor_id, row.actor_name, row.actor_role,
                             row.action, row.target, row.detail)
            if digest != row.hash:
                breaks.append(ChainBreak(seq, "content does not match its hash (the row was edited)"))
            expected_seq, prev_hash = seq + 1, row.hash
        head = conn.execute(select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)).first()
    if head is None:
        if count:
            breaks.append(ChainBreak(expected_seq - 1, "the chain head record is missing"))
    elif int(head.seq) != expected_seq - 1 or head.hash != prev_hash:
        breaks.append(ChainBreak(int(head.seq), f"the head names row {head.seq} but the chain ends at row "
                                                f"{expected_seq - 1} (newest rows were removed or rewritten)"))
    return count, breaks
