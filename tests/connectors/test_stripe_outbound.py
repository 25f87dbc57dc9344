"""Stripe outbound against the sandbox: find-or-create without upsert, price replacement, lifecycles."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import anyio
import httpx
import pytest
from fastapi import FastAPI, Request, Response
from tests.connectors._stripe_harness import WHSEC, StripeHarness, outbound_cases, stripe_harness

from syncline.connectors.base import DeliveryResult
from syncline.connectors.stripe.client import API_VERSION
from syncline.errors import DataQualityError, TransientError
from syncline.sandbox import ServerThread

CASES = {case.operation: case for case in outbound_cases()}
DAY = 24 * 3600


class Clock:
    """The sandbox's clock, moved by the test (idempotency keys expire after 24 h of it)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def harness(clock: Clock) -> Iterator[StripeHarness]:
    with stripe_harness(clock=clock) as harness:
        yield harness


@pytest.fixture
def lagging(clock: Clock) -> Iterator[StripeHarness]:
    """A sandbox whose Search index trails writes by a minute, as Stripe's may."""
    with stripe_harness(clock=clock, search_lag_seconds=60) as harness:
        yield harness


async def deliver(harness: StripeHarness, operation: str, payload: dict[str, Any], key: str) -> DeliveryResult:
    connector = harness.connector
    async with connector.http_client(connector.default_limits) as http:
        return await connector.deliver(http, operation, payload, idempotency_key=key)


async def deliver_all_before(harness: StripeHarness, operation: str) -> None:
    """Deliver the create payload of every conformance case before ``operation`` (its references)."""
    for case in outbound_cases():
        if case.operation == operation:
            return
        await deliver(harness, case.operation, dict(case.create), case.idempotency_key)


def get(harness: StripeHarness, path: str, **params: Any) -> Any:
    response = harness.admin.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


# -- finding without upsert ------------------------------------------------------------------------

@pytest.mark.anyio
async def test_while_search_lags_the_create_key_replays_the_same_customer(lagging: StripeHarness) -> None:
    case = CASES["upsert_customer"]
    first = await deliver(lagging, "upsert_customer", dict(case.create), "dlv-a")
    # another delivery of the same account seconds later: search cannot see it yet, the key can
    second = await deliver(lagging, "upsert_customer", dict(case.update), "dlv-b")
    assert second.external_id == first.external_id
    assert (first.created, second.created) == (True, False)  # Stripe replayed the create
    assert lagging.count(case) == 1
    assert lagging.stored(case)["name"] == "Acme GmbH"


@pytest.mark.anyio
async def test_changed_identity_params_while_search_lags_is_transient(lagging: StripeHarness,
                                                                      clock: Clock) -> None:
    case = CASES["upsert_product"]
    await deliver(lagging, "upsert_product", dict(case.create), "dlv-a")
    # a product is created with its name: a rename within the minute reuses the key with other params
    with pytest.raises(TransientError) as caught:
        await deliver(lagging, "upsert_product", dict(case.update), "dlv-b")
    assert caught.value.code == "search_lagging"
    assert lagging.count(case) == 1
    clock.now += 61  # the index caught up: the retry finds the product and renames it
    await deliver(lagging, "upsert_product", dict(case.update), "dlv-b")
    assert lagging.count(case) == 1
    assert lagging.stored(case)["name"] == "Seat (annual)"


@pytest.mark.anyio
async def test_after_the_key_expired_search_finds_the_record(harness: StripeHarness, clock: Clock) -> None:
    for operation in ("upsert_customer", "upsert_product", "upsert_price", "upsert_subscription",
                      "upsert_invoice", "create_credit_note"):
        case = CASES[operation]
        # the invoice is delivered open, so that the credit note has something to credit
        payload = dict(case.update if operation == "upsert_invoice" else case.create)
        first = await deliver(harness, operation, payload, case.idempotency_key)
        clock.now += DAY + 1  # Stripe has forgotten syncline-create-<id>
        again = await deliver(harness, operation, payload, f"{case.idempotency_key}-next-day")
        assert again.external_id == first.external_id, operation
        assert again.created is False, operation
        assert harness.count(case) == 1, operation


@pytest.mark.anyio
async def test_a_customer_that_originated_in_stripe_is_updated_in_place(harness: StripeHarness) -> None:
    created = harness.admin.post("/v1/customers", data={"name": "Born in Stripe"},
                                 headers={"Idempotency-Key": "dashboard-1"}).json()
    event = next(e for e in get(harness, "/v1/events")["data"] if e["type"] == "customer.created")
    [decoded] = harness.connector.decode(event)
    account = {**decoded.data, "name": "Renamed by CRM"}
    result = await deliver(harness, "upsert_customer", account, "dlv-origin")
    assert result.external_id == created["id"]
    customers = get(harness, "/v1/customers")["data"]
    assert [c["name"] for c in customers] == ["Renamed by CRM"]
    assert customers[0]["metadata"]["syncline_id"] == decoded.data["id"]


@pytest.mark.anyio
async def test_delivery_keys_longer_than_stripe_allows_are_digested(harness: StripeHarness) -> None:
    case = CASES["upsert_customer"]
    long_key = "dlv-" + "x" * 300
    first = await deliver(harness, "upsert_customer", dict(case.update), long_key)
    again = await deliver(harness, "upsert_customer", dict(case.update), long_key)
    assert again.external_id == first.external_id
    assert harness.stored(case)["name"] == "Acme GmbH"
    refused = harness.admin.post("/v1/customers", data={}, headers={"Idempotency-Key": long_key})
    assert refused.status_code == 400  # what the connector avoided


# -- prices --------------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_a_changed_amount_makes_a_new_price_and_deactivates_the_old(harness: StripeHarness) -> None:
    await deliver_all_before(harness, "upsert_price")
    case = CASES["upsert_price"]
    old = await deliver(harness, "upsert_price", dict(case.create), "dlv-1")
    new = await deliver(harness, "upsert_price", dict(case.update), "dlv-2")
    assert new.external_id != old.external_id and new.created is True
    prices = {p["id"]: p for p in get(harness, "/v1/prices", limit=100)["data"]}
    assert prices[old.external_id]["active"] is False
    assert prices[new.external_id]["active"] is True and prices[new.external_id]["unit_amount"] == 1200
    # the same terms again are the same price: no third price
    again = await deliver(harness, "upsert_price", dict(case.update), "dlv-3")
    assert again.external_id == new.external_id
    # going back to the first terms brings back the first price (its create key replays) and
    # deactivates the second: still one active price per canonical id
    back = await deliver(harness, "upsert_price", dict(case.create), "dlv-4")
    prices = {p["id"]: p for p in get(harness, "/v1/prices", limit=100)["data"]}
    assert back.external_id == old.external_id
    assert [p["id"] for p in prices.values() if p["active"]] == [old.external_id]
    assert len(prices) == 2


# -- subscriptions -------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_subscription_items_are_swapped_then_the_subscription_is_canceled(harness: StripeHarness) -> None:
    await deliver_all_before(harness, "upsert_subscription")
    second_price = {**CASES["upsert_price"].create, "id": "pri_conformance_2",
                    "unit_amount": {"amount": 3000, "currency": "EUR"}}
    await deliver(harness, "upsert_price", second_price, "dlv-price-2")
    case = CASES["upsert_subscription"]
    created = await deliver(harness, "upsert_subscription", dict(case.create), "dlv-1")
    swapped = {**case.create, "items": [{"price_id": "pri_conformance_2", "quantity": 2}]}
    await deliver(harness, "upsert_subscription", swapped, "dlv-2")
    record = get(harness, f"/v1/subscriptions/{created.external_id}")
    assert [(item["price"]["unit_amount"], item["quantity"]) for item in record["items"]["data"]] == [(3000, 2)]
    canceled = {**swapped, "status": "canceled"}
    await deliver(harness, "upsert_subscription", canceled, "dlv-3")
    await deliver(harness, "upsert_subscription", canceled, "dlv-3")  # a redelivery is harmless
    assert get(harness, f"/v1/subscriptions/{created.external_id}")["status"] == "canceled"
    with pytest.raises(DataQualityError) as caught:
        await deliver(harness, "upsert_subscription", dict(case.create), "dlv-4")
    assert caught.value.code == "subscription_canceled"
    types = [event["type"] for event in get(harness, "/v1/events", limit=100)["data"]]
    assert {"customer.subscription.created", "customer.subscription.updated",
            "customer.subscription.deleted"} <= set(types)


# -- invoices and credit notes -------------------------------------------------------------------

@pytest.mark.anyio
async def test_invoice_lines_are_added_once_and_the_status_follows(harness: StripeHarness) -> None:
    await deliver_all_before(harness, "upsert_invoice")
    case = CASES["upsert_invoice"]
    draft = await deliver(harness, "upsert_invoice", dict(case.create), "dlv-1")
    await deliver(harness, "upsert_invoice", dict(case.create), "dlv-1b")
    invoice = get(harness, f"/v1/invoices/{draft.external_id}")
    assert invoice["status"] == "draft"
    assert [line["amount"] for line in invoice["lines"]["data"]] == [12000, 50000]
    assert len(get(harness, "/v1/invoiceitems", limit=100)["data"]) == 2
    await deliver(harness, "upsert_invoice", {**case.create, "status": "paid"}, "dlv-2")
    invoice = get(harness, f"/v1/invoices/{draft.external_id}")
    assert (invoice["status"], invoice["paid_out_of_band"], invoice["total"]) == ("paid", True, 62000)
    assert invoice["metadata"] == {"syncline_id": "inv_conformance_1", "syncline_number": "INV-9001"}


@pytest.mark.anyio
async def test_a_due_date_makes_a_send_invoice_invoice(harness: StripeHarness) -> None:
    await deliver_all_before(harness, "upsert_invoice")
    result = await deliver(harness, "upsert_invoice", dict(CASES["upsert_invoice"].create), "dlv-1")
    invoice = get(harness, f"/v1/invoices/{result.external_id}")
    assert (invoice["collection_method"], invoice["due_date"]) == ("send_invoice", 1_797_292_800)  # 2026-12-15


@pytest.mark.anyio
async def test_a_deleted_account_deletes_its_customer_once(harness: StripeHarness) -> None:
    case = CASES["upsert_customer"]
    created = await deliver(harness, "upsert_customer", dict(case.create), "dlv-1")
    deleted = await deliver(harness, "upsert_customer", {**case.create, "deleted": True}, "dlv-2")
    assert deleted.external_id == created.external_id
    assert harness.count(case) == 0
    # a deleted account Stripe never held is not created just to be deleted
    with pytest.raises(DataQualityError) as caught:
        await deliver(harness, "upsert_customer", {**case.create, "id": "acc_never", "deleted": True}, "dlv-3")
    assert caught.value.code == "not_found"
    assert get(harness, "/v1/customers")["data"] == []


@pytest.mark.anyio
async def test_an_invoice_can_be_voided(harness: StripeHarness) -> None:
    await deliver_all_before(harness, "upsert_invoice")
    case = CASES["upsert_invoice"]
    result = await deliver(harness, "upsert_invoice", {**case.create, "status": "void"}, "dlv-1")
    assert get(harness, f"/v1/invoices/{result.external_id}")["status"] == "void"


@pytest.mark.anyio
async def test_credit_note_needs_a_delivered_invoice(harness: StripeHarness) -> None:
    await deliver(harness, "upsert_customer", dict(CASES["upsert_customer"].create), "dlv-c")
    with pytest.raises(DataQualityError) as caught:
        await deliver(harness, "create_credit_note", dict(CASES["create_credit_note"].create), "dlv-1")
    assert (caught.value.code, caught.value.details["field"]) == ("not_found", "invoice_id")


@pytest.mark.anyio
async def test_credit_note_on_a_draft_invoice_is_refused_as_data_quality(harness: StripeHarness) -> None:
    await deliver_all_before(harness, "upsert_invoice")
    await deliver(harness, "upsert_invoice", dict(CASES["upsert_invoice"].create), "dlv-draft")
    with pytest.raises(DataQualityError) as caught:
        await deliver(harness, "create_credit_note", dict(CASES["create_credit_note"].create), "dlv-1")
    assert caught.value.details["param"] == "invoice"


# -- the wire ------------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_requests_are_form_encoded_with_keys_and_the_pinned_version(harness: StripeHarness) -> None:
    await deliver_all_before(harness, "upsert_subscription")
    sent: list[httpx.Request] = []

    async def capture(request: httpx.Request) -> None:
        sent.append(request)

    connector = harness.connector
    case = CASES["upsert_subscription"]
    async with connector.http_client(connector.default_limits) as http:
        http.event_hooks = {"request": [capture], "response": []}
        await connector.deliver(http, case.operation, dict(case.create), idempotency_key="dlv-wire")
    posts = [request for request in sent if request.method == "POST"]
    assert posts[0].url.path == "/v1/subscriptions"
    create, update = posts[0], posts[1]
    assert create.headers["Idempotency-Key"] == "syncline-create-sub_conformance_1"
    assert update.headers["Idempotency-Key"] == "dlv-wire"
    assert all(request.headers["Stripe-Version"] == API_VERSION for request in sent)
    pairs = parse_qsl(create.content.decode())
    assert ("metadata[syncline_id]", "sub_conformance_1") in pairs
    assert [key for key, _ in pairs if key.startswith("items[")] == ["items[0][price]"]
    search = next(request for request in sent if request.url.path == "/v1/subscriptions/search")
    assert search.url.params["query"] == "metadata['syncline_id']:'sub_conformance_1'"


@pytest.mark.anyio
async def test_payloads_that_are_not_canonical_objects_are_data_quality(harness: StripeHarness) -> None:
    with pytest.raises(DataQualityError) as caught:
        await deliver(harness, "upsert_customer", {"id": "acc_1"}, "dlv-bad")
    assert caught.value.code == "payload_invalid"
    with pytest.raises(DataQualityError) as caught:
        await deliver(harness, "upsert_anything", {"id": "acc_1"}, "dlv-bad")
    assert caught.value.code == "operation_unknown"


# -- webhooks for the new objects ----------------------------------------------------------------

@pytest.mark.anyio
async def test_changes_send_signed_webhooks_the_connector_decodes(harness: StripeHarness) -> None:
    received: list[tuple[dict[str, str], bytes]] = []
    app = FastAPI()

    @app.post("/hook")
    async def hook(request: Request) -> Response:
        received.append((dict(request.headers), await request.body()))
        return Response(status_code=200)

    with ServerThread(app) as receiver:
        harness.sandbox.add_webhook_endpoint(f"{receiver.url}/hook", WHSEC)
        for case in outbound_cases()[:4]:
            await deliver(harness, case.operation, dict(case.create), case.idempotency_key)
            await deliver(harness, case.operation, dict(case.update), f"{case.idempotency_key}-update")
        deadline = time.monotonic() + 10
        while harness.sandbox.pending_deliveries() and time.monotonic() < deadline:
            await anyio.sleep(0.02)
    decoded: list[str] = []
    for headers, body in received:
        harness.connector.verify_webhook(headers, body, now=time.time())
        decoded.extend(event.type for event in harness.connector.decode(json.loads(body)))
    assert {"account.created", "account.updated", "product.created", "product.updated", "price.created",
            "price.updated", "subscription.activated", "subscription.updated"} <= set(decoded)

