"""The posting engine on hand-built documents: rules, accounts, FX, periods, schedules, replays."""

from __future__ import annotations

from datetime import date

import pytest
from pydantic import ValidationError

from syncline.canonical import objects as o
from syncline.ledger import Book, Calendar, Ledger, PeriodStatus, account_totals
from syncline.ledger.config import LedgerConfig

from . import _build as b

NOV = date(2026, 11, 16)


def _balanced(entry: o.JournalEntry) -> None:
    debits = sum(line.debit.amount for line in entry.lines if line.debit)
    credits = sum(line.credit.amount for line in entry.lines if line.credit)
    assert debits == credits
    if entry.functional_currency != entry.currency:
        fd = sum(line.functional_debit.amount for line in entry.lines if line.functional_debit)
        fc = sum(line.functional_credit.amount for line in entry.lines if line.functional_credit)
        assert fd == fc


def _by_account(entry: o.JournalEntry) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in entry.lines:
        out[line.account] = out.get(line.account, 0) + (line.debit.amount if line.debit else 0) - (
            line.credit.amount if line.credit else 0)
    return out


def test_rule_that_cannot_balance_is_refused_naming_the_rule() -> None:
    raw = b.raw_config()
    raw["rules"]["payout.paid"]["lines"][1]["amount"] = "net"
    expected = r"rules\.payout\.paid\.lines cannot balance: credits exceed by 1 x fees, debits exceed by 1 x net"
    with pytest.raises(ValidationError, match=expected):
        LedgerConfig.model_validate(raw)


def test_invoice_rule_missing_tax_line_is_refused() -> None:
    raw = b.raw_config()
    raw["rules"]["invoice.issued"]["lines"].pop()  # the tax credit
    expected = r"rules\.invoice\.issued\.lines cannot balance: debits exceed by 1 x tax"
    with pytest.raises(ValidationError, match=expected):
        LedgerConfig.model_validate(raw)


def test_unknown_amount_and_unmapped_role_are_refused() -> None:
    raw = b.raw_config()
    raw["rules"]["refund.succeeded"]["lines"][0]["amount"] = "fees"
    with pytest.raises(ValidationError, match=r"rules\.refund\.succeeded\.lines\[0\]: unknown amount 'fees'"):
        LedgerConfig.model_validate(raw)
    raw = b.raw_config()
    raw["rules"]["refund.succeeded"]["lines"][0]["debit"] = "goodwill"
    with pytest.raises(ValidationError, match=r"role 'goodwill' has no account for entity 'us'"):
        LedgerConfig.model_validate(raw)


def test_invoice_posts_receivable_revenue_by_product_line_and_tax_by_code() -> None:
    ledger = b.ledger()
    inv = b.invoice("in_1", "EUR", [
        b.line("il_1", 10_000, "EUR", tax=1_900, tax_code="DE_VAT", jurisdiction="DE", product="prod_api"),
        b.line("il_2", 5_000, "EUR", tax=950, tax_code="DE_VAT", jurisdiction="DE"),
    ], issued=NOV)
    posting = ledger.post([b.event("invoice.issued", inv)], Book())
    [entry] = posting.entries
    assert entry.legal_entity_id == "eu"  # routed by the tax jurisdiction's country
    assert entry.functional_currency == "EUR" and entry.exchange_rate is None
    assert _by_account(entry) == {"1200": 17_850, "4010": -10_000, "4000": -5_000, "2310": -2_850}
    assert entry.posting_period == "eu-2026-11"
    assert entry.source_documents == ["in_1"]
    _balanced(entry)


def test_foreign_currency_converts_per_line_and_posts_rounding_difference() -> None:
    ledger = b.ledger()
    # Three revenue lines of 0.05 EUR at 1.0847 each convert to 5 cents (5.42 → 5) but the
    # receivable of 0.15 EUR converts to 16 cents (16.27 → 16): 1 cent goes to the rounding account.
    inv = b.invoice("in_fx", "EUR", [b.line(f"l{n}", 5, "EUR") for n in range(3)], issued=NOV, account="acct_us",
                    company_code=None)
    us_ledger = Ledger(b.config(routing=[{"entity": "us"}]), ledger.rates, ledger.calendar)
    [entry] = us_ledger.post([b.event("invoice.issued", inv)], Book()).entries
    assert entry.legal_entity_id == "us" and entry.currency == "EUR" and entry.functional_currency == "USD"
    assert entry.exchange_rate == "1.0847" and entry.rate_date == NOV
    rounding = [line for line in entry.lines if line.account == "7990"]
    assert len(rounding) == 1 and rounding[0].credit is not None and rounding[0].credit.amount == 0
    assert rounding[0].functional_credit is not None and rounding[0].functional_credit.amount == 1
    _balanced(entry)


def test_missing_rate_holds_the_document_and_posts_nothing() -> None:
    ledger = b.ledger()
    inv = b.invoice("in_jpy", "JPY", [b.line("l", 1_000, "JPY")], issued=NOV)
    posting = ledger.post([b.event("invoice.issued", inv)], book := Book())
    assert posting.entries == []
    assert [(h.source, h.code) for h in posting.held] == [("in_jpy", "fx_rate_missing")]
    assert book.posted == set()  # a replay after loading the rate posts it


def test_closed_period_moves_to_next_open_with_a_note() -> None:
    ledger = Ledger(b.config(), b.rates(), b.calendar({11: PeriodStatus.CLOSED}))
    inv = b.invoice("in_c", "USD", [b.line("l", 500, "USD")], issued=NOV, account="acct_us")
    [entry] = ledger.post([b.event("invoice.issued", inv)], Book()).entries
    assert entry.posting_period == "us-2026-12" and entry.posting_date == date(2026, 12, 1)
    assert "moved from Nov 2026 (closed, 2026-11-16) to Dec 2026" in (entry.memo or "")


def test_closed_period_hold_policy_parks_the_entry() -> None:
    ledger = Ledger(b.config(periods={"closed": "hold"}), b.rates(), b.calendar({11: PeriodStatus.SOFT_CLOSED}))
    inv = b.invoice("in_h", "USD", [b.line("l", 500, "USD")], issued=NOV, account="acct_us")
    posting = ledger.post([b.event("invoice.issued", inv)], Book())
    assert posting.entries == []
    [held] = posting.held
    assert held.code == "period_closed" and "Nov 2026 of us is soft_closed" in held.reason
    assert held.entry is not None and held.entry.posting_date == NOV


def test_soft_closed_accepts_postings_when_policy_allows() -> None:
    config = b.config(periods={"closed": "hold", "post_into_soft_closed": True})
    ledger = Ledger(config, b.rates(), b.calendar({11: PeriodStatus.SOFT_CLOSED}))
    inv = b.invoice("in_s", "USD", [b.line("l", 500, "USD")], issued=NOV, account="acct_us")
    [entry] = ledger.post([b.event("invoice.issued", inv)], Book()).entries
    assert entry.posting_period == "us-2026-11"


def test_entries_are_deterministic_and_a_replay_posts_nothing() -> None:
    ledger = b.ledger()
    inv = b.invoice("in_r", "USD", [b.line("l", 500, "USD")], issued=NOV, account="acct_us")
    book = Book()
    first = ledger.post([b.event("invoice.issued", inv)], book).entries
    again = ledger.post([b.event("invoice.issued", inv)], book)
    assert again.entries == [] and again.skipped == 1
    fresh = ledger.post([b.event("invoice.issued", inv)], Book()).entries
    assert [e.id for e in fresh] == [e.id for e in first]


def test_payment_for_other_entity_invoice_makes_an_intercompany_pair() -> None:
    ledger = b.ledger()
    book = Book()
    inv = b.invoice("in_eu", "EUR", [b.line("l", 12_000, "EUR")], issued=NOV, company_code="DE01")
    pay = b.payment("py_eu", "in_eu", 12_000, "EUR", paid=NOV)
    entries = ledger.post([b.event("invoice.issued", inv), b.event("payment.succeeded", pay)], book).entries
    _, eu_side, us_side = entries
    assert eu_side.legal_entity_id == "eu" and _by_account(eu_side) == {"1900": 12_000, "1200": -12_000}
    assert us_side.legal_entity_id == "us" and _by_account(us_side) == {"1150": 12_000, "2900": -12_000}
    assert us_side.functional_currency == "USD" and us_side.exchange_rate is not None
    assert eu_side.id != us_side.id
    for entry in entries:
        _balanced(entry)


def test_subscription_line_is_deferred_and_released_ratably_summing_exactly() -> None:
    ledger = b.ledger()
    book = Book()
    inv = b.invoice("in_y", "USD", [b.line("il_y", 120_000, "USD", period=(NOV, date(2027, 11, 16)))],
                    issued=NOV, account="acct_us")
    [entry] = ledger.post([b.event("invoice.issued", inv)], book).entries
    assert _by_account(entry) == {"1200": 120_000, "2400": -120_000}
    schedule = book.schedules["il_y"]
    assert sum(s.amount for s in schedule.slices) == 120_000
    assert [s.period for s in schedule.slices][:2] == ["us-2026-11", "us-2026-12"]
    assert schedule.slices[0].start == NOV and schedule.slices[-1].end == date(2027, 11, 15)
    assert schedule.slices[0].amount == round(120_000 * 15 / 365)  # 16..30 Nov of 365 days
    releases = ledger.release(book, date(2027, 12, 31)).entries
    assert sum(_by_account(e)["4000"] for e in releases) == -120_000
    assert ledger.release(book, date(2027, 12, 31)).entries == []  # released once


def test_credit_memo_reduces_remaining_schedule_and_after_payment_credits_customer() -> None:
    ledger = b.ledger()
    book = Book()
    inv = b.invoice("in_z", "USD", [b.line("il_z", 36_500, "USD", period=(date(2026, 11, 1), date(2027, 11, 1)))],
                    issued=date(2026, 11, 1), account="acct_us")
    pay = b.payment("py_z", "in_z", 36_500, "USD", paid=date(2026, 11, 2), account="acct_us")
    ledger.post([b.event("invoice.issued", inv), b.event("payment.succeeded", pay)], book)
    ledger.release(book, date(2026, 11, 30))
    memo = b.credit_memo("cm_z", "in_z", "USD", [("il_z", 10_000)], on=date(2026, 12, 10), account="acct_us")
    [entry] = ledger.post([b.event("credit_memo.issued", memo)], book).entries
    assert _by_account(entry) == {"2400": 10_000, "2450": -10_000}  # after payment: customer credit
    slices = book.schedules["il_z"].slices
    assert slices[0].released and slices[0].amount == 3_000  # November untouched
    assert sum(s.amount for s in slices) == 26_500


def test_credit_memo_beyond_remaining_schedule_reverses_revenue() -> None:
    ledger = b.ledger()
    book = Book()
    inv = b.invoice("in_w", "USD", [b.line("il_w", 3_000, "USD", period=(date(2026, 11, 1), date(2026, 12, 1))),
                                    b.line("il_w2", 1_000, "USD")], issued=date(2026, 11, 1), account="acct_us")
    ledger.post([b.event("invoice.issued", inv)], book)
    ledger.release(book, date(2026, 11, 30))
    memo = b.credit_memo("cm_w", "in_w", "USD", [("il_w", 3_000), (None, 500)], tax=0, on=date(2026, 12, 2),
                         account="acct_us")
    [entry] = ledger.post([b.event("credit_memo.issued", memo)], book).entries
    assert _by_account(entry) == {"4000": 3_500, "1200": -3_500}  # unpaid: against the receivable


def test_payout_with_fees_and_dispute_lifecycle() -> None:
    ledger = b.ledger()
    book = Book()
    pay = b.payment("py_d", None, 5_000, "USD", paid=NOV, account="acct_us")
    out = b.payout("po_1", 9_710, 290, "USD", on=NOV)
    dsp = b.dispute("dp_1", "py_d", 5_000, "USD", on=NOV)
    entries = ledger.post([
        b.event("payment.succeeded", pay), b.event("payout.paid", out), b.event("dispute.opened", dsp),
        b.event("dispute.lost", dsp, date(2026, 12, 3)),
    ], book).entries
    assert _by_account(entries[1]) == {"1000": 9_710, "6100": 290, "1150": -10_000}
    assert entries[3].posting_date == date(2026, 12, 3)
    totals = account_totals(entries)
    assert ("us", "USD", "1250") not in totals  # opened then lost: the dispute receivable nets to zero
    assert totals[("us", "USD", "6150")] == 5_000


def test_inconsistent_invoice_is_held_as_data_quality() -> None:
    ledger = b.ledger()
    inv = b.invoice("in_bad", "USD", [b.line("l", 500, "USD")], issued=NOV).model_copy(
        update={"total": b.m(400, "USD")})
    posting = ledger.post([b.event("invoice.issued", inv)], Book())
    assert [h.code for h in posting.held] == ["invoice_totals_inconsistent"]


def test_entity_without_calendar_accepts_any_date() -> None:
    ledger = Ledger(b.config(), b.rates(), Calendar())
    inv = b.invoice("in_n", "USD", [b.line("l", 500, "USD")], issued=NOV, account="acct_us")
    [entry] = ledger.post([b.event("invoice.issued", inv)], Book()).entries
    assert entry.posting_period is None and entry.posting_date == NOV


def test_write_off_and_won_dispute() -> None:
    ledger = b.ledger()
    book = Book()
    inv = b.invoice("in_wo", "USD", [b.line("l", 7_000, "USD")], issued=NOV, account="acct_us")
    part = b.payment("py_wo", "in_wo", 2_000, "USD", paid=NOV, account="acct_us")
    unpaid = inv.model_copy(update={"status": o.InvoiceStatus.UNCOLLECTIBLE, "amount_due": b.m(5_000, "USD")})
    dsp = b.dispute("dp_w", "py_wo", 2_000, "USD", on=NOV)
    entries = ledger.post([
        b.event("invoice.issued", inv), b.event("payment.succeeded", part),
        b.event("invoice.uncollectible", unpaid, date(2026, 12, 20)),
        b.event("dispute.opened", dsp), b.event("dispute.won", dsp, date(2026, 12, 22)),
    ], book).entries
    write_off = entries[2]
    assert _by_account(write_off) == {"6200": 5_000, "1200": -5_000}
    assert write_off.posting_date == date(2026, 12, 20)
    totals = account_totals(entries)
    assert ("us", "USD", "1200") not in totals  # issued, partly paid, rest written off: receivable is zero
    assert ("us", "USD", "1250") not in totals  # dispute opened then won
    assert totals[("us", "USD", "1150")] == 2_000
