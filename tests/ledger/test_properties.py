"""Property-based tests: random invoices, payments, refunds, credits, disputes, payouts, currencies, periods."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncline.canonical import objects as o
from syncline.ledger import Book, Calendar, Ledger, PeriodStatus, Rate, account_totals, summarise
from syncline.ledger.engine import BillingEvent

from . import _build as b

CURRENCIES = ["USD", "EUR", "GBP", "JPY", "KWD"]
START = date(2026, 10, 1)


def _rates() -> b.RateTable:
    table = b.rates()
    for offset in range(0, 500, 7):
        day = START - timedelta(days=7) + timedelta(days=offset)
        for base, usd, eur in (("EUR", "1.0873", "1"), ("GBP", "1.2711", "1.1690"), ("JPY", "0.006683", "0.006147"),
                               ("KWD", "3.2517", "2.9906"), ("USD", "1", "0.9197")):
            table.add(Rate(day, base, "USD", Decimal(usd)))
            table.add(Rate(day, base, "EUR", Decimal(eur)))
    return table


RATES = _rates()


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[BillingEvent], dict[int, PeriodStatus], str]:
    """A month or two of billing activity over a few customers, in random order of days."""
    events: list[BillingEvent] = []
    invoices = draw(st.integers(1, 6))
    for n in range(invoices):
        currency = draw(st.sampled_from(CURRENCIES))
        issued = START + timedelta(days=draw(st.integers(0, 60)))
        lines = []
        for k in range(draw(st.integers(1, 4))):
            amount = draw(st.integers(-20_000, 2_000_000))
            tax = draw(st.integers(0, 300_000)) if amount > 0 and draw(st.booleans()) else 0
            period = None
            if draw(st.booleans()):
                start = issued + timedelta(days=draw(st.integers(-10, 20)))
                period = (start, start + timedelta(days=draw(st.integers(0, 400))))
            lines.append(b.line(
                f"l{n}_{k}", amount, currency, tax=tax, tax_code=draw(st.sampled_from([None, "DE_VAT"])),
                jurisdiction=draw(st.sampled_from([None, "DE", "US"])), period=period,
                product=draw(st.sampled_from([None, "prod_api"])),
            ))
        account = draw(st.sampled_from(["acct_a", "acct_b"]))
        invoice = b.invoice(f"in{n}", currency, lines, issued=issued, account=account,
                            company_code=draw(st.sampled_from([None, "DE01"])))
        events.append(b.event("invoice.issued", invoice))
        total = invoice.total.amount
        paid = 0
        if total > 0 and draw(st.booleans()):
            paid = draw(st.integers(1, total))
            paid_on = issued + timedelta(days=draw(st.integers(0, 20)))
            pay = b.payment(f"py{n}", invoice.id, paid, currency, paid=paid_on, account=account)
            events.append(b.event("payment.succeeded", pay))
            if draw(st.booleans()):
                events.append(b.event("refund.succeeded", b.refund(
                    f"re{n}", pay.id, draw(st.integers(1, paid)), currency, on=pay.paid_at.date() + timedelta(days=3))))
            if draw(st.booleans()):
                opened = pay.paid_at.date() + timedelta(days=draw(st.integers(1, 30)))
                dispute = b.dispute(f"dp{n}", pay.id, draw(st.integers(1, paid)), currency, on=opened)
                events.append(b.event("dispute.opened", dispute))
                outcome = draw(st.sampled_from([None, "dispute.won", "dispute.lost"]))
                if outcome:
                    events.append(b.event(outcome, dispute, opened + timedelta(days=draw(st.integers(0, 60)))))
        if draw(st.booleans()):
            target = draw(st.sampled_from(lines))
            credited = [(target.id, draw(st.integers(0, max(0, target.amount.amount))))]
            memo = b.credit_memo(f"cm{n}", invoice.id, currency, credited, tax=draw(st.integers(0, 1_000)),
                                 on=issued + timedelta(days=draw(st.integers(1, 90))), account=account)
            events.append(b.event("credit_memo.issued", memo))
    for k in range(draw(st.integers(0, 2))):
        currency = draw(st.sampled_from(CURRENCIES))
        on = START + timedelta(days=draw(st.integers(0, 90)))
        net, fees = draw(st.integers(0, 10**7)), draw(st.integers(0, 10**5))
        events.append(b.event("payout.paid", b.payout(f"po{k}", net, fees, currency, on=on)))
    statuses = draw(st.dictionaries(st.sampled_from([10, 11, 12]),
                                    st.sampled_from(list(PeriodStatus)), max_size=3))
    policy = draw(st.sampled_from(["move_to_next_open", "hold"]))
    # Events reach the ledger in time order (the pipeline keeps per-document order).
    events.sort(key=lambda e: e.time)
    return events, statuses, policy


def _run(events: list[BillingEvent], statuses: dict[int, PeriodStatus], policy: str) -> tuple[Ledger, Book, list]:
    config = b.config(periods={"closed": policy})
    calendar = Calendar([*b.months("us", 2026, statuses), *b.months("us", 2027), *b.months("us", 2028),
                         *b.months("eu", 2026, statuses), *b.months("eu", 2027), *b.months("eu", 2028)])
    ledger = Ledger(config, RATES, calendar)
    book = Book()
    posting = ledger.post(events, book)
    return ledger, book, [posting]


def _check_entry(entry: o.JournalEntry, calendar: Calendar) -> None:
    debit = sum(line.debit.amount for line in entry.lines if line.debit)
    credit = sum(line.credit.amount for line in entry.lines if line.credit)
    assert debit == credit, entry
    assert all(line.debit is None or line.credit is None for line in entry.lines)
    if entry.functional_currency != entry.currency:
        fd = sum(line.functional_debit.amount for line in entry.lines if line.functional_debit)
        fc = sum(line.functional_credit.amount for line in entry.lines if line.functional_credit)
        assert fd == fc, entry
    period = calendar.find(entry.legal_entity_id, entry.posting_date)
    assert period is not None and period.id == entry.posting_period
    assert period.status is PeriodStatus.OPEN, f"{entry.id} posted into {period.status} {period.name}"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_entries_balance_totals_match_schedules_sum_and_closed_periods_stay_closed(
    scenario: tuple[list[BillingEvent], dict[int, PeriodStatus], str],
) -> None:
    events, statuses, policy = scenario
    ledger, book, postings = _run(events, statuses, policy)
    released = ledger.release(book, date(2029, 1, 1))
    postings.append(released)
    entries = [e for p in postings for e in p.entries]
    held = [h for p in postings for h in p.held]
    for entry in entries:
        _check_entry(entry, ledger.calendar)
    # Held entries are exactly those whose period was not open: none of them is in `entries`.
    assert all(h.code == "period_closed" for h in held)
    if policy == "move_to_next_open":
        assert held == [] or all("no open period" in h.reason for h in held)

    # Totals per account equal the billing totals, per transaction currency, over everything
    # posted or held (a held entry is still owed to the ERP; it waits for a person).
    everything = entries + [h.entry for h in held if h.entry is not None]
    totals: dict[tuple[str, str], int] = defaultdict(int)
    for (_, currency, account), value in account_totals(everything).items():
        totals[(currency, account)] += value
    expected: dict[tuple[str, str], int] = defaultdict(int)
    paid: dict[str, int] = defaultdict(int)
    entity_of: dict[str, str] = {}
    for entry in everything:
        for document in entry.source_documents:
            entity_of.setdefault(document, entry.legal_entity_id)
    for event in events:
        doc = event.document
        if isinstance(doc, o.Invoice):
            c = doc.currency
            expected[(c, "1200")] += doc.total.amount
            expected[(c, "revenue")] -= doc.subtotal.amount
            expected[(c, "tax")] -= doc.tax.amount
        elif isinstance(doc, o.Payment):
            c = doc.amount.currency
            paid[doc.invoice_id or ""] += doc.amount.amount
            expected[(c, "1150")] += doc.amount.amount
            expected[(c, "1200")] -= doc.amount.amount
        elif isinstance(doc, o.Refund):
            expected[(doc.amount.currency, "1150")] -= doc.amount.amount
            expected[(doc.amount.currency, "4900")] += doc.amount.amount
        elif isinstance(doc, o.Dispute):
            c, amount = doc.amount.currency, doc.amount.amount
            moves = {"dispute.opened": (("1250", amount), ("1150", -amount)),
                     "dispute.won": (("1150", amount), ("1250", -amount)),
                     "dispute.lost": (("6150", amount), ("1250", -amount))}[event.type]
            for account, value in moves:
                expected[(c, account)] += value
        elif isinstance(doc, o.Payout):
            c, net = doc.amount.currency, doc.amount.amount
            fees = doc.fees.amount if doc.fees else 0
            expected[(c, "1000")] += net
            expected[(c, "6100")] += fees
            expected[(c, "1150")] -= net + fees
        elif isinstance(doc, o.CreditMemo):
            c = doc.currency
            lines = sum(line.amount.amount for line in doc.lines)
            expected[(c, "revenue")] += lines
            expected[(c, "tax")] += doc.total.amount - lines
            expected[(c, "2450" if paid[doc.invoice_id or ""] > 0 else "1200")] -= doc.total.amount
    # Consolidated view: the intercompany pair's "due from" and "due to" affiliate balances
    # eliminate each other; what is left is the group's receivable, cash, revenue and tax.
    for currency in CURRENCIES:
        assert totals.get((currency, "1900"), 0) + totals.get((currency, "2900"), 0) == 0
    group = {"4000": "revenue", "4010": "revenue", "2400": "revenue", "2300": "tax", "2310": "tax"}
    merged: dict[tuple[str, str], int] = defaultdict(int)
    for (currency, account), value in totals.items():
        if account not in ("1900", "2900"):
            merged[(currency, group.get(account, account))] += value
    assert {k: v for k, v in merged.items() if v and k[1] != "7990"} == {k: v for k, v in expected.items() if v}

    # Every schedule sums exactly to its line's amount less what credit memos took from it.
    credited: dict[str, int] = defaultdict(int)
    for entry in everything:
        if entry.memo and entry.memo.startswith("credit_memo"):
            for line in entry.lines:
                if line.account == "2400" and line.debit:
                    credited[entry.source_documents[0]] += line.debit.amount
    for event in events:
        if isinstance(event.document, o.Invoice):
            for line in event.document.lines:
                schedule = book.schedules.get(line.id)
                if schedule is not None:
                    assert all(s.released for s in schedule.slices)
    line_amounts = {line.id: line.amount.amount for e in events if isinstance(e.document, o.Invoice)
                    for line in e.document.lines}
    scheduled = sum(sum(s.amount for s in sch.slices) for sch in book.schedules.values())
    original = sum(line_amounts[line_id] for line_id in book.schedules)
    assert scheduled == original - sum(credited.values())

    # Summarising gives the same account totals as the detailed entries.
    summaries = [summary for summary, _, _ in summarise(entries)]
    for summary in summaries:
        _check_entry(summary, ledger.calendar)
    assert account_totals(summaries) == account_totals(entries)


@settings(max_examples=200, deadline=None)
@given(
    amount=st.integers(-10**12, 10**12),
    start=st.dates(date(2025, 1, 1), date(2028, 12, 31)),
    days=st.integers(0, 1100),
    rounding=st.sampled_from(["ROUND_HALF_EVEN", "ROUND_HALF_UP", "ROUND_DOWN", "ROUND_CEILING"]),
    reduction=st.integers(-10**12, 10**12),
    after_days=st.integers(0, 1100),
)
def test_ratable_schedule_sums_exactly_and_reduction_takes_exactly_what_it_reports(
    amount: int, start: date, days: int, rounding: str, reduction: int, after_days: int,
) -> None:
    from syncline.ledger.schedules import ratable, reduce_remaining

    calendar = Calendar(b.months("us", 2025) + b.months("us", 2026))  # months elsewhere
    slices = calendar.schedule_periods("us", start, start + timedelta(days=days))
    assert sum((last - first).days + 1 for _, first, last in slices) == days + 1
    schedule = ratable("l", amount, slices, rounding)
    assert sum(s.amount for s in schedule) == amount
    assert [s.period for s in schedule] == [period for period, _, _ in slices]
    reduced, taken = reduce_remaining(schedule, reduction, start + timedelta(days=after_days))
    assert sum(s.amount for s in reduced) == amount - taken
    assert abs(taken) <= abs(reduction)
    untouched = [a == b_ for a, b_ in zip(schedule, reduced, strict=True) if a.end < start + timedelta(days=after_days)]
    assert all(untouched)
