"""The store-backed ledger: load the book for a batch, run the engine, write entries and outbox rows.

Every method that changes state takes an open :class:`~sqlalchemy.Connection` so it can run in
the caller's transaction (the normalizer's batch transaction, or one opened by the CLI): the
journal entries, the book, the parked exceptions and the outbox rows commit together or not at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Connection, Engine, and_, bindparam, select, update

from syncline.canonical import objects as o
from syncline.canonical.events import CloudEvent
from syncline.errors import ErrorClass
from syncline.ledger.calendar import Calendar, Period, PeriodStatus
from syncline.ledger.config import BatchWindow, LedgerConfig, PostingMode
from syncline.ledger.engine import (
    POSTED_EVENTS,
    BillingEvent,
    Book,
    DocumentRecord,
    Held,
    Ledger,
    LineSchedule,
    Posting,
)
from syncline.ledger.fx import Rate, RateTable
from syncline.ledger.schedules import ScheduleSlice
from syncline.ledger.summary import summarise
from syncline.ledger.tables import (
    ledger_documents,
    ledger_entries,
    ledger_periods,
    ledger_posted,
    ledger_rates,
    ledger_schedules,
)
from syncline.store import deliveries, exceptions, insert_ignore, upsert


@dataclass
class LedgerStats:
    """What one ledger call did."""

    entries: int = 0
    deliveries: int = 0
    held: int = 0
    pending: int = 0
    skipped: int = 0
    summaries: int = 0
    held_reasons: list[str] = field(default_factory=list)


def window_open(window: BatchWindow | None, now: float) -> float:
    """Return the first moment at or after ``now`` inside the daily UTC ``window``."""
    if window is None:
        return now
    moment = datetime.fromtimestamp(now, UTC)
    current = moment.time().replace(tzinfo=None)
    start, end = window.start, window.end
    inside = start <= current < end if start < end else (current >= start or current < end)
    if inside:
        return now
    opening = datetime.combine(moment.date(), start, tzinfo=UTC)
    if opening < moment:
        opening += timedelta(days=1)
    return opening.timestamp()


class LedgerStore:
    """The ledger engine bound to one store: rates, periods, book, entries and deliveries."""

    def __init__(self, engine: Engine, config: LedgerConfig) -> None:
        self.engine = engine
        self.config = config

    # -- reference data -----------------------------------------------------------------------

    def load_rates(self, rates: Iterable[Rate]) -> int:
        """Insert or replace exchange rates; return how many rows were written."""
        now = time.time()
        rates = list(rates)
        RateTable(rates)  # refuses a non-positive rate before anything is written
        rows = [{"base": r.base, "quote": r.quote, "rate_date": r.on, "rate": str(r.rate), "loaded_at": now}
                for r in rates]
        if rows:
            with self.engine.begin() as conn:
                conn.execute(upsert(self.engine, ledger_rates, ["base", "quote", "rate_date"], ["rate", "loaded_at"]),
                             rows)
        return len(rows)

    def rate_table(self, conn: Connection) -> RateTable:
        """Return every stored rate as a :class:`RateTable`."""
        rows = conn.execute(select(ledger_rates.c.rate_date, ledger_rates.c.base, ledger_rates.c.quote,
                                   ledger_rates.c.rate)).all()
        return RateTable(Rate(row.rate_date, row.base, row.quote, Decimal(row.rate)) for row in rows)

    def load_periods(self, periods: Iterable[Period], *, origin: str) -> int:
        """Insert or update accounting periods (from the ERP or a file); return how many."""
        now = time.time()
        periods = list(periods)
        for period in periods:
            if period.entity not in self.config.entities:
                raise ValueError(f"period {period.id} names unknown entity {period.entity!r}")
        Calendar(periods)  # refuses overlapping periods before anything is written
        rows = [{"entity": p.entity, "id": p.id, "name": p.name, "start": p.start, "end": p.end,
                 "status": p.status.value, "origin": origin, "updated_at": now} for p in periods]
        if rows:
            with self.engine.begin() as conn:
                conn.execute(upsert(self.engine, ledger_periods, ["entity", "id"],
                                    ["name", "start", "end", "status", "origin", "updated_at"]), rows)
        return len(rows)

    def calendar(self, conn: Connection) -> Calendar:
        """Return the stored period calendar."""
        rows = conn.execute(select(ledger_periods)).all()
        return Calendar(Period(r.entity, r.id, r.name, r.start, r.end, PeriodStatus(r.status)) for r in rows)

    def ledger(self, conn: Connection) -> Ledger:
        """Return the engine over the stored rates and calendar."""
        return Ledger(self.config, self.rate_table(conn), self.calendar(conn))

    # -- posting ------------------------------------------------------------------------------

    def post_events(self, conn: Connection, events: Sequence[CloudEvent], *, now: float | None = None) -> LedgerStats:
        """Post the ledger's events among ``events`` (others are ignored) in the caller's transaction."""
        billing = [BillingEvent.from_cloud_event(e) for e in events if e.type in POSTED_EVENTS]
        return self.post(conn, billing, now=now)

    def record(self, conn: Connection, events: Sequence[CloudEvent], now: float) -> int:
        """Post a normalize batch's events in its transaction; return the entries written.

        This is the pipeline's ``EventObserver`` hook: pass the store in ``normalize_batch(...,
        observers=[ledger_store])`` and the journal entries commit with the inbox rows they came from.
        """
        return self.post_events(conn, events, now=now).entries

    def post(self, conn: Connection, events: Sequence[BillingEvent], *, now: float | None = None,
             ledger: Ledger | None = None) -> LedgerStats:
        """Post ``events``: write entries, the book, parked exceptions and outbox rows."""
        now = time.time() if now is None else now
        if not events:
            return LedgerStats()
        ledger = ledger or self.ledger(conn)
        book = self._load_book(conn, events)
        posting = ledger.post(events, book)
        return self._write(conn, posting, book, now)

    def release_revenue(self, conn: Connection, through: date, *, now: float | None = None) -> LedgerStats:
        """Post revenue releases for every schedule slice ending on or before ``through``."""
        now = time.time() if now is None else now
        # Row locks (PostgreSQL) keep two concurrent releases from posting the same slice twice;
        # the deterministic entry ids and ledger_posted would refuse it anyway.
        rows = sorted(set(conn.execute(
            select(ledger_schedules.c.line_id).where(
                and_(ledger_schedules.c.released.is_(False), ledger_schedules.c.end <= through)
            ).with_for_update()
        ).scalars().all()))
        book = Book()
        self._load_schedules(conn, book, rows)
        markers = [f"revenue.released/{line}@{s.period}" for line in rows for s in book.schedules[line].slices]
        self._load_posted(conn, book, markers)
        posting = self.ledger(conn).release(book, through)
        return self._write(conn, posting, book, now)

    def release_summaries(self, conn: Connection, through: date, *, now: float | None = None) -> LedgerStats:
        """Fold pending detailed entries dated on or before ``through`` into summaries and send them."""
        now = time.time() if now is None else now
        rows = conn.execute(
            select(ledger_entries.c.id, ledger_entries.c.payload)
            .where(and_(ledger_entries.c.state == "pending", ledger_entries.c.posting_date <= through))
            .order_by(ledger_entries.c.seq)
            .with_for_update()
        ).all()
        stats = LedgerStats()
        if not rows:
            return stats
        detailed = [o.JournalEntry.model_validate_json(row.payload) for row in rows]
        links: list[dict[str, object]] = []
        for summary, folded, _documents in summarise(detailed):
            existing = conn.execute(select(ledger_entries.c.payload).where(ledger_entries.c.id == summary.id)).first()
            if existing is not None:
                # A later batch of the same day after the summary was sent: a second summary, keyed
                # by its first folded entry, so the first one is never changed after delivery.
                summary = summary.model_copy(update={"id": f"{summary.id}_{folded[0][3:15]}"})
            links.extend({"b_id": entry, "b_summary": summary.id} for entry in folded)
            if not summary.lines:
                # The day's entries cancel out: keep the (empty) summary for the drill-down, send nothing.
                self._insert_entries(conn, [summary], "summary", "netted", now)
                continue
            self._insert_entries(conn, [summary], "summary", "posted", now)
            self._enqueue(conn, [summary], now)
            stats.summaries += 1
            stats.deliveries += 1
        conn.execute(
            update(ledger_entries).where(ledger_entries.c.id == bindparam("b_id"))
            .values(state="summarised", summary_id=bindparam("b_summary")),
            links,
        )
        stats.entries = len(links)
        return stats

    def drill_down(self, conn: Connection, summary_id: str) -> list[o.JournalEntry]:
        """Return the detailed entries (and through them the source documents) behind a summary."""
        rows = conn.execute(
            select(ledger_entries.c.payload).where(ledger_entries.c.summary_id == summary_id)
            .order_by(ledger_entries.c.seq)
        ).scalars().all()
        return [o.JournalEntry.model_validate_json(payload) for payload in rows]

    def post_held(self, conn: Connection, entry_id: str, period_id: str, *, by: str = "operator",
                  now: float | None = None) -> o.JournalEntry:
        """Post a held entry into the period finance chose, and resolve its exception.

        The period must not be closed (a person may choose a soft-closed one). The entry keeps its
        date when that falls in the period, else takes the period's first day, and says so in its memo.
        """
        now = time.time() if now is None else now
        row = conn.execute(
            select(ledger_entries).where(ledger_entries.c.id == entry_id).with_for_update()
        ).first()
        if row is None or row.state != "held":
            raise ValueError(f"{entry_id} is not a held entry")
        entry = o.JournalEntry.model_validate_json(row.payload)
        period = next((p for p in self.calendar(conn).periods(entry.legal_entity_id) if p.id == period_id), None)
        if period is None:
            raise ValueError(f"{entry.legal_entity_id} has no period {period_id!r}")
        if period.status is PeriodStatus.CLOSED:
            raise ValueError(f"period {period.name} of {entry.legal_entity_id} is closed")
        day = entry.posting_date if period.start <= entry.posting_date <= period.end else period.start
        note = f"held, posted into {period.name} by {by}"
        entry = entry.model_copy(update={"posting_period": period.id, "posting_date": day,
                                         "memo": f"{entry.memo}; {note}" if entry.memo else note})
        summarised = self.config.erp is not None and self.config.erp.mode is PostingMode.SUMMARISED
        conn.execute(update(ledger_entries).where(ledger_entries.c.seq == row.seq).values(
            state="pending" if summarised else "posted", posting_date=day, payload=entry.model_dump_json()))
        if not summarised:
            self._enqueue(conn, [entry], now)
        conn.execute(update(exceptions).where(and_(
            exceptions.c.source == "ledger", exceptions.c.ref_id == row.seq, exceptions.c.resolved_at.is_(None),
        )).values(resolved_at=now, resolution=note))
        return entry

    # -- internals ----------------------------------------------------------------------------

    def _load_book(self, conn: Connection, events: Sequence[BillingEvent]) -> Book:
        book = Book()
        ids: set[str] = set()
        lines: set[str] = set()
        for event in events:
            doc = event.document
            for name in ("id", "invoice_id", "payment_id"):
                value = getattr(doc, name, None)
                if value:
                    ids.add(str(value))
            if isinstance(doc, o.CreditMemo):
                lines.update(line.invoice_line_id for line in doc.lines if line.invoice_line_id)
        for chunk in _chunks(sorted(ids)):
            for row in conn.execute(select(ledger_documents).where(ledger_documents.c.id.in_(chunk))).all():
                book.documents[row.id] = DocumentRecord(row.id, row.kind, row.entity, row.currency, row.invoice_id,
                                                        row.paid)
        # Payments name their invoice; refunds and disputes name the payment: load one more hop.
        second = {d.invoice_id for d in book.documents.values() if d.invoice_id} - set(book.documents)
        for chunk in _chunks(sorted(second)):
            for row in conn.execute(select(ledger_documents).where(ledger_documents.c.id.in_(chunk))).all():
                book.documents[row.id] = DocumentRecord(row.id, row.kind, row.entity, row.currency, row.invoice_id,
                                                        row.paid)
        self._load_schedules(conn, book, sorted(lines))
        sources = sorted(str(getattr(e.document, "id", "")) for e in events)
        for chunk in _chunks(sources):
            book.posted.update(conn.execute(select(ledger_posted.c.marker).where(ledger_posted.c.source.in_(chunk)))
                               .scalars().all())
        return book

    def _load_schedules(self, conn: Connection, book: Book, line_ids: Sequence[str]) -> None:
        for chunk in _chunks(list(line_ids)):
            rows = conn.execute(
                select(ledger_schedules).where(ledger_schedules.c.line_id.in_(chunk))
                .order_by(ledger_schedules.c.line_id, ledger_schedules.c.start)
            ).all()
            for row in rows:
                schedule = book.schedules.get(row.line_id)
                if schedule is None:
                    schedule = LineSchedule(row.line_id, row.invoice_id, row.entity, row.currency, row.product_line, [])
                    book.schedules[row.line_id] = schedule
                schedule.slices.append(ScheduleSlice(row.line_id, row.period, row.start, row.end, row.amount,
                                                     row.released))

    def _load_posted(self, conn: Connection, book: Book, markers: Sequence[str]) -> None:
        for chunk in _chunks(list(markers)):
            book.posted.update(conn.execute(select(ledger_posted.c.marker).where(ledger_posted.c.marker.in_(chunk)))
                               .scalars().all())

    def _write(self, conn: Connection, posting: Posting, book: Book, now: float) -> LedgerStats:
        stats = LedgerStats(skipped=posting.skipped)
        if book.changed_documents:
            documents = [{"id": d.id, "kind": d.kind, "entity": d.entity, "currency": d.currency,
                     "invoice_id": d.invoice_id, "paid": d.paid}
                    for d in (book.documents[i] for i in sorted(book.changed_documents))]
            conn.execute(upsert(self.engine, ledger_documents, ["id"], ["paid"]), documents)
        if book.changed_schedules:
            rows: list[dict[str, object]] = [
                {"line_id": s.line_id, "period": item.period, "invoice_id": s.invoice_id, "entity": s.entity,
                     "currency": s.currency, "product_line": s.product_line, "start": item.start, "end": item.end,
                 "amount": item.amount, "released": item.released}
                for s in (book.schedules[i] for i in sorted(book.changed_schedules)) for item in s.slices
            ]
            conn.execute(upsert(self.engine, ledger_schedules, ["line_id", "period"], ["amount", "released"]), rows)
        if book.new_posted:
            conn.execute(insert_ignore(self.engine, ledger_posted),
                         [{"marker": m, "source": m.split("/", 1)[1], "at": now} for m in sorted(book.new_posted)])
        summarised = self.config.erp is not None and self.config.erp.mode is PostingMode.SUMMARISED
        if posting.entries:
            # Summarised mode: entries wait for their day's summary; the summary goes to the outbox.
            state = "pending" if summarised else "posted"
            self._insert_entries(conn, posting.entries, "detailed", state, now)
            stats.entries = len(posting.entries)
            if state == "pending":
                stats.pending = len(posting.entries)
            else:
                stats.deliveries = self._enqueue(conn, posting.entries, now)
        if posting.held:
            self._park(conn, posting.held, now, stats)
        return stats

    def _insert_entries(self, conn: Connection, entries: Sequence[o.JournalEntry], kind: str, state: str,
                        now: float) -> None:
        conn.execute(insert_ignore(self.engine, ledger_entries), [
            {"id": e.id, "legal_entity_id": e.legal_entity_id, "currency": e.currency, "posting_date": e.posting_date,
             "kind": kind, "state": state, "summary_id": None, "payload": e.model_dump_json(), "created_at": now}
            for e in entries
        ])

    def _enqueue(self, conn: Connection, entries: Sequence[o.JournalEntry], now: float) -> int:
        erp = self.config.erp
        if erp is None or not entries:
            return 0
        not_before = window_open(erp.window, now)
        conn.execute(insert_ignore(self.engine, deliveries), [
            {
                "connection": erp.connection, "operation": erp.operation,
                "ordering_key": f"{erp.connection}:{e.id}", "after_key": None,
                "dedupe_key": f"{erp.connection}:{erp.operation}:{e.id}", "idempotency_key": f"eid:{e.id}",
                "canonical_id": e.id, "event_type": "journal_entry.posted",
                "correlation_id": e.source_documents[0] if e.source_documents else e.id,
                "source_inbox_id": None, "payload": e.model_dump_json(), "state": "pending", "attempts": 0,
                "next_attempt_at": not_before, "last_error": None, "created_at": now, "updated_at": now,
            }
            for e in entries
        ])
        return len(entries)

    def _park(self, conn: Connection, held: Sequence[Held], now: float, stats: LedgerStats) -> None:
        with_entry = [h for h in held if h.entry is not None]
        if with_entry:
            self._insert_entries(conn, [h.entry for h in with_entry if h.entry is not None], "detailed", "held", now)
        seqs: dict[str, int] = {}
        if with_entry:  # the exception points at the held entry, which an operator can release
            ids = [h.entry.id for h in with_entry if h.entry is not None]
            query = select(ledger_entries.c.id, ledger_entries.c.seq).where(ledger_entries.c.id.in_(ids))
            seqs = {row.id: row.seq for row in conn.execute(query)}
        connection = self.config.erp.connection if self.config.erp else "ledger"
        conn.execute(exceptions.insert(), [
            {"source": "ledger", "ref_id": seqs.get(h.entry.id, 0) if h.entry is not None else 0,
             "connection": connection,
             "error_class": (ErrorClass.BUSINESS_RULE if h.code == "period_closed" else ErrorClass.DATA_QUALITY).value,
             "code": h.code, "reason": f"{h.source}: {h.reason}", "correlation_id": h.source, "created_at": now}
            for h in held
        ])
        stats.held = len(held)
        stats.held_reasons = [f"{h.source}: {h.reason}" for h in held]


def _chunks(items: Sequence[str], size: int = 900) -> Iterable[Sequence[str]]:
    # SQLite caps bound parameters per statement; stay well under it.
    for start in range(0, len(items), size):
        yield items[start:start + size]
