"""The worked example of docs/ledger.md: a two-entity, multi-currency November, posted by the engine.

The tables in the doc are generated here; ``test_worked_example.py`` fails when they drift from
what the engine produces. Regenerate them with ``python -m tests.ledger.worked_example --write``.
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

from syncline.canonical import objects as o
from syncline.canonical.money import Money
from syncline.ledger import Book, Ledger, PeriodStatus, account_totals
from syncline.ledger.engine import BillingEvent

from . import _build as b

DOC = Path(__file__).resolve().parents[2] / "docs" / "ledger.md"
START, END = "<!-- ledger-example:start -->", "<!-- ledger-example:end -->"
YEAR_LATER = date(2027, 11, 16)


def story() -> list[tuple[str, list[BillingEvent]]]:
    """The month's business events, in order, with the sentence the doc shows for each."""
    annual = b.invoice("in_1001", "USD", [
        b.line("il_1001_1", 1_200_000, "USD", period=(date(2026, 11, 16), YEAR_LATER), product="prod_api"),
    ], issued=date(2026, 11, 16), account="acct_acme")
    annual_paid = b.payment("py_1001", "in_1001", 1_200_000, "USD", paid=date(2026, 11, 16), account="acct_acme")
    # Upgrade on 23 Nov: credit for unused Pro time, charge for Enterprise for the rest of the year.
    upgrade = b.invoice("in_1002", "USD", [
        b.line("il_1002_1", -1_163_836, "USD", period=(date(2026, 11, 23), YEAR_LATER), product="prod_api"),
        b.line("il_1002_2", 1_745_753, "USD", period=(date(2026, 11, 23), YEAR_LATER), product="prod_api"),
    ], issued=date(2026, 11, 23), account="acct_acme")
    upgrade_paid = b.payment("py_1002", "in_1002", 581_917, "USD", paid=date(2026, 11, 23), account="acct_acme")
    monthly = b.invoice("in_2001", "EUR", [
        b.line("il_2001_1", 50_000, "EUR", tax=9_500, tax_code="DE_VAT", jurisdiction="DE",
               period=(date(2026, 11, 3), date(2026, 12, 3))),
    ], issued=date(2026, 11, 3), account="acct_kunde")
    failed = o.Payment(id="py_2001a", source=b.src("payment", "py_2001a"), account_id="acct_kunde",
                       invoice_id="in_2001", amount=b.m(59_500, "EUR"), amount_refunded=b.m(0, "EUR"),
                       status=o.PaymentStatus.FAILED, paid_at=b.at(date(2026, 11, 3)), failure_reason="card_declined")
    recovered = b.payment("py_2001b", "in_2001", 59_500, "EUR", paid=date(2026, 11, 6), account="acct_kunde")
    refund = b.refund("re_2001", "py_2001b", 5_950, "EUR", on=date(2026, 11, 20))
    late = b.invoice("in_0999", "USD", [b.line("il_0999_1", 45_000, "USD")], issued=date(2026, 10, 31),
                     account="acct_acme")
    payout = o.Payout(id="po_1101", source=b.src("payout", "po_1101"), amount=b.m(1_745_335, "USD"),
                      fees=b.m(36_582, "USD"), arrival_date=date(2026, 11, 25), paid_at=b.at(date(2026, 11, 25)))
    return [
        ("3 Nov: Kunde GmbH (Germany) is invoiced a month of service, EUR 500.00 + 19 % VAT",
         [b.event("invoice.issued", monthly)]),
        ("3 Nov: the card payment fails (nothing to post); 6 Nov: the retry succeeds. The card cash lands in "
         "the US entity's processor balance, so the rule's intercompany pair applies",
         [b.event("payment.failed", failed), b.event("payment.succeeded", recovered)]),
        ("16 Nov: Acme Inc. buys an annual subscription, USD 12,000.00, paid at once",
         [b.event("invoice.issued", annual), b.event("payment.succeeded", annual_paid)]),
        ("20 Nov: Kunde GmbH gets a partial refund of EUR 59.50",
         [b.event("refund.succeeded", refund)]),
        ("23 Nov: Acme upgrades to Enterprise; the proration invoice credits unused Pro time and charges "
         "Enterprise for the rest of the year",
         [b.event("invoice.issued", upgrade), b.event("payment.succeeded", upgrade_paid)]),
        ("24 Nov: an October invoice arrives late; October is closed, so policy moves it to November",
         [BillingEvent("invoice.issued", late, b.at(date(2026, 11, 24)))]),
        ("25 Nov: Stripe pays out USD 17,453.35 after USD 365.82 fees",
         [b.event("payout.paid", payout)]),
    ]


def _amount(money: Money | None) -> str:
    return f"{money.to_decimal():,}" if money is not None else ""


def _entry_table(entry: o.JournalEntry) -> list[str]:
    head = (f"**{entry.id}** · entity `{entry.legal_entity_id}` · {entry.posting_date} · period "
            f"`{entry.posting_period}` · {entry.currency}")
    if entry.exchange_rate:
        head += f" → {entry.functional_currency} at {entry.exchange_rate} (rate of {entry.rate_date})"
    out = [head, "", f"_{entry.memo}_", ""]
    converted = entry.functional_currency != entry.currency
    columns = ["account", "debit", "credit"] + (
        [f"debit {entry.functional_currency}", f"credit {entry.functional_currency}"] if converted else []) + [
        "source"]
    out.append("| " + " | ".join(columns) + " |")
    out.append("|" + "|".join("---:" if c.startswith(("debit", "credit")) else "---" for c in columns) + "|")
    for line in entry.lines:
        cells = [line.account, _amount(line.debit), _amount(line.credit)]
        if converted:
            cells += [_amount(line.functional_debit), _amount(line.functional_credit)]
        cells.append(line.source_document or (line.memo or ""))
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    return out


def render() -> str:
    """Post the story with the test configuration and return the doc's markdown section."""
    ledger = Ledger(b.config(), b.rates(), b.calendar({10: PeriodStatus.CLOSED}))
    book = Book()
    note = "<!-- generated by `python -m tests.ledger.worked_example --write`; do not edit -->"
    out: list[str] = [START, "", note, ""]
    everything: list[o.JournalEntry] = []
    for sentence, events in story():
        posting = ledger.post(events, book)
        assert not posting.held, posting.held
        out += [f"#### {sentence}", ""]
        for entry in posting.entries:
            out += _entry_table(entry)
        everything += posting.entries
    release = ledger.release(book, date(2026, 11, 30))
    out += ["#### 30 Nov: month end releases November's share of every revenue schedule", ""]
    for entry in release.entries:
        out += _entry_table(entry)
    everything += release.entries
    out += ["#### November account balances (transaction currency, debit positive)", "",
            "| entity | currency | account | balance |", "|---|---|---|---:|"]
    for (entity, currency, account), value in sorted(account_totals(everything).items()):
        out.append(f"| {entity} | {currency} | {account} | {Money(amount=value, currency=currency).to_decimal():,} |")
    out += ["", "Revenue schedules after month end (remaining = not yet released):", "",
            "| line | total | released | remaining | periods |", "|---|---:|---:|---:|---:|"]
    for line_id, schedule in sorted(book.schedules.items()):
        total = sum(s.amount for s in schedule.slices)
        released = sum(s.amount for s in schedule.slices if s.released)
        amounts = [f"{Money(amount=v, currency=schedule.currency).to_decimal():,} {schedule.currency}"
                   for v in (total, released, total - released)]
        out.append(f"| {line_id} | {' | '.join(amounts)} | {len(schedule.slices)} |")
    out += ["", END]
    return "\n".join(out)


def section(text: str) -> str:
    """Return the generated section of ``text`` (markers included)."""
    start, end = text.index(START), text.index(END) + len(END)
    return text[start:end]


def main(argv: list[str]) -> None:
    if "--write" in argv:
        text = DOC.read_text()
        DOC.write_text(text.replace(section(text), render()))
        print(f"wrote {DOC}")
    else:
        print(render())


if __name__ == "__main__":
    main(sys.argv[1:])
