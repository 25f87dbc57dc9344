"""The conformance Harness for NetSuite, and canonical builders the NetSuite tests share.

The connector runs against the real NetSuiteSandbox on a localhost port, with full OAuth 1.0a
signature checks. Counts scan the sandbox's records for the external id (not its index), so a
duplicate cannot hide; ``stored`` is the record's fields as the sandbox holds them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal

import pytest
from pydantic import SecretStr
from tests.connectors.conformance import OutboundCase, WebhookCase

from syncline.canonical.money import Money
from syncline.canonical.objects import (
    Account,
    CreditMemo,
    CreditMemoLine,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    JournalEntry,
    JournalLine,
    OrderLine,
    Payment,
    PaymentApplication,
    PaymentStatus,
    Payout,
    Refund,
    SalesOrder,
    SourceRef,
)
from syncline.connectors.base import ConnectionSettings
from syncline.connectors.netsuite import NetSuiteConnector, NetSuiteSandbox
from syncline.sandbox import ServerThread

SECRETS = {"consumer_key": "ck_conf", "consumer_secret": "cs_conf", "token_id": "tk_conf", "token_secret": "ts_conf"}
ACCOUNT_ID = "TSTDRV2"
WHEN = datetime(2024, 3, 5, 12, 30, tzinfo=UTC)
#: Options of a OneWorld account: a German subsidiary, mapped currencies, terms and GL accounts.
OPTIONS: dict[str, Any] = {
    "account_id": ACCOUNT_ID,
    "subsidiary_id": "1",
    "subsidiaries": {"le_de": "2", "le_ghost": "99"},
    "currencies": {"USD": "1", "EUR": "4"},
    "payment_terms": {"30": "2", "15": "1"},
    "default_payment_terms": 30,
    "accounts": {"1100": "6", "4000": "54", "2200": "67"},
    "deposit_account_id": "1",
    "payout_clearing_account_id": "2",
    "payout_fee_account_id": "71",
    "line_source_field": "custcol_syncline_source",
}


def connector(url: str, secrets: Mapping[str, str] = SECRETS, **options: Any) -> NetSuiteConnector:
    """Return a NetSuite connector for the sandbox at ``url`` (``options`` override :data:`OPTIONS`)."""
    return NetSuiteConnector(ConnectionSettings(
        name="netsuite", vendor="netsuite", base_url=url,
        secrets={key: SecretStr(value) for key, value in secrets.items()},
        options={**OPTIONS, **options},
    ))


# -- canonical builders -----------------------------------------------------------------------
def usd(amount: int) -> Money:
    return Money(amount=amount, currency="USD")


def source(kind: str, ext: str) -> SourceRef:
    return SourceRef(system="stripe", object_type=kind, external_id=ext)


def account(id: str = "account_a1", name: str = "Acme GmbH", legal_entity_id: str | None = "le_de") -> Account:
    return Account(id=id, source=source("customer", "cus_1"), name=name, email="ap@acme.test", currency="USD",
                   legal_entity_id=legal_entity_id)


def sales_order(id: str = "sales_order_s1", quantity: int = 3) -> SalesOrder:
    return SalesOrder(
        id=id, source=source("opportunity", "opp_1"), account_id="account_a1", currency="USD",
        order_date=date(2024, 3, 1), legal_entity_id="le_de", memo="Closed-won Acme",
        lines=[OrderLine(id="ol_1", product_id="prod_pro", description="Pro plan", quantity=quantity,
                         unit_amount=usd(10000), service_start=date(2024, 3, 1), service_end=date(2025, 2, 28))],
    )


def invoice(id: str = "invoice_i1", amount: int = 1999, *, issued_at: datetime = WHEN) -> Invoice:
    return Invoice(
        id=id, source=source("invoice", "in_1"), account_id="account_a1", number="INV-0001",
        status=InvoiceStatus.OPEN, currency="USD", subtotal=usd(amount), tax=usd(0), total=usd(amount),
        amount_paid=usd(0), amount_due=usd(amount), issued_at=issued_at, due_date=date(2024, 4, 4),
        lines=[InvoiceLine(id="il_1", description="Pro plan", amount=usd(amount), quantity=1)],
        legal_entity_id="le_de",
    )


def payment(id: str = "payment_p1", invoice_id: str | None = "invoice_i1", amount: int = 1999,
            applications: Sequence[tuple[str, int]] = (), account_id: str = "account_a1") -> Payment:
    return Payment(
        id=id, source=source("charge", "ch_1"), account_id=account_id, invoice_id=invoice_id, amount=usd(amount),
        amount_refunded=usd(0), status=PaymentStatus.SUCCEEDED, paid_at=WHEN, method="card",
        applications=[PaymentApplication(invoice_id=invoice, amount=usd(part)) for invoice, part in applications],
    )


def credit_memo(id: str = "credit_memo_c1", reason: str = "goodwill") -> CreditMemo:
    return CreditMemo(
        id=id, source=source("credit_note", "cn_1"), account_id="account_a1", invoice_id="invoice_i1",
        currency="USD", total=usd(500), reason=reason, issued_at=WHEN,
        lines=[CreditMemoLine(id="cnl_1", description="Goodwill", amount=usd(500))],
    )


def refund(id: str = "refund_r1", amount: int = 1000) -> Refund:
    return Refund(id=id, source=source("refund", "re_1"), payment_id="payment_p1", account_id="account_a1",
                  amount=usd(amount), refunded_at=WHEN)


def payout(id: str = "payout_o1", net: int = 97000, fees: int | None = 3000) -> Payout:
    return Payout(id=id, source=source("payout", "po_1"), amount=usd(net), fees=None if fees is None else usd(fees),
                  arrival_date=date(2024, 3, 7), paid_at=WHEN)


def journal_entry(id: str = "journal_entry_j1", amount: int = 10000, *, credit: int | None = None,
                  posting_date: date = date(2024, 3, 31), **extra: Any) -> JournalEntry:
    return JournalEntry(
        id=id, legal_entity_id="le_de", currency="USD", posting_date=posting_date, memo="Revenue March",
        lines=[
            JournalLine(account="1100", debit=usd(amount), memo="AR", source_document="invoice_i1"),
            JournalLine(account="4000", credit=usd(amount if credit is None else credit), memo="Revenue",
                        source_document="invoice_i1"),
        ],
        **extra,
    )


def dump(obj: Any) -> dict[str, Any]:
    return dict(obj.model_dump(mode="json"))


# -- the harness ------------------------------------------------------------------------------
#: operation → (NetSuite record type, "does this stored record reflect the update?")
_RECORDS: dict[str, tuple[str, Callable[[Mapping[str, Any]], bool]]] = {
    "upsert_customer": ("customer", lambda r: r["companyName"] == "Acme Europe GmbH"),
    # Line checks also prove the update replaced the sublist instead of appending to it.
    "upsert_sales_order": ("salesOrder", lambda r: [line["quantity"] for line in r["item"]["items"]] == [5]),
    "upsert_invoice": ("invoice", lambda r: [line["amount"] for line in r["item"]["items"]] == [Decimal("29.99")]),
    "upsert_customer_payment": (
        "customerPayment", lambda r: [line["amount"] for line in r["apply"]["items"]] == [Decimal("10.00")]),
    "upsert_credit_memo": ("creditMemo", lambda r: r["memo"] == "stripe cn_1 (billing error)"),
    "upsert_customer_refund": (
        "customerRefund", lambda r: [line["amount"] for line in r["apply"]["items"]] == [Decimal("5.00")]),
    "upsert_deposit": ("deposit", lambda r: [line["amount"] for line in r["cashBack"]["items"]] == [Decimal("35.00")]),
    "post_journal_entry": ("journalEntry", lambda r: [line.get("debit") for line in r["line"]["items"]]
                           == [Decimal("120.00"), None]),
}


def outbound_cases() -> list[OutboundCase]:
    """One case per operation, in dependency order (customer, then what refers to it)."""
    return [
        OutboundCase("upsert_customer", dump(account()), dump(account(name="Acme Europe GmbH")), "ns-customer"),
        OutboundCase("upsert_sales_order", dump(sales_order()), dump(sales_order(quantity=5)), "ns-order"),
        OutboundCase("upsert_invoice", dump(invoice()), dump(invoice(amount=2999)), "ns-invoice"),
        OutboundCase("upsert_customer_payment", dump(payment()),
                     dump(payment(applications=[("invoice_i1", 1000)])), "ns-payment"),
        OutboundCase("upsert_credit_memo", dump(credit_memo()), dump(credit_memo(reason="billing error")), "ns-cm"),
        OutboundCase("upsert_customer_refund", dump(refund()), dump(refund(amount=500)), "ns-refund"),
        OutboundCase("upsert_deposit", dump(payout()), dump(payout(net=96500, fees=3500)), "ns-deposit"),
        OutboundCase("post_journal_entry", dump(journal_entry()), dump(journal_entry(amount=12000)), "ns-journal"),
    ]


class NetSuiteHarness:
    """Drive the NetSuite connector against a running NetSuiteSandbox (see ``tests.connectors.conformance``).

    NetSuite has no webhooks in this connector (``webhook_cases`` is empty, so the signature and
    decode tests skip) and no event catch-up (``seed_events`` skips); the REST record API
    writes one record per request, so there is no batch operation.
    """

    webhook_cases: Sequence[WebhookCase] = ()
    batch_operation = None
    catch_up_page_size = 1000

    def __init__(self, sandbox: NetSuiteSandbox, url: str) -> None:
        self.sandbox = sandbox
        self.connector = connector(url)
        self.outbound_cases: Sequence[OutboundCase] = outbound_cases()
        # The ledger placed the entry in a posting period NetSuite does not have. (A payment
        # applied to a missing invoice is DependencyMissingError, retried: with out-of-order
        # webhooks the invoice may simply not be synced yet.)
        missing_period = dump(journal_entry("journal_entry_nf", posting_period="999999"))
        self.not_found_case: OutboundCase | None = OutboundCase(
            "post_journal_entry", missing_period, missing_period, "ns-not-found")
        # Its legal entity maps to subsidiary 99, which the account does not have.
        ghost = dump(account("account_ghost", legal_entity_id="le_ghost"))
        self.invalid_case: OutboundCase | None = OutboundCase("upsert_customer", ghost, ghost, "ns-invalid")

    def sign(self, body: bytes, *, timestamp: float) -> dict[str, str]:
        raise NotImplementedError("NetSuite sends no webhooks to this connector")

    def signature_headers(self) -> Sequence[str]:
        return []

    def _records(self, case: OutboundCase) -> list[dict[str, Any]]:
        record_type, _ = _RECORDS[case.operation]
        return self.sandbox.records_with_external_id(record_type, str(case.create["id"]))

    def count(self, case: OutboundCase) -> int:
        return len(self._records(case))

    def stored(self, case: OutboundCase) -> Mapping[str, Any]:
        (record,) = self._records(case)
        fields: Mapping[str, Any] = record["fields"]
        return fields

    def changed(self, case: OutboundCase, record: Mapping[str, Any]) -> bool:
        _, reflects_update = _RECORDS[case.operation]
        return reflects_update(record)

    def inject(self, fault: Literal["rate_limit", "server_error", "auth"], *,
               retry_after: float | None = None) -> None:
        self.sandbox.fail_next(fault, retry_after=retry_after)

    def seed_events(self, n: int) -> Sequence[str] | None:
        pytest.skip("NetSuite has no event catch-up in this connector")

    def batch_items(self) -> list[tuple[str, Mapping[str, Any]]]:
        return []


@contextmanager
def served_sandbox(**options: Any) -> Iterator[tuple[NetSuiteSandbox, str]]:
    """Serve a NetSuiteSandbox checking the harness's credentials; stop the server after."""
    sandbox = NetSuiteSandbox(account_id=ACCOUNT_ID, credentials=SECRETS, **options)
    with ServerThread(sandbox.app) as server:
        yield sandbox, server.url
