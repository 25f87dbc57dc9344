"""Salesforce connector behaviour beyond the shared suite, against the sandbox over real HTTP.

Token refresh and the JWT bearer flow, ``300`` multiple matches, opportunity lines, the daily
API budget, change-origin loop prevention, and Outbound Messages answered with the SOAP Ack
through Syncline's own webhook endpoint.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import anyio
import httpx
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr
from sqlalchemy import func, select
from tests.connectors._salesforce_harness import ACCOUNT, PRICE, WEBHOOK_SECRET, SalesforceHarness, make_connector

from syncline.api import create_app
from syncline.canonical import Account, SourceRef
from syncline.config import parse_config
from syncline.connectors.base import DeliveryResult
from syncline.connectors.salesforce import SalesforceConnector, SalesforceSandbox
from syncline.connectors.salesforce.client import ApiBudget, data_path
from syncline.connectors.salesforce.inbound import ACK_ENVELOPE
from syncline.errors import (
    AuthConfigError,
    DataQualityError,
    DependencyMissingError,
    RateLimitedError,
    SignatureError,
)
from syncline.pipeline.normalize import normalize_batch
from syncline.runtime import Syncline
from syncline.sandbox import ServerThread
from syncline.store import inbox


@pytest.fixture
def sandbox() -> Iterator[SalesforceSandbox]:
    with SalesforceSandbox(query_batch_size=3) as served:
        yield served


@pytest.fixture
def harness(sandbox: SalesforceSandbox) -> SalesforceHarness:
    return SalesforceHarness(sandbox)


def account(account_id: str, name: str | None = "Globex") -> dict[str, Any]:
    return Account(id=account_id, source=SourceRef(system="stripe", object_type="customer", external_id="cus_1"),
                   name=name).model_dump(mode="json")


async def upsert_account(connector: SalesforceConnector, payload: dict[str, Any]) -> str:
    async with connector.http_client(connector.default_limits) as http:
        result = await connector.deliver(http, "upsert_account", payload, idempotency_key=f"k-{payload['id']}")
    return result.external_id


# -- authentication ---------------------------------------------------------------------------
@pytest.mark.anyio
async def test_expired_session_is_refreshed_once_and_the_call_repeated(sandbox: SalesforceSandbox) -> None:
    connector = make_connector(sandbox)
    first = await upsert_account(connector, account("account_refresh"))
    assert sandbox.stats.token_requests == 1
    sandbox.expire_sessions()
    second = await upsert_account(connector, account("account_refresh", "Globex Corporation"))
    assert second == first
    assert sandbox.stats.token_requests == 2
    assert sandbox.find("Account", "account_refresh")[0]["Name"] == "Globex Corporation"
    # the refreshed token is cached: no token call for the next delivery
    await upsert_account(connector, account("account_refresh_2"))
    assert sandbox.stats.token_requests == 2


@pytest.mark.anyio
async def test_refused_client_secret_is_an_auth_error_without_the_secret(sandbox: SalesforceSandbox) -> None:
    connector = make_connector(sandbox)
    sandbox.client_secret = "rotated-by-an-admin"
    with pytest.raises(AuthConfigError) as caught:
        await upsert_account(connector, account("account_denied"))
    assert "invalid_client" in caught.value.message
    assert "sandbox-client-secret" not in caught.value.message
    assert "sandbox-client-secret" not in repr(connector.auth())
    assert sandbox.find("Account", "account_denied") == []


@pytest.fixture(scope="module")
def rsa_key() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


def jwt_connector(sandbox: SalesforceSandbox, private_key: str) -> SalesforceConnector:
    connector = make_connector(sandbox, auth="jwt_bearer", username="integration@acme.example")
    connector.settings.secrets = {**connector.settings.secrets, "private_key": SecretStr(private_key)}
    return connector


@pytest.mark.anyio
async def test_jwt_bearer_flow_signs_an_assertion_the_org_accepts(rsa_key: tuple[str, str]) -> None:
    private, public = rsa_key
    with SalesforceSandbox(jwt_public_key=public, jwt_username="integration@acme.example") as sandbox:
        record_id = await upsert_account(jwt_connector(sandbox, private), account("account_jwt"))
        assert sandbox.find("Account", "account_jwt")[0]["Id"] == record_id

        other = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
        with pytest.raises(AuthConfigError, match="invalid_grant"):
            await upsert_account(jwt_connector(sandbox, other), account("account_jwt_forged"))
        assert sandbox.find("Account", "account_jwt_forged") == []


# -- upserts ----------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_external_id_matching_two_records_is_parked_as_multiple_matches(sandbox: SalesforceSandbox) -> None:
    first = sandbox.ui_create("Account", {"Name": "Acme", "Syncline_Id__c": "account_twice"})
    connector = make_connector(sandbox)
    async with connector.http_client(connector.default_limits) as http:
        # another integration creates a second record with the same (non-unique) external id
        created = await http.post(data_path("sobjects/Account"),
                                  json={"Name": "Acme (dupe)", "Syncline_Id__c": "account_twice"})
    assert created.status_code == 201
    second = {"Id": created.json()["id"]}
    with pytest.raises(DataQualityError) as caught:
        await upsert_account(connector, account("account_twice", "Acme Corp"))
    error = caught.value
    assert error.code == "multiple_matches" and not error.retryable
    assert sorted(url.rsplit("/", 1)[-1] for url in error.details["matches"]) == sorted([first["Id"], second["Id"]])
    assert {r["Name"] for r in sandbox.find("Account", "account_twice")} == {"Acme", "Acme (dupe)"}


@pytest.mark.anyio
async def test_update_answered_without_a_body_reads_the_record_id_back(sandbox: SalesforceSandbox) -> None:
    connector = make_connector(sandbox)
    sandbox.updates_answer_no_content = True
    created = await upsert_account(connector, account("account_legacy"))
    calls = sandbox.stats.api_calls
    updated = await upsert_account(connector, account("account_legacy", "Globex Legacy"))
    assert updated == created and sandbox.stats.api_calls == calls + 2  # the PATCH, then a GET of the Id
    assert sandbox.find("Account", "account_legacy")[0]["Name"] == "Globex Legacy"


@pytest.mark.anyio
async def test_opportunity_lines_are_upserted_with_exact_amounts(harness: SalesforceHarness) -> None:
    sandbox, connector = harness.sandbox, harness.connector
    case = next(case for case in harness.outbound_cases if case.operation == "upsert_opportunity")
    async with connector.http_client(connector.default_limits) as http:
        await connector.deliver(http, case.operation, case.create, idempotency_key="opp-1")
        await connector.deliver(http, case.operation, case.update, idempotency_key="opp-2")
    (opportunity,) = sandbox.find("Opportunity", str(case.create["id"]))
    assert opportunity["Amount"] == Decimal("1200.00")
    assert opportunity["AccountId"] == harness.account["Id"]
    (line,) = sandbox.find("OpportunityLineItem", f"{case.create['id']}:line_1")
    assert line["OpportunityId"] == opportunity["Id"]
    assert line["UnitPrice"] == Decimal("600.00") and line["Quantity"] == 2
    assert line["PricebookEntryId"] == sandbox.find("PricebookEntry", PRICE)[0]["Id"]


@pytest.mark.anyio
async def test_line_with_an_unknown_price_waits_for_it_and_writes_no_line(harness: SalesforceHarness) -> None:
    connector = harness.connector
    case = next(case for case in harness.outbound_cases if case.operation == "upsert_opportunity")
    payload = orjson.loads(orjson.dumps(case.create))
    payload["id"] = "opportunity_unknown_price"
    payload["lines"].append({**payload["lines"][0], "id": "line_2", "price_id": "price_not_synced"})
    async with connector.http_client(connector.default_limits) as http:
        with pytest.raises(DependencyMissingError) as caught:
            await connector.deliver(http, "upsert_opportunity", payload, idempotency_key="opp-x")
    assert caught.value.details["referenced_entity"] == "PricebookEntry"
    # all or none: the valid first line was rolled back with the invalid one
    assert harness.sandbox.find("OpportunityLineItem", "opportunity_unknown_price:line_1") == []


@pytest.mark.anyio
async def test_write_back_touches_only_the_syncline_fields(harness: SalesforceHarness) -> None:
    sandbox, connector = harness.sandbox, harness.connector
    case = next(case for case in harness.outbound_cases if case.operation == "write_back_status")
    before = sandbox.find("Opportunity", str(case.create["id"]))[0]
    async with connector.http_client(connector.default_limits) as http:
        await connector.deliver(http, case.operation, case.update, idempotency_key="wb-1")
    after = sandbox.find("Opportunity", str(case.create["id"]))[0]
    assert after["Syncline_Status__c"] == "active in billing and ERP"
    assert (after["Syncline_Billing_Id__c"], after["Syncline_ERP_Id__c"]) == ("sub_1Q2w3E", "SO-1042")
    # the deal's own fields stay as the sales team left them, though the payload carried others
    assert {k: after[k] for k in ("Name", "StageName", "Amount", "CloseDate")} == {
        k: before[k] for k in ("Name", "StageName", "Amount", "CloseDate")}


@pytest.mark.anyio
async def test_write_back_to_a_deal_that_started_in_the_org_addresses_it_by_id_and_stamps_the_syncline_id(
    harness: SalesforceHarness,
) -> None:
    sandbox, connector = harness.sandbox, harness.connector
    case = next(case for case in harness.outbound_cases if case.operation == "write_back_status")
    deal = sandbox.ui_create("Opportunity", {"Name": "Won in the UI", "StageName": "Closed Won",
                                             "CloseDate": "2026-11-20", "Amount": 1200})
    payload = {**case.update, "id": "opportunity_ui_deal",
               "source": {"system": connector.name, "object_type": "Opportunity", "external_id": deal["Id"]}}
    async with connector.http_client(connector.default_limits) as http:
        result = await connector.deliver(http, "write_back_status", payload, idempotency_key="wb-ui")
    assert result.external_id == deal["Id"]
    (after,) = sandbox.find("Opportunity", "opportunity_ui_deal")
    assert after["Id"] == deal["Id"]
    assert after["Syncline_Status__c"] == "active in billing and ERP"
    assert after["Name"] == "Won in the UI"


# -- daily API budget -------------------------------------------------------------------------
@pytest.mark.anyio
async def test_daily_budget_stops_at_the_reserve_and_resumes_when_the_day_refills() -> None:
    now = [1_800_000_000.0]

    def clock() -> float:
        return now[0]

    with SalesforceSandbox(daily_limit=6, day_seconds=60, clock=clock) as sandbox:
        connector = make_connector(sandbox, api_reserve=2, budget_probe_seconds=30)
        assert (connector.budget.reserve, connector.budget.probe_seconds) == (2, 30)
        connector.budget = ApiBudget(connector.budget.reserve, connector.budget.probe_seconds, clock=clock)
        async with connector.http_client(connector.default_limits) as http:
            for index in range(4):
                await connector.deliver(http, "upsert_account", account(f"account_budget_{index}"),
                                        idempotency_key=f"b{index}")
            assert sandbox.api_used == 4
            for elapsed, wait in ((0, 30), (10, 20)):
                now[0] += elapsed
                with pytest.raises(RateLimitedError) as caught:
                    await connector.deliver(http, "upsert_account", account("account_budget_4"),
                                            idempotency_key="b4")
                assert caught.value.code == "api_budget_spent" and caught.value.retry_after == wait
            assert sandbox.api_used == 4  # stopped before calling: the reserve stays for others
            now[0] += 51  # the org's day rolls over, and the probe time has come
            await connector.deliver(http, "upsert_account", account("account_budget_4"), idempotency_key="b4")
            assert sandbox.api_used == 1
            assert connector.budget.usage is not None and connector.budget.usage.remaining == 5
            await connector.deliver(http, "upsert_account", account("account_budget_5"), idempotency_key="b5")
        assert len(sandbox.find("Account", "account_budget_4")) == 1


@pytest.mark.anyio
async def test_allowance_spent_by_other_integrations_is_rate_limited(sandbox: SalesforceSandbox) -> None:
    connector = make_connector(sandbox)
    sandbox.api_used = sandbox.daily_limit
    with pytest.raises(RateLimitedError) as caught:
        await upsert_account(connector, account("account_over_limit"))
    assert caught.value.details["vendor_code"] == "REQUEST_LIMIT_EXCEEDED"
    assert sandbox.stats.refused_over_limit == 1 and sandbox.find("Account", "account_over_limit") == []


# -- loop prevention --------------------------------------------------------------------------
@pytest.mark.anyio
async def test_changes_syncline_made_decode_to_nothing_and_a_persons_changes_do_not(
    sandbox: SalesforceSandbox,
) -> None:
    connector = make_connector(sandbox)
    await upsert_account(connector, account("account_ours"))
    ours = sandbox.change_events[-1]
    assert ours["payload"]["ChangeEventHeader"]["changeOrigin"].endswith(";client=syncline")
    assert connector.decode(ours) == []
    theirs = sandbox.ui_update("Account", sandbox.find("Account", "account_ours")[0]["Id"], {"Name": "Renamed"})
    decoded = connector.decode(sandbox.change_events[-1])
    assert [event.type for event in decoded] == ["account.updated"]
    assert decoded[0].data["id"] == "account_ours" and decoded[0].data["name"] == "Renamed"
    assert decoded[0].data["source"]["external_id"] == theirs["Id"]
    # another client id is someone else's integration, not us
    other = make_connector(sandbox, call_options_client="syncline-eu")
    assert [event.type for event in other.decode(ours)] == ["account.created"]


@pytest.mark.anyio
async def test_catch_up_skips_records_syncline_wrote_last(sandbox: SalesforceSandbox) -> None:
    connector = make_connector(sandbox)
    await upsert_account(connector, account("account_written_by_us"))
    sandbox.ui_create("Account", {"Name": "Typed in by sales"})
    async with connector.http_client(connector.default_limits) as http:
        events = [event async for page in connector.catch_up(http, None) for event in page.events]
    decoded = [connector.decode(event) for event in events]
    assert [[e.data["name"] for e in batch] for batch in decoded] == [[], ["Typed in by sales"]]


# -- through Syncline's webhook endpoint ------------------------------------------------------
@pytest.fixture
def api(store_url: str, sandbox: SalesforceSandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Syncline, str]]:
    monkeypatch.setenv("SF_CLIENT_ID", sandbox.client_id)
    monkeypatch.setenv("SF_CLIENT_SECRET", sandbox.client_secret)
    monkeypatch.setenv("SF_WEBHOOK_SECRET", WEBHOOK_SECRET)
    config = parse_config({
        "store": store_url,
        "connections": {"crm": {
            "vendor": "salesforce", "base_url": sandbox.url,
            "secrets": {"client_id": "${env:SF_CLIENT_ID}", "client_secret": "${env:SF_CLIENT_SECRET}",
                        "webhook_secret": "${env:SF_WEBHOOK_SECRET}"},
            "options": {"organization_id": sandbox.organization_id},
        }},
        "routes": [],
    })
    syncline = Syncline(config)
    syncline.migrate()
    server = ServerThread(create_app(syncline)).start()
    yield syncline, f"{server.url}/v1/webhooks/crm"
    server.stop()
    syncline.close()


def inbox_rows(syncline: Syncline) -> int:
    with syncline.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(inbox)).scalar_one())


def test_outbound_message_is_stored_acked_with_soap_and_decoded(
    api: tuple[Syncline, str], sandbox: SalesforceSandbox,
) -> None:
    syncline, endpoint = api
    acme = sandbox.ui_create("Account", {"Name": "Acme", "Syncline_Id__c": ACCOUNT})
    deal = sandbox.ui_create("Opportunity", {"Name": "Acme renewal", "StageName": "Negotiation",
                                             "CloseDate": date(2026, 12, 1).isoformat(), "AccountId": acme["Id"]})
    sandbox.outbound_messages["Opportunity"] = endpoint
    sandbox.ui_update("Opportunity", deal["Id"], {"StageName": "Closed Won", "Amount": 5000})
    sandbox.wait_for_deliveries()
    assert sandbox.stats.acks == [True]
    # the same message again (Salesforce retries until acked) is acked and not stored twice
    response = httpx.post(endpoint, content=sandbox.sent_outbound_messages[0],
                          headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'})
    assert response.status_code == 200 and response.content == ACK_ENVELOPE
    assert response.headers["content-type"].startswith("text/xml")
    assert inbox_rows(syncline) == 1
    stats = normalize_batch(syncline.engine, syncline.connectors, syncline.router)
    assert (stats.claimed, stats.parked) == (1, 0)
    with syncline.engine.connect() as conn:
        state, event_id = conn.execute(select(inbox.c.state, inbox.c.vendor_event_id)).one()
    assert event_id.startswith("om:04l") and state == "done"
    decoded = syncline.connectors["crm"].decode(syncline.connectors["crm"].parse_body(
        sandbox.sent_outbound_messages[0]))
    assert [event.type for event in decoded] == ["opportunity.closed_won"]
    assert decoded[0].data["amount"] == {"amount": 500000, "currency": "USD"}


def test_outbound_message_from_another_org_is_refused_without_an_ack(
    api: tuple[Syncline, str], sandbox: SalesforceSandbox,
) -> None:
    syncline, endpoint = api
    deal = sandbox.ui_create("Account", {"Name": "Acme"})
    body = sandbox.outbound_message("Account", [deal["Id"]]).replace(
        sandbox.organization_id.encode(), b"00D000000000666EAA")
    response = httpx.post(endpoint, content=body, headers={"Content-Type": "text/xml"})
    assert response.status_code == 400 and b"<Ack>" not in response.content
    assert inbox_rows(syncline) == 0


def test_outbound_message_with_a_dtd_is_refused(sandbox: SalesforceSandbox) -> None:
    connector = make_connector(sandbox)
    body = b'<?xml version="1.0"?><!DOCTYPE lol [<!ENTITY lol "lol">]><soapenv:Envelope/>'
    with pytest.raises(SignatureError, match="DTD"):
        connector.verify_webhook({}, body, now=time.time())


def test_relayed_change_events_reach_the_inbox_and_syncline_echoes_are_ignored(
    api: tuple[Syncline, str], sandbox: SalesforceSandbox,
) -> None:
    syncline, endpoint = api
    sandbox.webhook_url, sandbox.webhook_secret = endpoint, WEBHOOK_SECRET
    connector = syncline.connectors["crm"]
    assert isinstance(connector, SalesforceConnector)

    async def ours() -> None:
        await upsert_account(connector, account("account_echo"))

    anyio.run(ours)
    sandbox.ui_create("Account", {"Name": "From sales"})
    sandbox.wait_for_deliveries()
    assert sandbox.stats.relay_posts == 2 and inbox_rows(syncline) == 2
    stats = normalize_batch(syncline.engine, syncline.connectors, syncline.router)
    assert (stats.claimed, stats.events, stats.ignored, stats.parked) == (2, 1, 1, 0)


# -- batches ----------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_batch_of_201_accounts_takes_two_collection_calls(sandbox: SalesforceSandbox) -> None:
    connector = make_connector(sandbox)
    items = [(f"k{index}", account(f"account_bulk_{index}", f"Bulk {index}")) for index in range(201)]
    async with connector.http_client(connector.default_limits) as http:
        results = await connector.deliver_batch(http, "upsert_account", items)
    assert sandbox.stats.api_calls == 2
    delivered = [result for result in results if isinstance(result, DeliveryResult)]
    assert len(delivered) == 201 and all(result.created for result in delivered)
    assert [result.external_id for result in delivered] == [
        sandbox.find("Account", f"account_bulk_{index}")[0]["Id"] for index in range(201)]


@pytest.mark.anyio
async def test_unbatchable_operation_in_a_batch_goes_one_by_one(harness: SalesforceHarness) -> None:
    connector, sandbox = harness.connector, harness.sandbox
    case = next(case for case in harness.outbound_cases if case.operation == "upsert_opportunity")
    second = {**case.create, "id": "opportunity_second"}
    async with connector.http_client(connector.default_limits) as http:
        results = await connector.deliver_batch(http, "upsert_opportunity", [("a", case.create), ("b", second)])
    assert [type(result).__name__ for result in results] == ["DeliveryResult", "DeliveryResult"]
    assert len(sandbox.find("OpportunityLineItem", "opportunity_second:line_1")) == 1
