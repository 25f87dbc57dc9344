"""Decoding Stripe events (built from Stripe's sample objects) into canonical events."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from syncline.canonical import CloudEvent, Money, canonical_id
from syncline.connectors.base import ConnectionSettings
from syncline.connectors.stripe import StripeConnector
from syncline.errors import DataQualityError

FIXTURES = Path(__file__).parent / "fixtures" / "stripe"
CONN = "stripe-eu"
CREATED = 1_719_796_000


def fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return loaded


def event(kind: str, obj: dict[str, Any], *, created: int = CREATED, event_id: str = "evt_1Pgc76B7WZ01zgkWwyRHS12y",
          previous: dict[str, Any] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"object": obj}
    if previous is not None:
        data["previous_attributes"] = previous
    return {"id": event_id, "object": "event", "api_version": "2024-06-20", "created": created, "data": data,
            "livemode": False, "pending_webhooks": 1, "request": {"id": "req_1", "idempotency_key": None},
            "type": kind}


@pytest.fixture
def stripe() -> StripeConnector:
    return StripeConnector(ConnectionSettings(name=CONN, vendor="stripe", base_url="http://127.0.0.1:1",
                                              secrets={"api_key": SecretStr("sk_test_x")}))


def only(events: list[CloudEvent]) -> CloudEvent:
    assert len(events) == 1, events
    return events[0]


def usd(amount: int) -> dict[str, Any]:
    return Money(amount=amount, currency="USD").model_dump(mode="json")


# -- identity ------------------------------------------------------------------------------------

def test_identify_returns_event_id_and_type(stripe: StripeConnector) -> None:
    identity = stripe.identify(event("invoice.paid", fixture("invoice_usd")))
    assert (identity.event_id, identity.event_type) == ("evt_1Pgc76B7WZ01zgkWwyRHS12y", "invoice.paid")


@pytest.mark.parametrize("payload", [
    {"id": "evt_1", "type": "invoice.paid"},                         # no object: event
    {"id": "evt_1", "object": "invoice", "type": "invoice.paid"},
    {"object": "event", "type": "invoice.paid"},
    {"id": "evt_1", "object": "event"},
    ["not", "an", "object"],
])
def test_identify_refuses_what_is_not_a_stripe_event(stripe: StripeConnector, payload: Any) -> None:
    with pytest.raises(DataQualityError):
        stripe.identify(payload)


# -- customers -----------------------------------------------------------------------------------

def test_customer_created_becomes_account_created(stripe: StripeConnector) -> None:
    cloud = only(stripe.decode(event("customer.created", fixture("customer"))))
    account_id = canonical_id(CONN, "account", "cus_QXg1o8vcGmoR32")
    assert cloud.type == "account.created"
    assert cloud.subject == cloud.correlationid == account_id
    assert cloud.source == f"/connections/{CONN}"
    assert cloud.time == datetime.fromtimestamp(CREATED, UTC)
    assert cloud.sequence == f"{CREATED * 10:020d}"
    data = cloud.data
    assert data["id"] == account_id
    assert data["source"] == {"system": CONN, "object_type": "customer", "external_id": "cus_QXg1o8vcGmoR32"}
    assert (data["name"], data["email"], data["currency"]) == ("Jenny Rosen", "jenny.rosen@example.com", "EUR")
    assert data["address"]["country"] == "DE" and data["address"]["city"] == "Berlin"
    assert data["tax_exempt"] is True  # reverse charge
    assert data["tax_ids"] == ["DE123456789"]
    assert data["deleted"] is False


def test_a_customer_syncline_created_decodes_to_the_identity_syncline_wrote(stripe: StripeConnector) -> None:
    customer = {**fixture("customer"), "metadata": {"syncline_id": "account_0123456789abcdef0123"}}
    cloud = only(stripe.decode(event("customer.updated", customer)))
    assert cloud.subject == cloud.data["id"] == "account_0123456789abcdef0123"
    assert cloud.data["source"]["external_id"] == "cus_QXg1o8vcGmoR32"
    # A value that is not a canonical account id is not trusted as one.
    customer["metadata"] = {"syncline_id": "invoice_0123456789abcdef0123"}
    assert only(stripe.decode(event("customer.updated", customer))).subject == canonical_id(
        CONN, "account", "cus_QXg1o8vcGmoR32")


def test_customer_updated_and_deleted(stripe: StripeConnector) -> None:
    updated = only(stripe.decode(event("customer.updated", fixture("customer"))))
    deleted = only(stripe.decode(event("customer.deleted", fixture("customer"), event_id="evt_2")))
    assert updated.type == "account.updated" and updated.data["deleted"] is False
    assert deleted.type == "account.deleted" and deleted.data["deleted"] is True
    assert updated.subject == deleted.subject


def test_decoding_is_deterministic(stripe: StripeConnector) -> None:
    payload = event("customer.created", fixture("customer"))
    assert stripe.decode(payload) == stripe.decode(copy.deepcopy(payload))
    other = only(stripe.decode(event("customer.created", fixture("customer"), event_id="evt_other")))
    assert other.id != only(stripe.decode(payload)).id


# -- invoices ------------------------------------------------------------------------------------

def test_paid_usd_invoice_with_tax_and_lines(stripe: StripeConnector) -> None:
    cloud = only(stripe.decode(event("invoice.paid", fixture("invoice_usd"))))
    invoice_id = canonical_id(CONN, "invoice", "in_1Pgc6tB7WZ01zgkWu9fdqL6I")
    assert cloud.type == "invoice.paid"
    assert cloud.subject == cloud.correlationid == invoice_id
    assert cloud.sequence == f"{CREATED * 10 + 3:020d}"  # paid ranks 3
    data = cloud.data
    assert data["account_id"] == canonical_id(CONN, "account", "cus_QXg1o8vcGmoR32")
    assert data["status"] == "paid" and data["number"] == "7FE1103-0001" and data["currency"] == "USD"
    assert (data["subtotal"], data["tax"], data["total"]) == (usd(11500), usd(949), usd(12449))
    assert (data["amount_paid"], data["amount_due"]) == (usd(12449), usd(12449))
    assert data["issued_at"] == "2024-07-01T00:05:00Z"  # status_transitions.finalized_at
    assert data["due_date"] == "2024-07-31"
    assert data["subscription_id"] == canonical_id(CONN, "subscription", "sub_1PgafnB7WZ01zgkWnGbR0Bkz")
    seats, fee = data["lines"]
    assert seats["id"] == canonical_id(CONN, "invoice_line", "il_1Pgc6sB7WZ01zgkWFnxLrLCq")
    assert (seats["amount"], seats["quantity"]) == (usd(10000), 2)
    assert seats["price_id"] == canonical_id(CONN, "price", "price_1PgafmB7WZ01zgkW6dKueIc5")
    assert seats["product_id"] == canonical_id(CONN, "product", "prod_QXg1hqf4jFNsqG")
    assert seats["period"] == {"start": "2024-07-01", "end": "2024-08-01"}
    assert seats["taxes"] == [{"amount": usd(825), "rate_basis_points": 825, "jurisdiction": "US - CA",
                               "tax_code": None}]
    assert fee["price_id"] == canonical_id(CONN, "price", "price_1OnboardingFee000000000")
    assert fee["product_id"] is None
    assert fee["taxes"][0]["amount"] == usd(124) and fee["taxes"][0]["rate_basis_points"] is None
    assert sum(line["amount"]["amount"] for line in data["lines"]) == data["subtotal"]["amount"]


def test_jpy_invoice_is_not_scaled(stripe: StripeConnector) -> None:
    cloud = only(stripe.decode(event("invoice.finalized", fixture("invoice_jpy"))))
    assert cloud.type == "invoice.issued"
    assert cloud.sequence == f"{CREATED * 10 + 1:020d}"  # open ranks 1
    data = cloud.data
    assert data["currency"] == "JPY"
    total = Money.model_validate(data["total"])
    assert total == Money(amount=5000, currency="JPY")
    assert total.to_decimal() == Decimal("5000")
    assert data["tax"] == {"amount": 0, "currency": "JPY"}  # tax null: total - total_excluding_tax
    assert data["lines"][0]["amount"] == {"amount": 5000, "currency": "JPY"}
    assert data["due_date"] is None


def test_kwd_invoice_keeps_three_decimals_and_reads_newer_line_shape(stripe: StripeConnector) -> None:
    data = only(stripe.decode(event("invoice.finalized", fixture("invoice_kwd")))).data
    assert Money.model_validate(data["total"]).to_decimal() == Decimal("13.125")
    assert data["subtotal"] == {"amount": 12500, "currency": "KWD"}
    assert data["tax"] == {"amount": 625, "currency": "KWD"}  # from total_taxes
    assert data["issued_at"] == "2024-07-01T01:06:40Z"  # no finalized_at: effective_at
    assert data["subscription_id"] == canonical_id(CONN, "subscription", "sub_1KwdSubscription00000")
    line = data["lines"][0]
    assert line["price_id"] == canonical_id(CONN, "price", "price_1KwdHourly00000000000")
    assert line["product_id"] == canonical_id(CONN, "product", "prod_KwdConsulting00")
    assert line["taxes"][0]["amount"] == {"amount": 625, "currency": "KWD"}
    assert line["period"] == {"start": "2024-07-01", "end": "2024-07-08"}


def test_tax_falls_back_to_total_minus_subtotal(stripe: StripeConnector) -> None:
    invoice = fixture("invoice_jpy")
    for key in ("tax", "total_excluding_tax", "total_taxes"):
        invoice.pop(key, None)
    invoice.update(subtotal=5000, total=5500)
    assert only(stripe.decode(event("invoice.finalized", invoice))).data["tax"]["amount"] == 500


def test_inclusive_tax_is_taken_out_of_the_line_amount(stripe: StripeConnector) -> None:
    invoice = fixture("invoice_jpy")
    line = invoice["lines"]["data"][0]
    del line["amount_excluding_tax"]
    line.update(amount=1100, tax_amounts=[{"amount": 100, "inclusive": True, "tax_rate": "txr_1"}])
    decoded = only(stripe.decode(event("invoice.finalized", invoice))).data["lines"][0]
    assert decoded["amount"]["amount"] == 1000
    assert decoded["taxes"][0]["amount"]["amount"] == 100


@pytest.mark.parametrize(("kind", "status", "canonical", "rank"), [
    ("invoice.voided", "void", "invoice.voided", 4),
    ("invoice.marked_uncollectible", "uncollectible", "invoice.uncollectible", 2),
])
def test_invoice_void_and_uncollectible(stripe: StripeConnector, kind: str, status: str, canonical: str,
                                        rank: int) -> None:
    invoice = fixture("invoice_jpy") | {"status": status}
    cloud = only(stripe.decode(event(kind, invoice)))
    assert (cloud.type, cloud.data["status"]) == (canonical, status)
    assert cloud.sequence == f"{CREATED * 10 + rank:020d}"


def test_sequence_orders_versions_within_one_second(stripe: StripeConnector) -> None:
    issued = only(stripe.decode(event("invoice.finalized", fixture("invoice_jpy"), event_id="evt_a")))
    paid = only(stripe.decode(event("invoice.paid", fixture("invoice_jpy") | {"status": "paid"}, event_id="evt_b")))
    later = only(stripe.decode(event("invoice.finalized", fixture("invoice_jpy"), created=CREATED + 1)))
    assert issued.sequence is not None and paid.sequence is not None and later.sequence is not None
    assert issued.sequence < paid.sequence < later.sequence


# -- charges and refunds -------------------------------------------------------------------------

def test_charge_succeeded_links_its_invoice(stripe: StripeConnector) -> None:
    cloud = only(stripe.decode(event("charge.succeeded", fixture("charge"))))
    invoice_id = canonical_id(CONN, "invoice", "in_1Pgc6tB7WZ01zgkWu9fdqL6I")
    assert cloud.type == "payment.succeeded"
    assert cloud.subject == canonical_id(CONN, "payment", "ch_1PgafuB7WZ01zgkWXYmPNZs8")
    assert cloud.correlationid == invoice_id
    data = cloud.data
    assert data["invoice_id"] == invoice_id
    assert data["account_id"] == canonical_id(CONN, "account", "cus_QXg1o8vcGmoR32")
    assert (data["amount"], data["amount_refunded"]) == (usd(12449), usd(0))
    assert (data["status"], data["method"]) == ("succeeded", "card")
    assert data["source"]["object_type"] == "charge"


def test_charge_without_invoice_correlates_on_itself(stripe: StripeConnector) -> None:
    cloud = only(stripe.decode(event("charge.succeeded", fixture("charge") | {"invoice": None})))
    assert cloud.data["invoice_id"] is None
    assert cloud.correlationid == cloud.subject


def test_charge_failed_becomes_payment_failed(stripe: StripeConnector) -> None:
    charge = fixture("charge") | {"status": "failed", "paid": False, "failure_code": "card_declined",
                                  "failure_message": "Your card was declined."}
    cloud = only(stripe.decode(event("charge.failed", charge)))
    assert (cloud.type, cloud.data["status"]) == ("payment.failed", "failed")
    assert cloud.data["failure_reason"] == "Your card was declined."


def test_charge_refunded_emits_one_refund_per_refund_object(stripe: StripeConnector) -> None:
    events = stripe.decode(event("charge.refunded", fixture("charge_refunded")))
    assert [e.type for e in events] == ["refund.succeeded", "refund.succeeded"]
    assert [e.data["amount"] for e in events] == [usd(1000), usd(2000)]
    assert [e.data["source"]["external_id"] for e in events] == ["re_1Pgc72B7WZ01zgkWzzSecond",
                                                                 "re_1Pgc72B7WZ01zgkWqPvrRrPE"]
    payment_id = canonical_id(CONN, "payment", "ch_1PgafuB7WZ01zgkWXYmPNZs8")
    invoice_id = canonical_id(CONN, "invoice", "in_1Pgc6tB7WZ01zgkWu9fdqL6I")
    assert all(e.data["payment_id"] == payment_id and e.correlationid == invoice_id for e in events)
    assert events[1].data["reason"] == "requested_by_customer"
    assert events[1].data["refunded_at"] == "2024-07-02T06:00:00Z"
    assert len({e.id for e in events}) == 2


def test_a_refund_repeated_by_a_later_event_decodes_to_the_same_canonical_event(stripe: StripeConnector) -> None:
    first_only = fixture("charge_refunded")
    first_only["refunds"]["data"] = first_only["refunds"]["data"][1:]
    earlier = only(stripe.decode(event("charge.refunded", first_only, event_id="evt_first")))
    later = stripe.decode(event("charge.refunded", fixture("charge_refunded"), event_id="evt_second"))
    assert earlier.id == later[1].id
    assert earlier.id != later[0].id


def test_charge_refunded_without_refund_list_uses_previous_attributes(stripe: StripeConnector) -> None:
    charge = fixture("charge") | {"amount_refunded": 3000, "refunded": False}
    cloud = only(stripe.decode(event("charge.refunded", charge, previous={"amount_refunded": 1000})))
    assert cloud.data["amount"] == usd(2000)
    assert cloud.data["source"]["external_id"] == "ch_1PgafuB7WZ01zgkWXYmPNZs8:refunded:3000"
    without_previous = only(stripe.decode(event("charge.refunded", charge)))
    assert without_previous.data["amount"] == usd(3000)


# -- credit notes and payouts --------------------------------------------------------------------

def test_credit_note_created_becomes_credit_memo_issued(stripe: StripeConnector) -> None:
    cloud = only(stripe.decode(event("credit_note.created", fixture("credit_note"))))
    invoice_id = canonical_id(CONN, "invoice", "in_1Pgc75B7WZ01zgkWYv4iMwt7")
    assert cloud.type == "credit_memo.issued"
    assert cloud.correlationid == invoice_id
    data = cloud.data
    assert data["invoice_id"] == invoice_id and data["number"] == "ABCD-1234-CN-01"
    assert data["total"] == usd(1690) and data["reason"] == "product_unsatisfactory"
    first, second = data["lines"]
    assert first["invoice_line_id"] == canonical_id(CONN, "invoice_line", "il_1Pgc74B7WZ01zgkWWh45tUBA")
    assert (first["amount"], second["amount"]) == (usd(1190), usd(500))
    assert second["invoice_line_id"] is None


def test_payout_paid(stripe: StripeConnector) -> None:
    cloud = only(stripe.decode(event("payout.paid", fixture("payout"))))
    assert cloud.type == "payout.paid"
    assert cloud.subject == cloud.correlationid == canonical_id(CONN, "payout", "po_1Pgc79B7WZ01zgkWu1KToYf4")
    assert cloud.data["amount"] == usd(1100)
    assert date.fromisoformat(cloud.data["arrival_date"]) == date(2024, 7, 4)
    assert cloud.data["paid_at"] == "2024-07-01T01:06:40Z"  # when Stripe reported it paid


# -- what is ignored and what is refused ---------------------------------------------------------

@pytest.mark.parametrize("kind", ["plan.created", "invoice.created", "invoiceitem.created", "payout.created",
                                  "customer.subscription.trial_will_end", "charge.dispute.updated"])
def test_unknown_types_decode_to_nothing(stripe: StripeConnector, kind: str) -> None:
    assert stripe.decode(event(kind, {"id": "x_1", "object": "whatever"})) == []


def broken(name: str, change: Any) -> dict[str, Any]:
    obj = fixture(name)
    change(obj)
    return obj


@pytest.mark.parametrize(("kind", "obj", "field"), [
    ("invoice.paid", broken("invoice_usd", lambda o: o.pop("total")), "total"),
    ("invoice.paid", broken("invoice_usd", lambda o: o.update(currency="dollars")), "currency"),
    ("invoice.paid", broken("invoice_usd", lambda o: o.update(currency=None)), "currency"),
    ("invoice.paid", broken("invoice_usd", lambda o: o.update(status="settled")), "status"),
    ("invoice.paid", broken("invoice_usd", lambda o: o.pop("customer")), "customer"),
    ("invoice.paid", broken("invoice_usd", lambda o: o["lines"]["data"][1].pop("amount")), "lines.data[1].amount"),
    ("invoice.paid", broken("invoice_usd", lambda o: o.update(subtotal=115.0)), "subtotal"),
    ("invoice.paid", broken("invoice_usd", lambda o: o.pop("lines")), "lines"),
    ("charge.succeeded", broken("charge", lambda o: o.update(amount="12449")), "amount"),
    ("charge.succeeded", broken("charge", lambda o: o.pop("created")), "created"),
    ("charge.refunded", broken("charge_refunded", lambda o: o["refunds"]["data"][0].pop("id")),
     "refunds.data[0].id"),
    ("credit_note.created", broken("credit_note", lambda o: o.pop("customer")), "customer"),
    ("payout.paid", broken("payout", lambda o: o.pop("arrival_date")), "arrival_date"),
    ("customer.created", broken("customer", lambda o: o["address"].update(country="Germany")), "country"),
])
def test_malformed_known_event_names_the_field(stripe: StripeConnector, kind: str, obj: dict[str, Any],
                                               field: str) -> None:
    with pytest.raises(DataQualityError) as caught:
        stripe.decode(event(kind, obj))
    assert field in caught.value.message
    assert field in str(caught.value.details["field"])


def test_event_without_created_or_object_is_refused(stripe: StripeConnector) -> None:
    payload = event("customer.created", fixture("customer"))
    del payload["created"]
    with pytest.raises(DataQualityError, match="created"):
        stripe.decode(payload)
    with pytest.raises(DataQualityError, match=r"data\.object"):
        stripe.decode(event("customer.created", None))  # type: ignore[arg-type]
