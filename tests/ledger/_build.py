"""Builders of canonical billing documents and the test ledger configuration."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from syncline.canonical import objects as o
from syncline.canonical.money import Money
from syncline.ledger import BillingEvent, Calendar, Ledger, LedgerConfig, Period, PeriodStatus, Rate, RateTable

DATA = Path(__file__).parent / "data"


def config(**overrides: Any) -> LedgerConfig:
    """The ledger configuration of tests/ledger/data/ledger.yaml with top-level overrides."""
    raw = yaml.safe_load((DATA / "ledger.yaml").read_text())
    raw.update(overrides)
    return LedgerConfig.model_validate(raw)


def raw_config() -> dict[str, Any]:
    return dict(yaml.safe_load((DATA / "ledger.yaml").read_text()))


def src(kind: str, ident: str) -> o.SourceRef:
    return o.SourceRef(system="stripe", object_type=kind, external_id=ident)


def at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def m(amount: int, currency: str) -> Money:
    return Money(amount=amount, currency=currency)


def line(ident: str, amount: int, currency: str, *, tax: int = 0, tax_code: str | None = None,
         jurisdiction: str | None = None, period: tuple[date, date] | None = None,
         product: str | None = None) -> o.InvoiceLine:
    taxes = [o.TaxLine(amount=m(tax, currency), tax_code=tax_code, jurisdiction=jurisdiction)] if tax else []
    return o.InvoiceLine(
        id=ident, amount=m(amount, currency), product_id=product, taxes=taxes,
        period=o.ServicePeriod(start=period[0], end=period[1]) if period else None,
    )


def invoice(ident: str, currency: str, lines: list[o.InvoiceLine], *, issued: date, account: str = "acct_1",
            company_code: str | None = None) -> o.Invoice:
    subtotal = sum(item.amount.amount for item in lines)
    tax = sum(t.amount.amount for item in lines for t in item.taxes)
    return o.Invoice(
        id=ident, source=src("invoice", ident), account_id=account, status=o.InvoiceStatus.OPEN, currency=currency,
        subtotal=m(subtotal, currency), tax=m(tax, currency), total=m(subtotal + tax, currency),
        amount_paid=m(0, currency), amount_due=m(subtotal + tax, currency), issued_at=at(issued), lines=lines,
        legal_entity_id=company_code,
    )


def payment(ident: str, invoice_id: str | None, amount: int, currency: str, *, paid: date,
            account: str = "acct_1") -> o.Payment:
    return o.Payment(id=ident, source=src("payment", ident), account_id=account, invoice_id=invoice_id,
                     amount=m(amount, currency), amount_refunded=m(0, currency), status=o.PaymentStatus.SUCCEEDED,
                     paid_at=at(paid))


def refund(ident: str, payment_id: str, amount: int, currency: str, *, on: date) -> o.Refund:
    return o.Refund(id=ident, source=src("refund", ident), payment_id=payment_id, amount=m(amount, currency),
                    refunded_at=at(on))


def credit_memo(ident: str, invoice_id: str, currency: str, lines: list[tuple[str | None, int]], *, tax: int = 0,
                on: date, account: str = "acct_1") -> o.CreditMemo:
    items = [o.CreditMemoLine(id=f"{ident}_l{n}", amount=m(amount, currency), invoice_line_id=target)
             for n, (target, amount) in enumerate(lines)]
    total = sum(amount for _, amount in lines) + tax
    return o.CreditMemo(id=ident, source=src("credit_memo", ident), account_id=account, invoice_id=invoice_id,
                        currency=currency, total=m(total, currency), issued_at=at(on), lines=items)


def payout(ident: str, net: int, fees: int, currency: str, *, on: date) -> o.Payout:
    return o.Payout(id=ident, source=src("payout", ident), amount=m(net, currency), fees=m(fees, currency),
                    arrival_date=on, paid_at=at(on))


def dispute(ident: str, payment_id: str, amount: int, currency: str, *, on: date) -> o.Dispute:
    return o.Dispute(id=ident, source=src("dispute", ident), payment_id=payment_id, amount=m(amount, currency),
                     status=o.DisputeStatus.OPEN, opened_at=at(on))


def event(kind: str, document: Any, when: date | None = None) -> BillingEvent:
    """A billing event; the time defaults to the document's own date."""
    moment = at(when) if when else (
        getattr(document, "issued_at", None) or getattr(document, "paid_at", None)
        or getattr(document, "refunded_at", None) or getattr(document, "opened_at", None)
    )
    assert moment is not None
    return BillingEvent(kind, document, moment)


def rates() -> RateTable:
    """EUR→USD and GBP→USD/EUR rates over November and December 2026."""
    table = RateTable()
    for day in range(1, 31):
        table.add(Rate(date(2026, 11, day), "EUR", "USD", Decimal("1.0831") + Decimal(day) / 10_000))
        table.add(Rate(date(2026, 11, day), "GBP", "USD", Decimal("1.2712")))
        table.add(Rate(date(2026, 11, day), "GBP", "EUR", Decimal("1.1703")))
        table.add(Rate(date(2026, 11, day), "USD", "EUR", Decimal("0.9218")))
    for day in range(1, 32):
        table.add(Rate(date(2026, 12, day), "EUR", "USD", Decimal("1.0912")))
        table.add(Rate(date(2026, 12, day), "USD", "EUR", Decimal("0.9164")))
        table.add(Rate(date(2026, 12, day), "GBP", "USD", Decimal("1.2690")))
        table.add(Rate(date(2026, 12, day), "GBP", "EUR", Decimal("1.1625")))
    return table


def months(entity: str, year: int, statuses: dict[int, PeriodStatus] | None = None) -> list[Period]:
    """Monthly periods of ``entity`` for ``year``, open unless ``statuses`` says otherwise."""
    out = []
    for month in range(1, 13):
        start = date(year, month, 1)
        end = date(year + (month == 12), month % 12 + 1, 1).toordinal() - 1
        status = (statuses or {}).get(month, PeriodStatus.OPEN)
        out.append(Period(entity, f"{entity}-{year}-{month:02d}", start.strftime("%b %Y"), start,
                          date.fromordinal(end), status))
    return out


def calendar(statuses: dict[int, PeriodStatus] | None = None) -> Calendar:
    return Calendar([*months("us", 2026, statuses), *months("us", 2027), *months("eu", 2026, statuses),
                     *months("eu", 2027)])


def ledger(**overrides: Any) -> Ledger:
    return Ledger(config(**overrides), rates(), calendar())
