"""Stripe subscriptions, disputes, products and prices: decoding Stripe's samples, and the sandbox's API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from tests.connectors._stripe_harness import FIXTURES, envelope, fixture, stripe_harness

from syncline.canonical import canonical_id
from syncline.connectors.stripe.inbound import decode_event
from syncline.errors import DataQualityError


def decode(kind: str, obj: dict[str, Any]) -> list[Any]:
    return decode_event("stripe", json.loads(envelope(kind, obj)))


# -- decoding Stripe's own sample objects --------------------------------------------------------

def test_subscription_sample_maps_customer_prices_and_item_period() -> None:
    [event] = decode("customer.subscription.created", fixture("subscription"))
    sample = FIXTURES["subscription"]
    item = sample["items"]["data"][0]
    assert event.type == "subscription.activated"
    assert event.data["account_id"] == canonical_id("stripe", "account", sample["customer"])
    assert event.data["items"] == [{"price_id": canonical_id("stripe", "price", item["price"]["id"]),
                                    "quantity": item["quantity"]}]
    # the sample (a newer API version) has the period on the item only
    assert "current_period_start" not in sample
    assert event.data["current_period_start"] == datetime.fromtimestamp(item["current_period_start"], UTC) \
        .isoformat().replace("+00:00", "Z")
    assert event.subject == canonical_id("stripe", "subscription", sample["id"])


def test_incomplete_expired_subscription_is_canceled_and_unknown_status_is_refused() -> None:
    [event] = decode("customer.subscription.updated", fixture("subscription", status="incomplete_expired"))
    assert event.data["status"] == "canceled"
    with pytest.raises(DataQualityError) as caught:
        decode("customer.subscription.updated", fixture("subscription", status="dormant"))
    assert caught.value.details["field"] == "status"


@pytest.mark.parametrize(("status", "expected"), [("won", "dispute.won"), ("lost", "dispute.lost"),
                                                  ("warning_closed", "dispute.won")])
def test_closed_dispute_is_won_or_lost_by_status(status: str, expected: str) -> None:
    [event] = decode("charge.dispute.closed", fixture("dispute", status=status))
    assert event.type == expected
    assert event.data["payment_id"] == canonical_id("stripe", "payment", FIXTURES["dispute"]["charge"])
    # closing sorts after opening within the same second
    [opened] = decode("charge.dispute.created", fixture("dispute"))
    assert event.sequence > opened.sequence


def test_closed_dispute_still_open_is_refused() -> None:
    with pytest.raises(DataQualityError):
        decode("charge.dispute.closed", fixture("dispute", status="under_review"))


def test_price_sample_maps_amount_product_and_interval() -> None:
    [event] = decode("price.created", fixture("price"))
    sample = FIXTURES["price"]
    assert event.data["unit_amount"] == {"amount": sample["unit_amount"], "currency": "USD"}
    assert event.data["product_id"] == canonical_id("stripe", "product", sample["product"])
    assert (event.data["interval"], event.data["interval_count"]) == ("month", 1)
    [one_time] = decode("price.updated", fixture("price", recurring=None, type="one_time"))
    assert one_time.data["interval"] is None


def test_tiered_price_without_unit_amount_is_data_quality() -> None:
    with pytest.raises(DataQualityError) as caught:
        decode("price.created", fixture("price", unit_amount=None, billing_scheme="tiered"))
    assert caught.value.details["field"] == "unit_amount"


def test_product_sample_takes_its_sku_from_metadata() -> None:
    [event] = decode("product.updated", fixture("product", metadata={"sku": "TS-GRY-M"}))
    assert (event.data["name"], event.data["sku"], event.data["active"]) == ("T-shirt", "TS-GRY-M", True)


# -- the sandbox's Stripe semantics --------------------------------------------------------------

@pytest.fixture
def api() -> Iterator[httpx.Client]:
    with stripe_harness() as harness:
        yield harness.admin


def post(api: httpx.Client, path: str, data: dict[str, str], key: str | None = None) -> httpx.Response:
    return api.post(path, data=data, headers={"Idempotency-Key": key} if key else {})


def test_same_key_same_params_replays_and_other_params_are_refused(api: httpx.Client) -> None:
    first = post(api, "/v1/products", {"name": "Seat"}, key="k1")
    again = post(api, "/v1/products", {"name": "Seat"}, key="k1")
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    other = post(api, "/v1/products", {"name": "Desk"}, key="k1")
    assert other.status_code == 400 and other.json()["error"]["type"] == "idempotency_error"
    assert len(api.get("/v1/products").json()["data"]) == 1


def test_keys_are_forgotten_after_24_hours() -> None:
    now = [1_800_000_000.0]
    with stripe_harness(clock=lambda: now[0]) as harness:
        first = post(harness.admin, "/v1/products", {"name": "Seat"}, key="k1").json()
        now[0] += 24 * 3600 - 1
        assert post(harness.admin, "/v1/products", {"name": "Seat"}, key="k1").json()["id"] == first["id"]
        now[0] += 2
        later = post(harness.admin, "/v1/products", {"name": "Desk"}, key="k1")
        assert later.status_code == 200 and later.json()["id"] != first["id"]


def test_prices_are_immutable_except_active_and_metadata(api: httpx.Client) -> None:
    product = post(api, "/v1/products", {"name": "Seat"}).json()
    price = post(api, "/v1/prices", {"product": product["id"], "currency": "eur", "unit_amount": "1000",
                                     "recurring[interval]": "month"}).json()
    refused = post(api, f"/v1/prices/{price['id']}", {"unit_amount": "1200"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "unit_amount"
    updated = post(api, f"/v1/prices/{price['id']}", {"active": "false", "metadata[a]": "b"}).json()
    assert (updated["active"], updated["metadata"], updated["unit_amount"]) == (False, {"a": "b"}, 1000)


def test_search_matches_metadata_and_fields_and_refuses_other_syntax(api: httpx.Client) -> None:
    for name, ident in (("A", "x1"), ("B", "x2"), ("C", "it's")):
        post(api, "/v1/customers", {"name": name, "metadata[syncline_id]": ident})
    def search(query: str) -> httpx.Response:
        return api.get("/v1/customers/search", params={"query": query})
    assert [c["name"] for c in search("metadata['syncline_id']:'x2'").json()["data"]] == ["B"]
    assert [c["name"] for c in search("metadata['syncline_id']:'it\\'s'").json()["data"]] == ["C"]
    assert search("metadata['syncline_id']:'x1' AND name:'B'").json()["data"] == []
    assert search("name~'A'").status_code == 400


def test_subscription_needs_recurring_prices_in_one_currency(api: httpx.Client) -> None:
    customer = post(api, "/v1/customers", {"name": "A"}).json()
    product = post(api, "/v1/products", {"name": "Seat"}).json()
    one_time = post(api, "/v1/prices", {"product": product["id"], "currency": "eur", "unit_amount": "5"}).json()
    refused = post(api, "/v1/subscriptions", {"customer": customer["id"], "items[0][price]": one_time["id"]})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "items[0][price]"
    eur, usd = (post(api, "/v1/prices", {"product": product["id"], "currency": currency, "unit_amount": "5",
                                         "recurring[interval]": "month"}).json() for currency in ("eur", "usd"))
    mixed = post(api, "/v1/subscriptions", {"customer": customer["id"], "items[0][price]": eur["id"],
                                            "items[1][price]": usd["id"]})
    assert mixed.status_code == 400
    sub = post(api, "/v1/subscriptions", {"customer": customer["id"], "items[0][price]": eur["id"]}).json()
    assert (sub["status"], sub["currency"], sub["items"]["data"][0]["quantity"]) == ("active", "eur", 1)
    canceled = api.delete(f"/v1/subscriptions/{sub['id']}").json()
    assert canceled["status"] == "canceled"
    assert post(api, f"/v1/subscriptions/{sub['id']}", {"description": "x"}).status_code == 400


@pytest.mark.parametrize(("fault", "status"), [("rate_limit", 429), ("server_error", 500), ("auth", 401)])
def test_fail_next_fails_exactly_one_request(fault: str, status: int) -> None:
    with stripe_harness() as harness:
        harness.sandbox.fail_next(fault, retry_after=3)
        failed = harness.admin.get("/v1/customers")
        assert failed.status_code == status
        assert failed.json()["error"]["message"]
        if fault == "rate_limit":
            assert failed.headers["Retry-After"] == "3"
        assert harness.admin.get("/v1/customers").status_code == 200
    with pytest.raises(ValueError):
        harness.sandbox.fail_next("meteor")



def test_a_cancellation_sorts_after_changes_of_the_same_second() -> None:
    kinds = ["customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted"]
    sequences = [decode(kind, fixture("subscription"))[0].sequence for kind in kinds]
    assert sequences == sorted(sequences) and len(set(sequences)) == 3
