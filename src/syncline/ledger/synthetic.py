"""Synthetic billing volume for the ledger's benchmark and volume tests (deterministic per seed)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from syncline.canonical import objects as o
from syncline.canonical.money import Money
from syncline.ledger.engine import BillingEvent
from syncline.ledger.fx import Rate, RateTable

_SOURCE = o.SourceRef(system="synthetic", object_type="invoice", external_id="-")


def invoices(count: int, *, start: date = date(2026, 11, 1), days: int = 30, seed: int = 7) -> list[BillingEvent]:
    """Return ``count`` issued invoices over ``days`` days in USD, EUR and GBP.

    A third of the lines are subscriptions with a service period (deferred revenue), half carry
    tax; customers in Germany pay in EUR (routed to the ``eu`` entity), the others in USD or GBP.
    """
    rng = random.Random(seed)
    out: list[BillingEvent] = []
    for n in range(count):
        currency = rng.choice(("USD", "USD", "EUR", "GBP"))
        day = start + timedelta(days=rng.randrange(days))
        issued = datetime(day.year, day.month, day.day, rng.randrange(24), tzinfo=UTC)
        lines: list[o.InvoiceLine] = []
        for k in range(rng.randint(1, 3)):
            amount = rng.randint(100, 500_000)
            taxes = []
            if rng.random() < 0.5:
                code, jurisdiction = ("DE_VAT", "DE") if currency == "EUR" else ("US_CA", "US")
                taxes = [o.TaxLine(amount=Money(amount=amount * 19 // 100, currency=currency), tax_code=code,
                                   jurisdiction=jurisdiction)]
            period = None
            if rng.random() < 0.33:
                period = o.ServicePeriod(start=day, end=day + timedelta(days=rng.choice((30, 90, 365))))
            lines.append(o.InvoiceLine(
                id=f"syn_{n}_{k}", amount=Money(amount=amount, currency=currency), taxes=taxes, period=period,
                product_id=rng.choice(("prod_api", "prod_seat", None)),
            ))
        subtotal = sum(line.amount.amount for line in lines)
        tax = sum(t.amount.amount for line in lines for t in line.taxes)
        invoice = o.Invoice(
            id=f"syn_in_{n}", source=_SOURCE, account_id=f"acct_{rng.randrange(500)}", status=o.InvoiceStatus.OPEN,
            currency=currency, subtotal=Money(amount=subtotal, currency=currency),
            tax=Money(amount=tax, currency=currency), total=Money(amount=subtotal + tax, currency=currency),
            amount_paid=Money.zero(currency), amount_due=Money(amount=subtotal + tax, currency=currency),
            issued_at=issued, lines=lines, legal_entity_id="DE01" if currency == "EUR" else None,
        )
        out.append(BillingEvent("invoice.issued", invoice, issued))
    out.sort(key=lambda event: event.time)
    return out


def rates(start: date = date(2026, 10, 1), days: int = 120) -> RateTable:
    """Daily EUR, GBP and USD cross rates from ``start`` (a slow deterministic drift)."""
    table = RateTable()
    for offset in range(days):
        day = start + timedelta(days=offset)
        drift = Decimal(offset % 17) / 10_000
        table.add(Rate(day, "EUR", "USD", Decimal("1.0850") + drift))
        table.add(Rate(day, "GBP", "USD", Decimal("1.2700") - drift))
        table.add(Rate(day, "USD", "EUR", Decimal("0.9210") + drift))
        table.add(Rate(day, "GBP", "EUR", Decimal("1.1690") + drift))
    return table
