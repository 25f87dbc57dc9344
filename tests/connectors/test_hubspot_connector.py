"""Focused HubSpot tests beyond the conformance suite: signature v3, burst limit, loops, batches, catch-up."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from pydantic import SecretStr
from tests.connectors._hubspot_harness import (
    APP_ID,
    CLIENT_SECRET,
    CONNECTION,
    TOKEN,
    WEBHOOK_URL,
    HubSpotHarness,
    dump,
    element,
    hubspot_harness,
    outbound_cases,
    src,
)

from syncline.canonical import Contact, Money
from syncline.canonical.events import canonical_id
from syncline.connectors.base import ConnectionSettings, DeliveryResult
from syncline.connectors.hubspot import HubSpotConnector, HubSpotSandbox
from syncline.connectors.hubspot.client import SignatureV3
from syncline.connectors.hubspot.errors import error_from_body
from syncline.errors import (
    AuthConfigError,
    ConfigError,
    DataQualityError,
    DependencyMissingError,
    RateLimitedError,
    SignatureError,
    TransientError,
)
from syncline.sandbox import ServerThread


@pytest.fixture
def harness() -> Iterator[HubSpotHarness]:
    # Search pacing is covered by the conformance run; here it would only slow the test down.
    with hubspot_harness({"search_rate_per_second": 100.0}, search_limit_per_second=100) as harness:
        yield harness


def connector_for(url: str, **options: Any) -> HubSpotConnector:
    return HubSpotConnector(ConnectionSettings(
        name=CONNECTION, vendor="hubspot", base_url=url,
        secrets={"access_token": SecretStr(TOKEN), "client_secret": SecretStr(CLIENT_SECRET)},
        options={"app_id": str(APP_ID), "currency": "USD", **options},
    ))


# -- signature v3 ---------------------------------------------------------------------------------


def test_signature_v3_matches_an_independent_computation() -> None:
    body = b'[{"eventId":1,"subscriptionType":"deal.propertyChange","objectId":123}]'
    stamp = 1732370000000
    # HubSpot signs the URI with %3A and friends decoded; the request line keeps them encoded.
    called = "https://hooks.example.com/hubspot%3Fignored?portal=62515&tag=a%3Ab%2Cc"
    source = b"POST" + b"https://hooks.example.com/hubspot?ignored?portal=62515&tag=a:b,c" + body + b"1732370000000"
    expected = base64.b64encode(hmac.new(b"my-client-secret", source, hashlib.sha256).digest()).decode()
    signature = SignatureV3("my-client-secret")
    assert signature.signature("POST", called, body, stamp) == expected
    headers = {"X-HubSpot-Signature-v3": expected, "X-HubSpot-Request-Timestamp": str(stamp)}
    signature.verify(headers, body, method="POST", url=called, now=stamp / 1000 + 1)
    with pytest.raises(SignatureError, match="does not match"):
        signature.verify(headers, body, method="PUT", url=called, now=stamp / 1000 + 1)
    with pytest.raises(SignatureError, match="does not match"):
        signature.verify(headers, body, method="POST", url=called.replace("62515", "62516"), now=stamp / 1000)


@pytest.mark.parametrize(("age", "ok"), [(0, True), (299, True), (301, False), (-301, False)])
def test_signature_v3_five_minute_window(age: float, ok: bool) -> None:
    body = b"[]"
    now = time.time()
    headers = SignatureV3(CLIENT_SECRET).headers("POST", WEBHOOK_URL, body, int((now - age) * 1000))
    connector = connector_for("http://unused", webhook_url=WEBHOOK_URL)
    if ok:
        connector.verify_webhook(headers, body, now=now)
    else:
        with pytest.raises(SignatureError, match="tolerance"):
            connector.verify_webhook(headers, body, now=now)


def test_without_a_configured_url_the_request_url_is_checked() -> None:
    connector = connector_for("http://unused")
    body = b'[{"eventId":1}]'
    now = time.time()
    reached = "http://127.0.0.1:8000/v1/webhooks/hubspot"
    headers = SignatureV3(CLIENT_SECRET).headers("POST", reached, body, int(now * 1000))
    connector.verify_webhook_request(headers, body, now=now, method="POST", url=reached)
    with pytest.raises(ConfigError, match="webhook_url"):
        connector.verify_webhook(headers, body, now=now)
    # a configured public URL wins over the address the request reached (a proxy rewrote it)
    proxied = connector_for("http://unused", webhook_url="https://public.example.com/hook")
    with pytest.raises(SignatureError):
        proxied.verify_webhook_request(headers, body, now=now, method="POST", url=reached)


# -- identity and loop prevention -----------------------------------------------------------------


def test_a_retried_batch_has_the_same_identity_in_any_order() -> None:
    connector = connector_for("http://unused")
    first = [element(1, "contact.creation", 5), element(2, "deal.propertyChange", 7, prop="amount", value="10")]
    retried = [{**event, "attemptNumber": 3} for event in reversed(first)]
    assert connector.identify(first).event_id == connector.identify(retried).event_id
    other = [*first, element(3, "contact.creation", 6)]
    assert connector.identify(other).event_id != connector.identify(first).event_id


def test_only_syncline_own_writes_are_dropped() -> None:
    connector = connector_for("http://unused")
    ours = element(1, "deal.propertyChange", 7, prop="amount", value="10", source="INTEGRATION",
                   source_id=str(APP_ID))
    other_app = {**ours, "eventId": 2, "sourceId": "999"}
    ours_without_source = {**ours, "eventId": 3}
    del ours_without_source["sourceId"]
    assert connector.decode([ours]) == []
    assert connector.decode([ours_without_source]) == []  # appId is ours when sourceId is absent
    [event] = connector.decode([other_app])
    assert event.type == "record.changed" and event.data["property_value"] == "10"


@pytest.mark.anyio
async def test_sandbox_webhooks_are_signed_and_own_writes_do_not_loop() -> None:
    received: list[tuple[str, dict[str, str], bytes]] = []
    receiver = FastAPI()

    @receiver.post("/v1/webhooks/hubspot")
    async def hook(request: Request) -> Response:
        received.append((str(request.url), dict(request.headers), await request.body()))
        return Response(status_code=204)

    with ServerThread(receiver) as hooks:
        url = f"{hooks.url}/v1/webhooks/hubspot"
        sandbox = HubSpotSandbox(access_token=TOKEN, app_id=APP_ID, client_secret=CLIENT_SECRET, webhook_url=url)
        with ServerThread(sandbox.app) as api:
            connector = connector_for(api.url)
            case = outbound_cases()[0]
            async with connector.http_client(connector.default_limits) as http:
                result = await connector.deliver(http, case.operation, case.create, idempotency_key="k")
            await _wait_for(lambda: len(received) == 1)
            sandbox.touch("companies", result.external_id, {"name": "Renamed in HubSpot"})
            await _wait_for(lambda: len(received) == 2)
    decoded = []
    for called, headers, body in received:
        connector.verify_webhook_request(headers, body, now=time.time(), method="POST", url=called)
        decoded.append(connector.decode(json.loads(body)))
    assert json.loads(received[0][2])[0]["subscriptionType"] == "company.creation"
    assert decoded[0] == []  # Syncline's own upsert echoed back
    [change] = decoded[1]
    assert change.data["record_type"] == "account"
    assert change.data["property_name"] == "name" and change.data["property_value"] == "Renamed in HubSpot"
    assert change.data["source"]["external_id"] == result.external_id


async def _wait_for(condition: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "the sandbox sent no webhook"
        await asyncio.sleep(0.02)


# -- limits and errors ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_ten_second_burst_limit_answers_429_with_the_window() -> None:
    with hubspot_harness(burst_limit=3) as harness:
        case = harness.outbound_cases[0]
        connector = harness.connector
        async with connector.http_client(connector.default_limits) as http:
            for attempt in range(3):
                await connector.deliver(http, case.operation, case.create, idempotency_key=f"k{attempt}")
            with pytest.raises(RateLimitedError) as caught:
                await connector.deliver(http, case.operation, case.create, idempotency_key="k4")
        assert caught.value.retry_after == 10.0  # no Retry-After: the rolling window from the headers
        assert caught.value.details["policy"] == "TEN_SECONDLY_ROLLING"
        assert harness.sandbox.over_limit == 1
        assert harness.count(case) == 1


def test_default_budget_is_the_private_app_burst_limit() -> None:
    limits = HubSpotConnector.default_limits
    assert limits.rate_per_second == 10.0  # 100 requests per 10 s
    assert limits.batch_size == 100


@pytest.mark.parametrize(("status", "body", "headers", "expected", "code"), [
    (409, {"category": "CONFLICT", "message": "syncline_id already exists"}, {}, DataQualityError, "conflict"),
    (404, {"category": "OBJECT_NOT_FOUND", "message": "gone"}, {}, DataQualityError, "not_found"),
    (400, {"category": "VALIDATION_ERROR", "message": "bad",
           "errors": [{"message": "bad", "context": {"propertyName": ["email"]}}]}, {}, DataQualityError,
     "data_quality"),
    (401, {"category": "INVALID_AUTHENTICATION", "message": "expired"}, {}, AuthConfigError, "auth_config"),
    (503, {"message": "unavailable"}, {}, TransientError, "transient"),
    (429, {"category": "RATE_LIMITS", "policyName": "DAILY", "message": "daily"}, {"Retry-After": "42"},
     RateLimitedError, "rate_limited"),
])
def test_hubspot_errors_map_to_what_to_do_next(status: int, body: dict[str, Any], headers: dict[str, str],
                                               expected: type, code: str) -> None:
    error = error_from_body(status, body, "test", headers=headers)
    assert type(error) is expected and error.code == code
    if status == 429:
        assert isinstance(error, RateLimitedError) and error.retry_after == 42
    if status == 400:
        assert error.details["field"] == "email"


@pytest.mark.parametrize(("policy", "headers", "wait"), [
    ("TEN_SECONDLY_ROLLING", {"X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
                              "X-HubSpot-RateLimit-Remaining": "0"}, 10.0),
    ("DAILY", {"X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}, None),
    ("DAILY", {"Retry-After": "3600"}, 3600.0),
])
def test_rate_limit_waits_follow_the_policy(policy: str, headers: dict[str, str], wait: float | None) -> None:
    error = error_from_body(429, {"category": "RATE_LIMITS", "policyName": policy, "message": "limit"}, "t",
                            headers=headers)
    assert isinstance(error, RateLimitedError) and error.retry_after == wait


@pytest.mark.parametrize("options", [
    {"catch_up_objects": "deals"}, {"catch_up_objects": ["tickets"]}, {"page_size": 500},
    {"search_rate_per_second": 0}, {"tolerance_seconds": -1},
])
def test_bad_options_are_config_errors(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        connector_for("http://unused", **options)


# -- batches --------------------------------------------------------------------------------------


def _upserts(harness: HubSpotHarness, object_path: str) -> int:
    return sum(r.path == f"/crm/v3/objects/{object_path}/batch/upsert" for r in harness.sandbox.requests)


@pytest.mark.anyio
async def test_batch_207_keeps_good_inputs_and_names_the_bad_one(harness: HubSpotHarness) -> None:
    items = harness.batch_items()
    async with harness.connector.http_client(harness.connector.default_limits) as http:
        results = await harness.connector.deliver_batch(http, "upsert_contact", items)
    assert _upserts(harness, "contacts") == 1  # one call for the three items
    good_a, bad, good_b = results
    assert isinstance(good_a, DeliveryResult) and good_a.created is True
    assert isinstance(good_b, DeliveryResult) and good_b.external_id != good_a.external_id
    assert isinstance(bad, DataQualityError) and bad.details["sub_category"] == "INVALID_EMAIL"
    assert harness.sandbox.find("contacts", "contact_batch_bad") is None


@pytest.mark.anyio
async def test_a_whole_batch_refusal_is_split_to_find_the_bad_inputs(harness: HubSpotHarness) -> None:
    bad = [dump(Contact(id=f"contact_bad{i}", source=src("contact", f"b{i}"), email=f"bad{i}")) for i in (1, 2)]
    async with harness.connector.http_client(harness.connector.default_limits) as http:
        results = await harness.connector.deliver_batch(http, "upsert_contact", [("a", bad[0]), ("b", bad[1])])
    assert all(isinstance(result, DataQualityError) for result in results)
    assert _upserts(harness, "contacts") == 3  # the refused batch, then each input alone


@pytest.mark.anyio
async def test_a_deal_waits_for_its_company_then_is_written_once_with_its_lines(harness: HubSpotHarness) -> None:
    company, deal = (next(c for c in harness.outbound_cases if c.operation == op)
                     for op in ("upsert_company", "upsert_deal"))
    async with harness.connector.http_client(harness.connector.default_limits) as http:
        with pytest.raises(DependencyMissingError, match="company account_conf1"):
            await harness.connector.deliver(http, deal.operation, deal.create, idempotency_key="d")
        assert harness.sandbox.records("deals") == [] and harness.sandbox.records("line_items") == []
        account = await harness.connector.deliver(http, company.operation, company.create, idempotency_key="c")
        first = await harness.connector.deliver(http, deal.operation, deal.create, idempotency_key="d")
        again = await harness.connector.deliver(http, deal.operation, deal.create, idempotency_key="d")
    assert again.external_id == first.external_id
    assert harness.sandbox.associated("deals", first.external_id, "companies") == [account.external_id]
    lines = harness.sandbox.records("line_items")
    assert sorted(r["properties"]["syncline_id"] for r in lines) == [
        "opportunity_conf1-line-1", "opportunity_conf1-line-2"]
    assert harness.sandbox.associated("deals", first.external_id, "line_items") == sorted(r["id"] for r in lines)
    assert {r["properties"]["price"] for r in lines} == {"49.00", "1500.00"}


@pytest.mark.anyio
async def test_batched_contacts_are_associated_with_their_companies(harness: HubSpotHarness) -> None:
    company = harness.outbound_cases[0]
    orphan = Contact(id="contact_orphan", source=src("contact", "003Z"), account_id="account_unknown")
    async with harness.connector.http_client(harness.connector.default_limits) as http:
        account = await harness.connector.deliver(http, company.operation, company.create, idempotency_key="c")
        results = await harness.connector.deliver_batch(
            http, "upsert_contact", [*harness.batch_items(), ("o", dump(orphan))])
    linked = [r for r in results if isinstance(r, DeliveryResult)]
    assert len(linked) == 2 and isinstance(results[-1], DependencyMissingError)
    for result in linked:  # the batch items name no company: no association
        assert harness.sandbox.associated("contacts", result.external_id, "companies") == []
    assert harness.sandbox.find("contacts", "contact_orphan") is None
    contact = next(c for c in harness.outbound_cases if c.operation == "upsert_contact")
    async with harness.connector.http_client(harness.connector.default_limits) as http:
        written = await harness.connector.deliver(http, contact.operation, contact.create, idempotency_key="k")
    assert harness.sandbox.associated("contacts", written.external_id, "companies") == [account.external_id]


# -- catch-up -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_catch_up_turns_a_won_deal_into_closed_won(harness: HubSpotHarness) -> None:
    sandbox = harness.sandbox
    connector = harness.connector
    company = sandbox.create("companies", {"name": "Globex"})
    won = sandbox.create("deals", {"dealname": "Globex", "dealstage": "closedwon", "amount": "1250.5",
                                   "deal_currency_code": "EUR"})
    sandbox.associate("deals", won, "companies", company)
    orphan = sandbox.create("deals", {"dealname": "No company", "dealstage": "closedwon"})
    synced = harness.outbound_cases[0]  # a company Syncline wrote: it carries its canonical id
    async with connector.http_client(connector.default_limits) as http:
        ours = await connector.deliver(http, synced.operation, synced.create, idempotency_key="c")
        open_deal = sandbox.create("deals", {"dealname": "Upsell", "dealstage": "qualifiedtobuy", "amount": "10"})
        sandbox.associate("deals", open_deal, "companies", ours.external_id)
        snapshots = {e["id"]: e async for page in connector.catch_up(http, None) for e in page.events}
    [event] = connector.decode(snapshots[won])
    assert event.type == "opportunity.closed_won"
    assert event.data["amount"] == Money(amount=125050, currency="EUR").model_dump(mode="json")
    assert event.data["account_id"] == canonical_id(CONNECTION, "account", f"companies/{company}")
    [upsell] = connector.decode(snapshots[open_deal])
    assert upsell.type == "opportunity.created"
    assert upsell.data["account_id"] == synced.create["id"]
    assert upsell.data["currency"] == "USD"  # the portal currency from options.currency
    with pytest.raises(DataQualityError, match="no associated company"):
        connector.decode(snapshots[orphan])
    [account] = connector.decode(snapshots[company])
    assert account.type == "account.created" and account.data["name"] == "Globex"


def test_the_sandbox_keeps_unique_values_unique(harness: HubSpotHarness) -> None:
    """A write that would give a second record a taken unique value is HubSpot's 409 CONFLICT."""
    url = str(harness.connector.settings.base_url)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    path = f"{url}/crm/v3/objects/companies/batch/upsert"
    for key in ("account_a", "account_b"):
        inputs = [{"idProperty": "syncline_id", "id": key, "properties": {"syncline_id": key, "name": key}}]
        assert httpx.post(path, json={"inputs": inputs}, headers=headers).status_code == 200
    taken = [{"idProperty": "syncline_id", "id": "account_a", "properties": {"syncline_id": "account_b"}}]
    response = httpx.post(path, json={"inputs": taken}, headers=headers)
    assert response.status_code == 409
    error = error_from_body(response.status_code, response.json(), "test")
    assert isinstance(error, DataQualityError) and error.code == "conflict"
    assert len(harness.sandbox.records("companies")) == 2


def test_the_sandbox_refuses_malformed_bodies_as_hubspot_does(harness: HubSpotHarness) -> None:
    url = str(harness.connector.settings.base_url)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    for path, body in [("/crm/v4/associations/deals/companies/batch/associate/default", {"inputs": [{"to": {}}]}),
                       ("/crm/v3/objects/0-3/search", {"limit": "many"}),
                       ("/crm/v3/objects/tickets/batch/upsert", {"inputs": []})]:
        response = httpx.post(url + path, json=body, headers=headers)
        assert response.status_code == 400, path
        assert response.json()["category"] == "VALIDATION_ERROR"
    assert httpx.post(url + "/crm/v3/objects/0-3/search", json={}).status_code == 401


@pytest.mark.anyio
@pytest.mark.parametrize("external_ids", [{"billing": 5}, ["sub_1"], {"erp": ""}])
async def test_a_malformed_write_back_is_refused_before_any_request(harness: HubSpotHarness,
                                                                   external_ids: Any) -> None:
    case = next(c for c in harness.outbound_cases if c.operation == "write_back_status")
    payload = {**case.update, "external_ids": external_ids}
    async with harness.connector.http_client(harness.connector.default_limits) as http:
        with pytest.raises(DataQualityError, match="external_ids"):
            await harness.connector.deliver(http, case.operation, payload, idempotency_key="wb")
    assert list(harness.sandbox.requests) == []
