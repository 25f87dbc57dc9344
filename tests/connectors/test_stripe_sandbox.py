"""The Stripe sandbox against the Stripe connector: wire format, idempotency, webhooks, catch-up."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from pydantic import SecretStr

from syncline.canonical import canonical_id
from syncline.connectors.base import CatchUpPage, ConnectionSettings
from syncline.connectors.stripe import StripeConnector, StripeSandbox
from syncline.connectors.stripe.errors import error_from_response
from syncline.errors import AuthConfigError, DataQualityError, SignatureError
from syncline.sandbox import Faults, ServerThread

KEY = "sk_test_51SandboxKey0000000000000000"
WHSEC = "whsec_sandbox_test_secret_0123456789"


@contextmanager
def serve(sandbox: StripeSandbox) -> Iterator[tuple[ServerThread, httpx.Client]]:
    with ServerThread(sandbox.app) as server, httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10
    ) as client:
        yield server, client


def connector(base_url: str, api_key: str = KEY) -> StripeConnector:
    return StripeConnector(ConnectionSettings(
        name="stripe", vendor="stripe", base_url=base_url,
        secrets={"api_key": SecretStr(api_key), "webhook_secret": SecretStr(WHSEC)},
    ))


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def admin(server: ServerThread, path: str) -> Any:
    return httpx.get(f"{server.url}{path}", timeout=10).json()


def wait_idle(server: ServerThread, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not admin(server, "/_sandbox/webhooks/idle")["idle"]:
        assert time.monotonic() < deadline, admin(server, "/_sandbox/stats")
        time.sleep(0.02)


def all_events(client: httpx.Client) -> list[dict[str, Any]]:
    """Return every event oldest first, paging by hand (independently of the connector's catch-up)."""
    events: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        page = ok(client.get("/v1/events", params=params))
        events.extend(page["data"])
        if not page["has_more"]:
            return list(reversed(events))
        params["starting_after"] = page["data"][-1]["id"]


class Receiver:
    """A webhook endpoint that checks each delivery with the connector, like Syncline's would."""

    def __init__(self, stripe: StripeConnector, *, fail_every: int = 0) -> None:
        self.accepted: list[str] = []
        self.rejected = 0
        self.requests = 0
        self._lock = threading.Lock()
        self.app = FastAPI()

        @self.app.post("/hook")
        async def hook(request: Request) -> Response:
            body = await request.body()
            with self._lock:
                self.requests += 1
                if fail_every and self.requests % fail_every == 0:
                    return Response(status_code=503)
                try:
                    stripe.verify_webhook(request.headers, body, now=time.time())
                except SignatureError:
                    self.rejected += 1
                    return Response(status_code=400)
                self.accepted.append(stripe.identify(json.loads(body)).event_id)
            return Response(status_code=200)


# -- wire format ---------------------------------------------------------------------------------

def test_requests_need_the_api_key() -> None:
    with serve(StripeSandbox(api_key=KEY)) as (server, _client):
        for headers in ({}, {"Authorization": "Bearer sk_test_wrong"}):
            response = httpx.post(f"{server.url}/v1/customers", data={"name": "x"}, headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["type"] == "invalid_request_error"
            assert isinstance(error_from_response(response), AuthConfigError)
        assert admin(server, "/_sandbox/stats")["objects"] == {}


def test_errors_look_like_stripe() -> None:
    with serve(StripeSandbox(api_key=KEY)) as (_server, client):
        missing = client.post("/v1/invoiceitems", data={"customer": "cus_nope", "amount": 100, "currency": "usd"})
        assert missing.status_code == 400
        assert missing.json()["error"] == {"type": "invalid_request_error", "code": "resource_missing",
                                           "param": "customer", "message": "No such customer: 'cus_nope'"}
        cus = ok(client.post("/v1/customers", data={"name": "Ada"}))
        no_currency = client.post("/v1/invoiceitems", data={"customer": cus["id"], "amount": 100})
        assert (no_currency.status_code, no_currency.json()["error"]["param"]) == (400, "currency")
        unknown = client.post("/v1/customers", data={"nmae": "typo"})
        assert unknown.json()["error"]["message"] == "Received unknown parameter: nmae"
        assert client.get("/v1/invoices/in_nope").status_code == 404
        not_int = client.post("/v1/payouts", data={"amount": "12.50", "currency": "usd"})
        assert (not_int.status_code, not_int.json()["error"]["param"]) == (400, "amount")
        draft = ok(client.post("/v1/invoices", data={"customer": cus["id"]}))
        void = client.post(f"/v1/invoices/{draft['id']}/void")
        assert void.status_code == 400 and void.json()["error"]["code"] == "invoice_not_editable"


def test_ids_prefixes_and_nested_form_params() -> None:
    with serve(StripeSandbox(api_key=KEY)) as (_server, client):
        cus = ok(client.post("/v1/customers", data={
            "name": "Ada", "address[country]": "DE", "address[city]": "Berlin", "metadata[crm_id]": "42"}))
        assert cus["id"].startswith("cus_") and cus["object"] == "customer"
        assert cus["address"]["country"] == "DE" and cus["metadata"] == {"crm_id": "42"}
        assert abs(cus["created"] - time.time()) < 5
        same = ok(client.get(f"/v1/customers/{cus['id']}"))
        assert same == cus
        updated = ok(client.post(f"/v1/customers/{cus['id']}", data={"email": "ada@example.com"}))
        assert updated["email"] == "ada@example.com"
        event = ok(client.get("/v1/events", params={"limit": 1}))["data"][0]
        assert event["type"] == "customer.updated"
        assert event["data"]["previous_attributes"] == {"email": None}
        assert event["api_version"] == "2024-06-20" and event["id"].startswith("evt_")


# -- idempotency and faults ----------------------------------------------------------------------

def test_idempotency_key_replays_and_refuses_other_params() -> None:
    with serve(StripeSandbox(api_key=KEY)) as (server, client):
        first = client.post("/v1/customers", data={"name": "Ada"}, headers={"Idempotency-Key": "k-1"})
        again = client.post("/v1/customers", data={"name": "Ada"}, headers={"Idempotency-Key": "k-1"})
        assert again.status_code == first.status_code == 200
        assert again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
        stats = admin(server, "/_sandbox/stats")
        assert stats["objects"]["customer"] == 1 and stats["events"] == 1

        other = client.post("/v1/customers", data={"name": "Grace"}, headers={"Idempotency-Key": "k-1"})
        assert other.status_code == 400
        assert other.json()["error"]["type"] == "idempotency_error"
        assert error_from_response(other).code == "idempotency_key_reused"

        fresh = ok(client.post("/v1/customers", data={"name": "Ada"}, headers={"Idempotency-Key": "k-2"}))
        assert fresh["id"] != first.json()["id"]
        assert admin(server, "/_sandbox/stats")["objects"]["customer"] == 2


def test_declined_payment_is_stored_for_replay_too() -> None:
    with serve(StripeSandbox(api_key=KEY)) as (_server, client):
        cus = ok(client.post("/v1/customers", data={"name": "Ada"}))
        ok(client.post("/v1/invoiceitems", data={"customer": cus["id"], "amount": 700, "currency": "eur"}))
        invoice = ok(client.post("/v1/invoices", data={"customer": cus["id"]}))
        declined = {"payment_method": "pm_card_chargeDeclined"}
        first = client.post(f"/v1/invoices/{invoice['id']}/pay", data=declined, headers={"Idempotency-Key": "p"})
        again = client.post(f"/v1/invoices/{invoice['id']}/pay", data=declined, headers={"Idempotency-Key": "p"})
        assert first.status_code == again.status_code == 402
        assert first.json() == again.json() and first.json()["error"]["code"] == "card_declined"
        types = [e["type"] for e in all_events(client)]
        assert types.count("charge.failed") == 1 and "invoice.paid" not in types


def test_timeout_fault_applies_the_request_and_a_retry_replays_it() -> None:
    sandbox = StripeSandbox(api_key=KEY, faults=Faults(timeout_rate=1.0, hang_seconds=0.6, seed=1))
    with serve(sandbox) as (server, client):
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/customers", data={"name": "Ada"}, headers={"Idempotency-Key": "once"}, timeout=0.2)
        assert ok(httpx.post(f"{server.url}/_sandbox/faults", json={"timeout_rate": 0.0}))
        retried = client.post("/v1/customers", data={"name": "Ada"}, headers={"Idempotency-Key": "once"})
        assert retried.headers["idempotent-replayed"] == "true"
        listed = ok(client.get("/v1/customers"))["data"]
        assert [c["id"] for c in listed] == [retried.json()["id"]]


@pytest.mark.parametrize(("faults", "status", "header"), [
    (Faults(server_error_rate=1.0), 500, "stripe-should-retry"),
    (Faults(rate_limited_rate=1.0, retry_after_seconds=3), 429, "retry-after"),
])
def test_error_faults_change_nothing(faults: Faults, status: int, header: str) -> None:
    with serve(StripeSandbox(api_key=KEY, faults=faults)) as (server, client):
        response = client.post("/v1/customers", data={"name": "Ada"}, headers={"Idempotency-Key": "x"})
        assert response.status_code == status and header in response.headers
        assert admin(server, "/_sandbox/stats")["events"] == 0
        httpx.post(f"{server.url}/_sandbox/faults", json={"server_error_rate": 0.0, "rate_limited_rate": 0.0})
        after = client.post("/v1/customers", data={"name": "Ada"}, headers={"Idempotency-Key": "x"})
        assert after.status_code == 200 and "idempotent-replayed" not in after.headers


# -- business flows decoded by the connector -----------------------------------------------------

def test_invoice_to_refund_flow_decodes_end_to_end() -> None:
    with serve(StripeSandbox(api_key=KEY)) as (server, client):
        stripe = connector(server.url)
        cus = ok(client.post("/v1/customers", data={"name": "Ada", "email": "ada@example.com"}))
        vat = ok(client.post("/v1/tax_rates", data={"display_name": "VAT", "percentage": "19", "inclusive": "false",
                                                    "jurisdiction": "DE"}))
        for amount in (10_000, 2_345):
            ok(client.post("/v1/invoiceitems", data={
                "customer": cus["id"], "amount": amount, "currency": "kwd", "tax_rates[0]": vat["id"],
                "period[start]": 1_719_792_000, "period[end]": 1_722_470_400}))
        invoice = ok(client.post("/v1/invoices", data={"customer": cus["id"]}))
        assert (invoice["subtotal"], invoice["tax"], invoice["total"]) == (12_345, 2_346, 14_691)
        ok(client.post(f"/v1/invoices/{invoice['id']}/finalize"))
        paid = ok(client.post(f"/v1/invoices/{invoice['id']}/pay"))
        ok(client.post("/v1/refunds", data={"charge": paid["charge"], "amount": 1_000}))
        ok(client.post("/v1/refunds", data={"charge": paid["charge"], "amount": 500}))
        over = client.post("/v1/refunds", data={"charge": paid["charge"], "amount": 99_999})
        assert over.status_code == 400 and over.json()["error"]["param"] == "amount"
        line = paid["lines"]["data"][0]["id"]
        ok(client.post("/v1/credit_notes", data={"invoice": invoice["id"], "lines[0][type]": "invoice_line_item",
                                                 "lines[0][invoice_line_item]": line, "lines[0][amount]": 2_000}))
        ok(client.post("/v1/payouts", data={"amount": 13_000, "currency": "kwd"}))

        decoded = [cloud for event in all_events(client) for cloud in stripe.decode(event)]
        assert [c.type for c in decoded] == [
            "account.created", "invoice.issued", "payment.succeeded", "invoice.paid",
            "refund.succeeded", "refund.succeeded", "refund.succeeded", "credit_memo.issued", "payout.paid",
        ]
        by_type = {c.type: c for c in decoded}
        invoice_id = canonical_id("stripe", "invoice", invoice["id"])
        issued = by_type["invoice.issued"].data
        assert issued["total"] == {"amount": 14_691, "currency": "KWD"}
        assert issued["tax"] == {"amount": 2_346, "currency": "KWD"}
        assert [t["rate_basis_points"] for line in issued["lines"] for t in line["taxes"]] == [1900, 1900]
        assert issued["lines"][0]["period"] == {"start": "2024-07-01", "end": "2024-08-01"}
        assert by_type["payment.succeeded"].data["invoice_id"] == invoice_id
        assert by_type["payment.succeeded"].data["amount"]["amount"] == 14_691
        assert by_type["invoice.paid"].sequence > by_type["invoice.issued"].sequence  # type: ignore[operator]
        refunds = [c for c in decoded if c.type == "refund.succeeded"]
        # the second charge.refunded repeats the first refund; it decodes to the same canonical event
        assert len({c.id for c in refunds}) == 2
        assert sorted(c.data["amount"]["amount"] for c in refunds) == [500, 1_000, 1_000]
        assert all(c.correlationid == invoice_id for c in decoded if c.type != "account.created"
                   and c.type != "payout.paid")
        memo = by_type["credit_memo.issued"].data
        assert memo["total"]["amount"] == 2_000
        assert memo["lines"][0]["invoice_line_id"] == canonical_id("stripe", "invoice_line", line)


def test_void_and_uncollectible_invoices_in_jpy() -> None:
    with serve(StripeSandbox(api_key=KEY)) as (server, client):
        stripe = connector(server.url)
        cus = ok(client.post("/v1/customers", data={"name": "Kenji"}))
        invoices = []
        for amount in (5_000, 7_000):
            ok(client.post("/v1/invoiceitems", data={"customer": cus["id"], "amount": amount, "currency": "jpy"}))
            invoice = ok(client.post("/v1/invoices", data={"customer": cus["id"]}))
            invoices.append(ok(client.post(f"/v1/invoices/{invoice['id']}/finalize")))
        ok(client.post(f"/v1/invoices/{invoices[0]['id']}/void"))
        ok(client.post(f"/v1/invoices/{invoices[1]['id']}/mark_uncollectible"))
        decoded = [cloud for event in all_events(client) for cloud in stripe.decode(event)]
        assert [(c.type, c.data["total"]["amount"]) for c in decoded if c.type != "account.created"] == [
            ("invoice.issued", 5_000), ("invoice.issued", 7_000),
            ("invoice.voided", 5_000), ("invoice.uncollectible", 7_000),
        ]
        assert {c.data["currency"] for c in decoded if c.type.startswith("invoice.")} == {"JPY"}
        assert decoded[1].data["number"] != decoded[2].data["number"]


def test_lists_page_newest_first() -> None:
    with serve(StripeSandbox(api_key=KEY)) as (_server, client):
        ids = [ok(client.post("/v1/customers", data={"name": f"c{n}"}))["id"] for n in range(25)]
        newest_first = ids[::-1]
        first = ok(client.get("/v1/customers", params={"limit": 10}))
        assert [c["id"] for c in first["data"]] == newest_first[:10] and first["has_more"]
        second = ok(client.get("/v1/customers", params={"limit": 10, "starting_after": newest_first[9]}))
        assert [c["id"] for c in second["data"]] == newest_first[10:20] and second["has_more"]
        last = ok(client.get("/v1/customers", params={"limit": 10, "starting_after": newest_first[19]}))
        assert [c["id"] for c in last["data"]] == newest_first[20:] and not last["has_more"]
        # ending_before: the objects just newer than the cursor, still newest first
        before = ok(client.get("/v1/customers", params={"limit": 3, "ending_before": ids[5]}))
        assert [c["id"] for c in before["data"]] == [ids[8], ids[7], ids[6]] and before["has_more"]
        events = ok(client.get("/v1/events", params={"limit": 100}))
        assert events["url"] == "/v1/events" and len(events["data"]) == 25
        assert client.get("/v1/events", params={"limit": 101}).status_code == 400


# -- webhooks ------------------------------------------------------------------------------------

def make_payouts(client: httpx.Client, count: int) -> None:
    for n in range(count):
        ok(client.post("/v1/payouts", data={"amount": 100 + n, "currency": "usd"}))


def test_webhooks_arrive_signed_retried_shuffled_and_duplicated() -> None:
    sandbox = StripeSandbox(api_key=KEY, duplicate_rate=0.2, shuffle_window=5, retry_backoff_seconds=0.01,
                            seed=7)
    with serve(sandbox) as (server, client):
        stripe = connector(server.url)
        receiver = Receiver(stripe, fail_every=9)
        with ServerThread(receiver.app) as hook_server:
            sandbox.add_webhook_endpoint(f"{hook_server.url}/hook", WHSEC)
            make_payouts(client, 60)
            wait_idle(server)
        created = [event["id"] for event in all_events(client)]
        stats = admin(server, "/_sandbox/stats")["webhooks"]
        assert receiver.rejected == 0
        assert set(receiver.accepted) == set(created)
        assert stats["duplicates"] > 0 and stats["failed_attempts"] > 0 and stats["given_up"] == 0
        assert len(receiver.accepted) == len(created) + stats["duplicates"] == stats["succeeded"]
        assert stats["attempted"] == receiver.requests
        first_arrivals = list(dict.fromkeys(receiver.accepted))
        assert first_arrivals != created  # shuffled (and retried) deliveries arrive out of order
        assert ok(client.get(f"/v1/events/{created[0]}"))["pending_webhooks"] == 0


def test_webhooks_signed_with_another_secret_are_rejected_and_given_up() -> None:
    sandbox = StripeSandbox(api_key=KEY, max_attempts=2, retry_backoff_seconds=0.01)
    with serve(sandbox) as (server, client):
        receiver = Receiver(connector(server.url))
        with ServerThread(receiver.app) as hook_server:
            sandbox.add_webhook_endpoint(f"{hook_server.url}/hook", "whsec_someone_else")
            make_payouts(client, 3)
            wait_idle(server)
        stats = admin(server, "/_sandbox/stats")["webhooks"]
        assert receiver.accepted == [] and receiver.rejected == 12
        assert (stats["failed_attempts"], stats["given_up"]) == (12, 6)


def catch_up(stripe: StripeConnector, cursor: str | None) -> list[CatchUpPage]:
    async def walk() -> list[CatchUpPage]:
        async with stripe.http_client(stripe.default_limits) as http:
            return [page async for page in stripe.catch_up(http, cursor)]
    return asyncio.run(walk())


def test_catch_up_recovers_dropped_webhooks_walking_forward_across_pages() -> None:
    sandbox = StripeSandbox(api_key=KEY, drop_rate=0.25, seed=3)
    with serve(sandbox) as (server, client):
        stripe = connector(server.url)
        receiver = Receiver(stripe)
        with ServerThread(receiver.app) as hook_server:
            sandbox.add_webhook_endpoint(f"{hook_server.url}/hook", WHSEC)
            make_payouts(client, 130)
            wait_idle(server)
        created = [event["id"] for event in all_events(client)]
        assert len(created) == 260
        missed = set(created) - set(receiver.accepted)
        assert len(missed) == admin(server, "/_sandbox/stats")["webhooks"]["dropped"] > 0

        everything = catch_up(stripe, None)
        assert [len(page.events) for page in everything] == [100, 100, 60]
        assert [event["id"] for page in everything for event in page.events] == created
        assert all(page.cursor == page.events[-1]["id"] for page in everything)

        cursor = created[29]
        pages = catch_up(stripe, cursor)
        assert [len(page.events) for page in pages] == [100, 100, 30]
        after = [event["id"] for page in pages for event in page.events]
        assert after == created[30:]
        assert missed - set(created[:30]) <= set(after)
        assert pages[-1].cursor == created[-1]
        assert catch_up(stripe, pages[-1].cursor) == []

        make_payouts(client, 1)
        resumed = catch_up(stripe, pages[-1].cursor)
        assert [[e["type"] for e in page.events] for page in resumed] == [["payout.created", "payout.paid"]]


def test_catch_up_translates_errors() -> None:
    with serve(StripeSandbox(api_key=KEY)) as (server, _client):
        with pytest.raises(AuthConfigError):
            catch_up(connector(server.url, api_key="sk_test_wrong"), None)
        with pytest.raises(DataQualityError) as caught:
            catch_up(connector(server.url), "evt_forgotten")
        assert caught.value.code == "cursor_unknown"


def test_webhook_options_change_at_run_time() -> None:
    sandbox = StripeSandbox(api_key=KEY)
    with serve(sandbox) as (server, client):
        receiver = Receiver(connector(server.url))
        with ServerThread(receiver.app) as hook_server:
            httpx.post(f"{server.url}/_sandbox/webhooks/endpoints", json={"url": f"{hook_server.url}/hook",
                                                                          "secret": WHSEC})
            changed = httpx.post(f"{server.url}/_sandbox/webhooks/config", json={"drop_rate": 1.0})
            assert changed.json()["drop_rate"] == 1.0
            make_payouts(client, 2)
            wait_idle(server)
            assert receiver.accepted == [] and admin(server, "/_sandbox/stats")["webhooks"]["dropped"] == 4
            httpx.post(f"{server.url}/_sandbox/webhooks/config", json={"drop_rate": 0.0})
            make_payouts(client, 1)
            wait_idle(server)
            assert len(receiver.accepted) == 2
        bad = httpx.post(f"{server.url}/_sandbox/webhooks/config", json={"drop_rat": 1})
        assert bad.status_code == 400
