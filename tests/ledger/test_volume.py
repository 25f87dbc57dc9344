"""Summarised posting of a large volume gives the same account totals as detailed posting."""

from __future__ import annotations

from collections import defaultdict

import pytest

from syncline.canonical import objects as o
from syncline.ledger import Book, Calendar, Ledger, account_totals, summarise, synthetic
from syncline.ledger.summary import summary_group

from . import _build as b


def _functional_totals(entries: list[o.JournalEntry]) -> dict[tuple[str, str], int]:
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for entry in entries:
        for line in entry.lines:
            value = (line.functional_debit.amount if line.functional_debit else 0) - (
                line.functional_credit.amount if line.functional_credit else 0)
            totals[(entry.legal_entity_id, line.account)] += value
    return {key: value for key, value in totals.items() if value}


def _compare(count: int) -> None:
    calendar = Calendar([*b.months("us", 2026), *b.months("us", 2027), *b.months("eu", 2026), *b.months("eu", 2027)])
    ledger = Ledger(b.config(), synthetic.rates(), calendar)
    events = synthetic.invoices(count)
    posting = ledger.post(events, Book())
    assert posting.held == [] and len(posting.entries) == count
    summaries = summarise(posting.entries)
    # One summary per day x entity x currency (the synthetic month has one rate per day).
    assert len(summaries) == len({summary_group(entry) for entry in posting.entries})
    assert len(summaries) <= 30 * 3
    assert account_totals(s for s, _, _ in summaries) == account_totals(posting.entries)
    converted = [e for e in posting.entries if e.functional_currency != e.currency]
    assert converted, "the volume must include foreign-currency invoices"
    summary_entries = [s for s, _, _ in summaries]
    assert _functional_totals([s for s in summary_entries if s.functional_currency != s.currency]) == (
        _functional_totals(converted))
    assert sorted(entry for _, folded, _ in summaries for entry in folded) == sorted(e.id for e in posting.entries)
    for summary in summary_entries:
        debits = sum(line.debit.amount for line in summary.lines if line.debit)
        assert debits == sum(line.credit.amount for line in summary.lines if line.credit)
    # The invoices' own totals per currency are what the receivable account holds.
    receivable: dict[str, int] = defaultdict(int)
    for event in events:
        assert isinstance(event.document, o.Invoice)
        receivable[event.document.currency] += event.document.total.amount
    by_currency: dict[str, int] = defaultdict(int)
    for (_, currency, account), value in account_totals(summary_entries).items():
        if account == "1200":
            by_currency[currency] += value
    assert by_currency == receivable


def test_10k_invoices_summarised_equal_detailed() -> None:
    _compare(10_000)


@pytest.mark.slow
def test_100k_invoices_summarised_equal_detailed() -> None:
    _compare(100_000)
