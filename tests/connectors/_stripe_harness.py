"""The conformance Harness for Stripe: the real StripeSandbox on a localhost port, Stripe's own fixtures.

Webhook bodies wrap Stripe's sample objects (``tests/data/stripe/fixtures3.json``, copied from
Stripe's OpenAPI repository under the MIT licence in ``LICENSE`` beside it) in an event envelope.
Counts and stored records are read through the sandbox's List endpoints and filtered here, not
through the Search API the connector itself uses, so a search bug cannot hide a duplicate.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import SecretStr
from tests.connectors.conformance import OutboundCase, WebhookCase

from syncline.canonical import CloudEvent
from syncline.connectors.base import ConnectionSettings
from syncline.connectors.stripe import StripeConnector, StripeSandbox
from syncline.connectors.stripe.inbound import StripeSignature
from syncline.sandbox import ServerThread

KEY = "sk_test_51ConformanceKey000000000000"
WHSEC = "whsec_conformance_secret_0123456789"
CONNECTION = "stripe"
DATA = Path(__file__).parent.parent / "data" / "stripe"
FIXTURES: dict[str, dict[str, Any]] = json.loads((DATA / "fixtures3.json").read_text())["resources"]

#: canonical object_type → (Stripe list path, extra list filters) for counting records
_LISTS = {
    "upsert_customer": ("/v1/customers", {}),
    "upsert_product": ("/v1/products", {}),
    "upsert_price": ("/v1/prices", {"active": "true"}),
    "upsert_subscription": ("/v1/subscriptions", {}),
    "upsert_invoice": ("/v1/invoices", {}),
    "create_credit_note": ("/v1/credit_notes", {}),
}


def fixture(kind: str, **changes: Any) -> dict[str, Any]:
    """Return a deep copy of Stripe's sample ``kind`` object with ``changes`` applied."""
    obj = copy.deepcopy(FIXTURES[kind])
    obj.update(changes)
    return obj


def envelope(event_type: str, obj: Mapping[str, Any], *, event_id: str = "evt_1Conformance00000000001",
             created: int = 1721954054) -> bytes:
    """Wrap ``obj`` in the event Stripe POSTs to a webhook endpoint."""
    event = {
        "id": event_id, "object": "event", "api_version": "2024-06-20", "created": created,
        "data": {"object": obj}, "livemode": False, "pending_webhooks": 1,
        "request": {"id": "req_1Conformance", "idempotency_key": None}, "type": event_type,
    }
    return json.dumps(event).encode()


def _check_data(**expected: Any) -> Callable[[list[CloudEvent]], None]:
    def check(events: list[CloudEvent]) -> None:
        for key, value in expected.items():
            actual = events[0].data
            for part in key.split("__"):
                actual = actual[int(part)] if isinstance(actual, list) else actual[part]
            assert actual == value, (key, actual, value)
    return check


def webhook_cases() -> list[WebhookCase]:
    """One case per Stripe event type the connector routes, plus one it records without routing."""
    sub, dispute, price = FIXTURES["subscription"], FIXTURES["dispute"], FIXTURES["price"]
    cases = [
        ("customer.created", fixture("customer"), ["account.created"], None),
        ("customer.updated", fixture("customer"), ["account.updated"], None),
        ("customer.deleted", fixture("customer"), ["account.deleted"], _check_data(deleted=True)),
        ("invoice.finalized", fixture("invoice"), ["invoice.issued"], None),
        ("invoice.paid", fixture("invoice", status="paid"), ["invoice.paid"], None),
        ("invoice.voided", fixture("invoice", status="void"), ["invoice.voided"], None),
        ("invoice.marked_uncollectible", fixture("invoice", status="uncollectible"), ["invoice.uncollectible"],
         None),
        ("charge.succeeded", fixture("charge"), ["payment.succeeded"], None),
        ("charge.failed", fixture("charge", status="failed"), ["payment.failed"], None),
        ("credit_note.created", fixture("credit_note"), ["credit_memo.issued"], None),
        ("payout.paid", fixture("payout"), ["payout.paid"], None),
        ("customer.subscription.created", fixture("subscription"), ["subscription.activated"],
         _check_data(status="active", currency="USD", items__0__quantity=sub["items"]["data"][0]["quantity"])),
        ("customer.subscription.updated", fixture("subscription", status="past_due"), ["subscription.updated"],
         _check_data(status="past_due")),
        ("customer.subscription.deleted", fixture("subscription", status="canceled"), ["subscription.canceled"],
         _check_data(status="canceled")),
        ("charge.dispute.created", fixture("dispute"), ["dispute.opened"],
         _check_data(status="open", amount__amount=dispute["amount"])),
        ("charge.dispute.closed", fixture("dispute", status="won"), ["dispute.won"], _check_data(status="won")),
        ("charge.dispute.closed", fixture("dispute", status="lost"), ["dispute.lost"], _check_data(status="lost")),
        ("product.created", fixture("product"), ["product.created"], _check_data(name=FIXTURES["product"]["name"])),
        ("product.updated", fixture("product", active=False), ["product.updated"], _check_data(active=False)),
        ("price.created", fixture("price"), ["price.created"],
         _check_data(unit_amount__amount=price["unit_amount"], interval="month")),
        ("price.updated", fixture("price", active=False), ["price.updated"], None),
        ("balance.available", {"object": "balance", "available": []}, [], None),
    ]
    return [
        WebhookCase(name=f"{kind} #{index}", body=envelope(kind, obj, event_id=f"evt_1Conformance{index:011d}"),
                    expected_types=types, check=check)
        for index, (kind, obj, types, check) in enumerate(cases)
    ]


def _account(name: str, **extra: Any) -> dict[str, Any]:
    return {"object_type": "account", "id": "acc_conformance_1",
            "source": {"system": "salesforce", "object_type": "Account", "external_id": "001A"},
            "name": name, "email": "billing@acme.test", "tax_exempt": False, **extra}


def _product(name: str) -> dict[str, Any]:
    return {"object_type": "product", "id": "prd_conformance_1",
            "source": {"system": "salesforce", "object_type": "Product2", "external_id": "01tA"},
            "name": name, "active": True, "sku": "SEAT-1"}


def _price(amount: int) -> dict[str, Any]:
    return {"object_type": "price", "id": "pri_conformance_1",
            "source": {"system": "salesforce", "object_type": "PricebookEntry", "external_id": "01uA"},
            "product_id": "prd_conformance_1", "unit_amount": {"amount": amount, "currency": "EUR"},
            "interval": "month", "interval_count": 1}


def _subscription(quantity: int, *, account: str = "acc_conformance_1") -> dict[str, Any]:
    return {"object_type": "subscription", "id": "sub_conformance_1",
            "source": {"system": "salesforce", "object_type": "Contract", "external_id": "800A"},
            "account_id": account, "status": "active", "currency": "EUR",
            "items": [{"price_id": "pri_conformance_1", "quantity": quantity}]}


def _invoice(status: str) -> dict[str, Any]:
    money = {"amount": 0, "currency": "EUR"}
    lines = [
        {"id": "inl_conformance_1", "description": "Seats, November", "amount": {"amount": 12000, "currency": "EUR"},
         "quantity": 10, "period": {"start": "2026-11-01", "end": "2026-11-30"}},
        {"id": "inl_conformance_2", "description": "Onboarding", "amount": {"amount": 50000, "currency": "EUR"}},
    ]
    return {"object_type": "invoice", "id": "inv_conformance_1",
            "source": {"system": "netsuite", "object_type": "invoice", "external_id": "9001"},
            "account_id": "acc_conformance_1", "number": "INV-9001", "status": status, "currency": "EUR",
            "due_date": "2026-12-15",
            "subtotal": {"amount": 62000, "currency": "EUR"}, "tax": money,
            "total": {"amount": 62000, "currency": "EUR"}, "amount_paid": money,
            "amount_due": {"amount": 62000, "currency": "EUR"}, "lines": lines}


def _credit_memo(reason: str) -> dict[str, Any]:
    return {"object_type": "credit_memo", "id": "crm_conformance_1",
            "source": {"system": "netsuite", "object_type": "creditmemo", "external_id": "9100"},
            "account_id": "acc_conformance_1", "invoice_id": "inv_conformance_1", "currency": "EUR",
            "total": {"amount": 5000, "currency": "EUR"}, "reason": reason, "issued_at": "2026-11-20T10:00:00Z",
            "lines": [{"id": "cml_conformance_1", "description": "Goodwill", "amount": {"amount": 5000,
                                                                                       "currency": "EUR"}}]}


def outbound_cases() -> list[OutboundCase]:
    """One case per operation, in dependency order (a subscription needs its customer and price)."""
    return [
        OutboundCase("upsert_customer", _account("Acme"), _account("Acme GmbH"), "dlv-customer-1"),
        OutboundCase("upsert_product", _product("Seat"), _product("Seat (annual)"), "dlv-product-1"),
        OutboundCase("upsert_price", _price(1000), _price(1200), "dlv-price-1"),
        OutboundCase("upsert_subscription", _subscription(1), _subscription(3), "dlv-subscription-1"),
        OutboundCase("upsert_invoice", _invoice("draft"), _invoice("open"), "dlv-invoice-1"),
        OutboundCase("create_credit_note", _credit_memo("order_change"), _credit_memo("seat count corrected"),
                     "dlv-credit-note-1"),
    ]


#: how each case's update shows in the Stripe record
_CHANGED: dict[str, Callable[[Mapping[str, Any]], bool]] = {
    "upsert_customer": lambda record: record["name"] == "Acme GmbH",
    "upsert_product": lambda record: record["name"] == "Seat (annual)",
    "upsert_price": lambda record: record["unit_amount"] == 1200,
    "upsert_subscription": lambda record: [item["quantity"] for item in record["items"]["data"]] == [3],
    "upsert_invoice": lambda record: record["status"] == "open" and len(record["lines"]["data"]) == 2,
    "create_credit_note": lambda record: record["memo"] == "seat count corrected",
}


class StripeHarness:
    """Drive the Stripe connector against a running StripeSandbox (see ``tests.connectors.conformance``)."""

    batch_operation = None
    catch_up_page_size = 100  # Stripe's List limit ceiling, which the connector asks for

    def __init__(self, sandbox: StripeSandbox, server: ServerThread, admin: httpx.Client) -> None:
        self.sandbox = sandbox
        self.admin = admin
        self.connector = StripeConnector(ConnectionSettings(
            name=CONNECTION, vendor="stripe", base_url=server.url,
            secrets={"api_key": SecretStr(KEY), "webhook_secret": SecretStr(WHSEC)},
        ))
        self.webhook_cases: Sequence[WebhookCase] = webhook_cases()
        self.outbound_cases: Sequence[OutboundCase] = outbound_cases()
        self.not_found_case = OutboundCase("upsert_subscription", _subscription(1, account="acc_never_delivered"),
                                           _subscription(2, account="acc_never_delivered"), "dlv-missing-1")
        self.invalid_case = OutboundCase("upsert_product", {**_product(""), "id": "prd_unnamed"},
                                         {**_product(""), "id": "prd_unnamed"}, "dlv-invalid-1")

    def sign(self, body: bytes, *, timestamp: float) -> dict[str, str]:
        return {"Stripe-Signature": StripeSignature(WHSEC).sign(body, int(timestamp))}

    def signature_headers(self) -> Sequence[str]:
        return ["Stripe-Signature"]

    def records(self, case: OutboundCase) -> list[dict[str, Any]]:
        """Return every record of the case's Stripe type that carries its canonical id (newest first)."""
        path, filters = _LISTS[case.operation]
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 100, **filters}
        while True:
            response = self.admin.get(path, params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            found.extend(obj for obj in page["data"] if obj["metadata"].get("syncline_id") == case.create["id"])
            if not page["has_more"]:
                return found
            params["starting_after"] = page["data"][-1]["id"]

    def count(self, case: OutboundCase) -> int:
        return len(self.records(case))

    def stored(self, case: OutboundCase) -> Mapping[str, Any]:
        records = self.records(case)
        assert records, f"no Stripe record for {case.create['id']}"
        return records[0]

    def changed(self, case: OutboundCase, record: Mapping[str, Any]) -> bool:
        return _CHANGED[case.operation](record)

    def inject(self, fault: Literal["rate_limit", "server_error", "auth"], *,
               retry_after: float | None = None) -> None:
        self.sandbox.fail_next(fault, retry_after=retry_after)

    def seed_events(self, n: int) -> Sequence[str]:
        """Create ``n`` customers (one ``customer.created`` each); return their event ids oldest first."""
        for index in range(n):
            response = self.admin.post("/v1/customers", data={"name": f"Seed {index}"},
                                       headers={"Idempotency-Key": f"seed-{index}"})
            assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 100}
        while True:
            page = self.admin.get("/v1/events", params=params).json()
            events.extend(page["data"])
            if not page["has_more"]:
                break
            params["starting_after"] = page["data"][-1]["id"]
        return [event["id"] for event in reversed(events) if event["type"] == "customer.created"][-n:]

    def batch_items(self) -> list[tuple[str, Mapping[str, Any]]]:
        return []


@contextmanager
def stripe_harness(**sandbox_options: Any) -> Iterator[StripeHarness]:
    """Serve a fresh StripeSandbox and yield a harness around it; stop the server after."""
    sandbox = StripeSandbox(api_key=KEY, **sandbox_options)
    with ServerThread(sandbox.app) as server, httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10,
    ) as admin:
        yield StripeHarness(sandbox, server, admin)
