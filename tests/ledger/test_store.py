"""The store-backed ledger on the test backend: entries, outbox rows, replays, holds, windows, summaries."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from syncline.canonical import objects as o
from syncline.canonical.events import CloudEvent, make_event
from syncline.errors import DataQualityError
from syncline.ledger import LedgerStore, PeriodStatus, Rate, account_totals, read_rates_csv
from syncline.ledger.calendar import Period
from syncline.ledger.tables import ledger_entries, ledger_schedules
from syncline.store import deliveries, exceptions

from . import _build as b

NOV = date(2026, 11, 16)
NOON = datetime(2026, 11, 23, 12, tzinfo=UTC).timestamp()


def _store(engine: Engine, **overrides: object) -> LedgerStore:
    store = LedgerStore(engine, b.config(**overrides))
    store.load_rates(b.rates().all())
    store.load_periods([*b.months("us", 2026, {10: PeriodStatus.CLOSED}), *b.months("us", 2027),
                        *b.months("eu", 2026, {10: PeriodStatus.CLOSED}), *b.months("eu", 2027)], origin="file")
    return store


def _cloud(kind: str, doc: object, n: int = 0) -> CloudEvent:
    moment = (getattr(doc, "issued_at", None) or getattr(doc, "paid_at", None) or getattr(doc, "refunded_at", None))
    assert moment is not None
    return make_event(kind, doc, connection="stripe", vendor_event_id=f"evt_{getattr(doc, 'id', n)}", time=moment)


def _month(engine: Engine) -> list[CloudEvent]:
    inv = b.invoice("in_1", "EUR", [
        b.line("il_1", 120_000, "EUR", period=(NOV, date(2027, 11, 16)), product="prod_api", tax=22_800,
               tax_code="DE_VAT", jurisdiction="DE"),
    ], issued=NOV)
    late = b.invoice("in_2", "USD", [b.line("il_2", 9_900, "USD")], issued=date(2026, 10, 30), account="acct_us")
    pay = b.payment("py_1", "in_1", 142_800, "EUR", paid=date(2026, 11, 17))
    return [_cloud("invoice.issued", inv), _cloud("invoice.issued", late), _cloud("payment.succeeded", pay)]


def _outbox(engine: Engine) -> list[o.JournalEntry]:
    with engine.connect() as conn:
        rows = conn.execute(select(deliveries).order_by(deliveries.c.id)).all()
    for row in rows:
        assert row.connection == "netsuite" and row.operation == "post_journal_entry"
        assert row.idempotency_key == f"eid:{row.canonical_id}" and row.event_type == "journal_entry.posted"
    return [o.JournalEntry.model_validate_json(row.payload) for row in rows]


def test_posting_writes_entries_and_outbox_rows_once(engine: Engine) -> None:
    store = _store(engine)
    events = _month(engine)
    with engine.begin() as conn:
        stats = store.post_events(conn, events, now=NOON)
    assert (stats.entries, stats.deliveries, stats.held) == (4, 4, 0)  # EU invoice, US invoice, pair
    sent = _outbox(engine)
    assert {e.legal_entity_id for e in sent} == {"us", "eu"}
    moved = next(e for e in sent if e.source_documents == ["in_2"])
    assert moved.posting_date == date(2026, 11, 1) and "moved from Oct 2026" in (moved.memo or "")
    # A replay of the same events (redelivered webhooks, `syncline replay`) posts nothing new.
    with engine.begin() as conn:
        again = store.post_events(conn, events, now=NOON + 60)
    assert (again.entries, again.deliveries) == (0, 0)
    assert len(_outbox(engine)) == 4
    with engine.connect() as conn:
        schedule = conn.execute(select(func.sum(ledger_schedules.c.amount))).scalar_one()
    assert schedule == 120_000


def test_payment_in_a_later_batch_finds_its_invoice_entity(engine: Engine) -> None:
    store = _store(engine)
    first, _, payment = _month(engine)
    with engine.begin() as conn:
        store.post_events(conn, [first], now=NOON)
    with engine.begin() as conn:
        stats = store.post_events(conn, [payment], now=NOON)
    assert stats.entries == 2  # the intercompany pair: the invoice's entity came from the store
    assert {e.legal_entity_id for e in _outbox(engine)[1:]} == {"eu", "us"}


def test_hold_policy_parks_a_period_closed_exception(engine: Engine) -> None:
    store = _store(engine, periods={"closed": "hold"})
    _, late, _ = _month(engine)
    with engine.begin() as conn:
        stats = store.post_events(conn, [late], now=NOON)
    assert (stats.entries, stats.held) == (0, 1)
    assert _outbox(engine) == []
    with engine.connect() as conn:
        [parked] = conn.execute(select(exceptions)).all()
        held = conn.execute(select(ledger_entries).where(ledger_entries.c.seq == parked.ref_id)).one()
    assert parked.source == "ledger" and parked.code == "period_closed" and parked.error_class == "business_rule"
    assert "Oct 2026 of us is closed" in parked.reason
    assert held.state == "held" and o.JournalEntry.model_validate_json(held.payload).source_documents == ["in_2"]
    # Finance decides: not into the closed October, into November.
    with engine.begin() as conn, pytest.raises(ValueError, match="Oct 2026 of us is closed"):
        store.post_held(conn, held.id, "us-2026-10")
    with engine.begin() as conn:
        posted = store.post_held(conn, held.id, "us-2026-11", by="ana@finance", now=NOON)
    assert posted.posting_date == date(2026, 11, 1) and posted.posting_period == "us-2026-11"
    assert "held, posted into Nov 2026 by ana@finance" in (posted.memo or "")
    assert _outbox(engine) == [posted]
    with engine.connect() as conn:
        assert conn.execute(select(exceptions.c.resolved_at)).scalar_one() == NOON
    with engine.begin() as conn, pytest.raises(ValueError, match="is not a held entry"):
        store.post_held(conn, held.id, "us-2026-11")


def test_outside_the_batch_window_entries_wait_in_the_outbox(engine: Engine) -> None:
    raw_erp = {"connection": "netsuite", "window": {"start": "02:00", "end": "04:00"}}
    store = _store(engine, erp=raw_erp)
    with engine.begin() as conn:
        store.post_events(conn, _month(engine)[:1], now=NOON)
    with engine.connect() as conn:
        not_before = conn.execute(select(deliveries.c.next_attempt_at)).scalar_one()
    assert not_before == datetime(2026, 11, 24, 2, tzinfo=UTC).timestamp()
    inside = datetime(2026, 11, 23, 3, tzinfo=UTC).timestamp()
    with engine.begin() as conn:
        store.post_events(conn, _month(engine)[1:2], now=inside)
    with engine.connect() as conn:
        newest = conn.execute(select(deliveries.c.next_attempt_at).order_by(deliveries.c.id.desc()).limit(1))
        assert newest.scalar_one() == inside


def test_summarised_mode_sends_one_entry_per_day_and_keeps_the_drill_down(engine: Engine) -> None:
    store = _store(engine, erp={"connection": "netsuite", "mode": "summarised"})
    events = [_cloud("invoice.issued", b.invoice(f"in_{n}", "USD", [b.line(f"l{n}", 1_000 + n, "USD", tax=n,
                                                                           tax_code="US_CA")],
                                                  issued=date(2026, 11, 16 + n % 2), account="acct_us"))
              for n in range(10)]
    with engine.begin() as conn:
        stats = store.post_events(conn, events, now=NOON)
    assert (stats.pending, stats.deliveries) == (10, 0)
    with engine.begin() as conn:
        released = store.release_summaries(conn, date(2026, 11, 16), now=NOON)
    assert (released.summaries, released.entries) == (1, 5)
    [summary] = _outbox(engine)
    assert summary.posting_date == date(2026, 11, 16) and summary.summary_key == summary.id
    with engine.connect() as conn:
        detail = store.drill_down(conn, summary.id)
    assert sorted(d for e in detail for d in e.source_documents) == [f"in_{n}" for n in range(0, 10, 2)]
    assert account_totals([summary]) == account_totals(detail)
    with engine.begin() as conn:
        store.release_summaries(conn, date(2026, 11, 30), now=NOON)
        assert store.release_summaries(conn, date(2026, 11, 30), now=NOON).summaries == 0
    assert len(_outbox(engine)) == 2


def test_revenue_release_posts_each_period_once(engine: Engine) -> None:
    store = _store(engine)
    with engine.begin() as conn:
        store.post_events(conn, _month(engine)[:1], now=NOON)
    with engine.begin() as conn:
        first = store.release_revenue(conn, date(2026, 12, 31), now=NOON)
    with engine.begin() as conn:
        again = store.release_revenue(conn, date(2026, 12, 31), now=NOON)
    assert (first.entries, again.entries) == (2, 0)  # November and December
    releases = [e for e in _outbox(engine) if (e.memo or "").startswith("revenue.released")]
    assert [e.posting_period for e in releases] == ["eu-2026-11", "eu-2026-12"]
    assert sum(line.credit.amount for e in releases for line in e.lines if line.credit) == round(
        120_000 * 15 / 365) + round(120_000 * 31 / 365)


def test_rates_csv_and_overlapping_periods(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "rates.csv"
    path.write_text("date,base,quote,rate\n2026-11-02,eur,usd,1.0851\n2026-11-09,EUR,USD,1.0790\n")
    rates = read_rates_csv(path)
    assert rates[0] == Rate(date(2026, 11, 2), "EUR", "USD", Decimal("1.0851"))
    store = LedgerStore(engine, b.config())
    assert store.load_rates(rates) == 2
    with engine.connect() as conn:
        table = store.rate_table(conn)
    assert table.lookup("EUR", "USD", date(2026, 11, 8)) == (Decimal("1.0851"), date(2026, 11, 2))
    assert table.lookup("USD", "EUR", date(2026, 11, 9))[0] == 1 / Decimal("1.0790")
    with pytest.raises(DataQualityError, match="no EUR/USD rate on or before 2026-11-01"):
        table.lookup("EUR", "USD", date(2026, 11, 1))
    bad = tmp_path / "bad.csv"
    bad.write_text("date,base,quote,rate\n2026-11-02,EUR,USD,one\n")
    with pytest.raises(DataQualityError, match=r"bad\.csv:2"):
        read_rates_csv(bad)
    overlapping = [Period("us", "a", "A", date(2026, 1, 1), date(2026, 1, 31), PeriodStatus.OPEN),
                   Period("us", "b", "B", date(2026, 1, 31), date(2026, 2, 28), PeriodStatus.OPEN)]
    with pytest.raises(ValueError, match="overlap"):
        store.load_periods(overlapping, origin="file")


def test_a_day_that_nets_to_zero_sends_nothing_and_is_not_retried(engine: Engine) -> None:
    store = _store(engine, erp={"connection": "netsuite", "mode": "summarised"})
    charge = b.invoice("in_z", "USD", [b.line("l_z", 1_000, "USD")], issued=NOV, account="acct_us")
    credit = b.invoice("in_zc", "USD", [b.line("l_zc", -1_000, "USD")], issued=NOV, account="acct_us")
    with engine.begin() as conn:
        store.post_events(conn, [_cloud("invoice.issued", charge), _cloud("invoice.issued", credit)], now=NOON)
    with engine.begin() as conn:
        first = store.release_summaries(conn, NOV, now=NOON)
        again = store.release_summaries(conn, NOV, now=NOON)
    assert (first.summaries, first.entries, again.entries) == (0, 2, 0)
    assert _outbox(engine) == []
    with engine.connect() as conn:
        states = dict(conn.execute(select(ledger_entries.c.kind, ledger_entries.c.state).distinct()).all())
        summary_id = conn.execute(select(ledger_entries.c.id).where(ledger_entries.c.kind == "summary")).scalar_one()
        assert {d for e in store.drill_down(conn, summary_id) for d in e.source_documents} == {"in_z", "in_zc"}
    assert states == {"detailed": "summarised", "summary": "netted"}
