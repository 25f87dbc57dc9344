"""Salesforce payload decoding and error translation, on recorded-shape payloads (no server needed)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from pydantic import SecretStr

from syncline.canonical import canonical_id
from syncline.connectors.base import ConnectionSettings
from syncline.connectors.salesforce import SalesforceConnector
from syncline.connectors.salesforce.client import JwtBearer, parse_limit_info
from syncline.connectors.salesforce.errors import error_from_response
from syncline.errors import (
    AuthConfigError,
    BusinessRuleError,
    ConfigError,
    DataQualityError,
    DependencyMissingError,
    RateLimitedError,
    SignatureError,
    TransientError,
)

DATA = Path(__file__).parent.parent / "data" / "salesforce"
ORG = "00D5g000004Ej6JEAS"


def connector(**options: Any) -> SalesforceConnector:
    return SalesforceConnector(ConnectionSettings(
        name="crm", vendor="salesforce", base_url="https://acme.my.salesforce.com",
        secrets={"client_id": SecretStr("id"), "client_secret": SecretStr("secret"),
                 "webhook_secret": SecretStr("relay")},
        options={"organization_id": ORG, **options},
    ))


def test_outbound_message_with_two_notifications_decodes_each_with_its_own_id() -> None:
    body = (DATA / "outbound_message_two_opportunities.xml").read_bytes()
    sf = connector(multi_currency=True)
    sf.verify_webhook({}, body, now=0)
    payload = sf.parse_body(body)
    identity = sf.identify(payload)
    assert identity.event_id.startswith("om:") and identity.event_type == "outbound_message.Opportunity"
    assert sf.identify(sf.parse_body(body)) == identity
    won, open_deal = sf.decode(payload)
    assert (won.type, open_deal.type) == ("opportunity.closed_won", "opportunity.updated")
    assert won.id != open_deal.id
    assert won.data["name"] == "Acme & Sons renewal"
    assert won.data["amount"] == {"amount": 2400000, "currency": "EUR"}
    assert won.data["id"] == canonical_id("crm", "opportunity", "0065g00000XyZ1AAAR")  # nil external id
    assert open_deal.data["id"] == "opportunity_acme_addon"
    assert open_deal.data["amount"] == {"amount": 100050, "currency": "EUR"}
    assert won.data["account_id"] == canonical_id("crm", "account", "0015g00000AbCdEAAA")
    assert sf.webhook_response(body) is not None
    assert sf.webhook_response(b'{"schema": "x"}') is None


def test_outbound_message_action_allow_list() -> None:
    body = (DATA / "outbound_message_two_opportunities.xml").read_bytes()
    connector(outbound_message_action_ids=["04k5g000000KzBX"]).verify_webhook({}, body, now=0)
    with pytest.raises(SignatureError, match="action"):
        connector(outbound_message_action_ids=["04k5g000000Other"]).verify_webhook({}, body, now=0)
    with pytest.raises(SignatureError, match="organization_id"):
        connector(organization_id="").verify_webhook({}, body, now=0)


def test_change_event_merged_over_two_records_yields_events_per_record() -> None:
    payload = orjson.loads((DATA / "opportunity_change_event_two_records.json").read_bytes())
    sf = connector()
    assert sf.identify(payload).event_id == "tx:0002a1b2-c3d4-e5f6-0718-293a4b5c6d7e/1"
    events = sf.decode(payload)
    assert [event.type for event in events] == ["opportunity.updated", "opportunity.closed_lost"] * 2
    assert [event.data["source"]["external_id"] for event in events] == ["0065g00000XyZ1AAAR"] * 2 + [
        "0065g00000XyZ2AAAR"] * 2
    assert len({event.id for event in events}) == 4
    assert events[0].data["amount"] == {"amount": 9999, "currency": "USD"}  # single-currency org default
    assert events[0].sequence == f"{1795000000123:020d}"


def test_update_event_without_the_enriched_account_is_a_data_quality_error() -> None:
    payload = orjson.loads((DATA / "opportunity_change_event_two_records.json").read_bytes())
    del payload["payload"]["AccountId"]
    with pytest.raises(DataQualityError, match="AccountId") as caught:
        connector().decode(payload)
    assert caught.value.code == "field_missing"


def test_value_outside_the_canonical_model_is_a_data_quality_error() -> None:
    payload = orjson.loads((DATA / "opportunity_change_event_two_records.json").read_bytes())
    payload["payload"]["CurrencyIsoCode"] = "EURO"
    del payload["payload"]["Amount"]
    with pytest.raises(DataQualityError, match="canonical model"):
        connector().decode(payload)


def test_relay_without_a_configured_secret_is_refused_not_crashed() -> None:
    sf = SalesforceConnector(ConnectionSettings(name="crm", vendor="salesforce", base_url="https://x",
                                                options={"organization_id": ORG}))
    with pytest.raises(SignatureError, match="webhook_secret"):
        sf.verify_webhook({"X-Syncline-Signature": "t=1,v1=00"}, b"{}", now=1)


def test_event_without_transaction_key_is_identified_by_its_replay_id() -> None:
    payload = orjson.loads((DATA / "opportunity_change_event_two_records.json").read_bytes())
    del payload["payload"]["ChangeEventHeader"]["transactionKey"]
    assert connector().identify(payload).event_id == "replay:Opportunity/4711"
    payload["event"] = {}
    with pytest.raises(DataQualityError, match="neither"):
        connector().identify(payload)
    with pytest.raises(DataQualityError):
        connector().identify({"hello": "world"})


def test_relay_signature_rejects_malformed_headers() -> None:
    sf = connector()
    body = b'{"a": 1}'
    for header in ("v1=abc", "t=abc,v1=abc", "t=1", "nonsense"):
        with pytest.raises(SignatureError):
            sf.verify_webhook({"X-Syncline-Signature": header}, body, now=1)


def test_catch_up_cursor_that_is_not_ours_is_refused() -> None:
    sf = connector()

    async def first_page() -> None:
        async with httpx.AsyncClient(base_url="http://127.0.0.1:9") as http:
            await anext(sf.catch_up(http, "Lead=2026-01-01T00:00:00.000Z~00Q"))

    with pytest.raises(DataQualityError, match="malformed"):
        anyio.run(first_page)


def _answer(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, content=orjson.dumps(body), headers=headers)


@pytest.mark.parametrize(("status", "body", "headers", "expected", "code"), [
    (300, ["/services/data/v61.0/sobjects/Account/001A", "/services/data/v61.0/sobjects/Account/001B"], None,
     DataQualityError, "multiple_matches"),
    (400, [{"message": "Required fields are missing: [Name]", "errorCode": "REQUIRED_FIELD_MISSING",
            "fields": ["Name"]}], None, DataQualityError, "required_field_missing"),
    (400, [{"message": "Amount must be positive", "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
            "fields": []}], None, DataQualityError, "field_custom_validation_exception"),
    (400, [{"message": "Name: data value too large", "errorCode": "STRING_TOO_LONG", "fields": ["Name"]}], None,
     DataQualityError, "string_too_long"),
    (400, [{"message": "Foreign key external ID: account_9 not found for field Syncline_Id__c in entity Account",
            "errorCode": "INVALID_FIELD", "fields": []}], None, DependencyMissingError, "dependency_missing"),
    (404, [{"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}], None,
     DataQualityError, "not_found"),
    (403, [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}],
     {"Retry-After": "30"}, RateLimitedError, "rate_limited"),
    (401, [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}], None,
     AuthConfigError, "auth_config"),
    (403, [{"message": "API is not enabled for this Organization", "errorCode": "API_DISABLED_FOR_ORG"}], None,
     AuthConfigError, "auth_config"),
    (503, [{"message": "Server temporarily unavailable", "errorCode": "SERVER_UNAVAILABLE"}], None,
     TransientError, "transient"),
    (400, [{"message": "unable to obtain exclusive access to this record", "errorCode": "UNABLE_TO_LOCK_ROW"}],
     None, TransientError, "transient"),
    (409, [{"message": "conflict", "errorCode": "CONFLICT"}], None, BusinessRuleError, "business_rule"),
])
def test_salesforce_answers_map_to_what_the_pipeline_does_next(
    status: int, body: Any, headers: dict[str, str] | None, expected: type[Exception], code: str,
) -> None:
    error = error_from_response(_answer(status, body, headers), what="upsert_account account_1")
    assert type(error) is expected, repr(error)
    assert error.code == code
    if isinstance(error, RateLimitedError):
        assert error.retry_after == 30


def test_jwt_flow_without_pyjwt_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jwt", None)  # makes `import jwt` fail as if not installed
    grant = JwtBearer("3MVG9", "integration@acme.example", "https://login.salesforce.com", "not-a-key")
    with pytest.raises(ConfigError, match=r"syncline\[salesforce\]"):
        grant.form(0)


def test_limit_info_header_is_read() -> None:
    usage = parse_limit_info("api-usage=14990/15000")
    assert usage is not None and (usage.used, usage.allowed, usage.remaining) == (14990, 15000, 10)
    assert parse_limit_info(None) is None and parse_limit_info("per-app-api-usage=1/2") is None
    both = parse_limit_info("per-app-api-usage=17/250(appName=syncline); api-usage=25/15000")
    assert both is not None and (both.used, both.allowed) == (25, 15000)
