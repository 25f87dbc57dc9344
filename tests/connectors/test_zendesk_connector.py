"""Zendesk connector behaviour beyond the conformance suite, against the live sandbox."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from pydantic import SecretStr
from tests.connectors._zendesk_harness import account, connector_for, contact, entitlement, ticket

from syncline.canonical import objects as o
from syncline.connectors.base import ConnectionSettings, DeliveryResult
from syncline.connectors.zendesk import ZendeskConnector, ZendeskSandbox
from syncline.connectors.zendesk.client import RATE_LIMIT_HEADER, RATE_LIMIT_REMAINING_HEADER
from syncline.connectors.zendesk.errors import error_from_response
from syncline.connectors.zendesk.inbound import SIGNATURE_HEADER, TIMESTAMP_HEADER, ExportCursor, WebhookSignature
from syncline.errors import (
    AuthConfigError,
    BusinessRuleError,
    DataQualityError,
    RateLimitedError,
    SignatureError,
    TransientError,
)
from syncline.sandbox import ServerThread


class FakeClock:
    """A settable clock for the sandbox, so minute windows and export seconds are exact."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sandbox() -> Iterator[ZendeskSandbox]:
    with ZendeskSandbox(job_polls=1) as running:
        yield running


# -- entitlements --------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_entitlement_level_tag_is_replaced_not_accumulated(sandbox: ZendeskSandbox) -> None:
    connector = connector_for(sandbox)
    async with connector.http_client(connector.default_limits) as http:
        await connector.deliver(http, "upsert_organization", account("acct_t", "Tag Co"), idempotency_key="a")
        org = sandbox.organizations_with_external_id("acct_t")[0]
        org["tags"].append("vip")  # an agent's own tag, which must survive
        steps = [
            (o.EntitlementLevel.STANDARD, True, ["vip", "syncline_standard"]),
            (o.EntitlementLevel.PREMIUM, True, ["vip", "syncline_premium"]),
            (o.EntitlementLevel.BASIC, True, ["vip", "syncline_basic"]),
            (o.EntitlementLevel.BASIC, False, ["vip"]),
            (o.EntitlementLevel.NONE, True, ["vip"]),
        ]
        for index, (level, active, tags) in enumerate(steps):
            result = await connector.deliver(http, "set_entitlement", entitlement("acct_t", level, active=active),
                                             idempotency_key=f"e{index}")
            assert result == DeliveryResult(str(org["id"]), "entitlement", created=False)
            assert org["tags"] == tags, level
            assert org["organization_fields"] == {"support_level": level.value, "entitlement_active": active}
    assert len(sandbox.organizations) == 1


@pytest.mark.anyio
async def test_entitlement_field_keys_are_options(sandbox: ZendeskSandbox) -> None:
    connector = connector_for(sandbox, support_level_field="tier")
    async with connector.http_client(connector.default_limits) as http:
        await connector.deliver(http, "upsert_organization", account("acct_k", "Key Co"), idempotency_key="a")
        with pytest.raises(DataQualityError) as caught:
            # the sandbox account has no "tier" field: Zendesk's 422 names it
            await connector.deliver(http, "set_entitlement", entitlement("acct_k", o.EntitlementLevel.BASIC),
                                    idempotency_key="e")
    assert caught.value.details["field"] == "tier"


# -- tickets -------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_open_ticket_twice_is_one_ticket_and_keeps_agent_tags(sandbox: ZendeskSandbox) -> None:
    connector = connector_for(sandbox)
    async with connector.http_client(connector.default_limits) as http:
        first = await connector.deliver(http, "open_ticket", ticket("tk_1"), idempotency_key="t")
        sandbox.tickets[int(first.external_id)]["tags"].append("agent_escalated")
        second = await connector.deliver(http, "open_ticket", ticket("tk_1", tags=["syncline", "billing"]),
                                         idempotency_key="t")
    assert first.created is True and second.created is False
    assert second.external_id == first.external_id
    stored = sandbox.tickets_with_external_id("tk_1")
    assert len(stored) == 1
    assert stored[0]["tags"] == ["syncline", "agent_escalated", "billing"]


@pytest.mark.anyio
async def test_open_ticket_retry_after_lost_answer_finds_the_ticket(sandbox: ZendeskSandbox) -> None:
    connector = connector_for(sandbox)
    sandbox.lose_next_answer("POST", hang_seconds=0.6)
    async with connector.http_client(replace(connector.default_limits, timeout_seconds=0.2)) as http:
        with pytest.raises(TransientError) as caught:
            await connector.deliver(http, "open_ticket", ticket("tk_lost"), idempotency_key="t")
    assert caught.value.code == "timeout"
    created = sandbox.tickets_with_external_id("tk_lost")
    assert len(created) == 1  # the create landed; only its answer was lost
    async with connector.http_client(connector.default_limits) as http:
        retried = await connector.deliver(http, "open_ticket", ticket("tk_lost"), idempotency_key="t")
    assert retried == DeliveryResult(str(created[0]["id"]), "support_ticket", created=False)
    assert len(sandbox.tickets_with_external_id("tk_lost")) == 1


@pytest.mark.anyio
async def test_ticket_for_an_account_not_in_zendesk_still_opens(sandbox: ZendeskSandbox) -> None:
    connector = connector_for(sandbox)
    async with connector.http_client(connector.default_limits) as http:
        await connector.deliver(http, "upsert_organization", account("acct_tk", "Ticket Co"), idempotency_key="a")
        linked = await connector.deliver(http, "open_ticket", ticket("tk_a", account_id="acct_tk"), idempotency_key="1")
        orphan = await connector.deliver(http, "open_ticket", ticket("tk_b", account_id="acct_gone"),
                                         idempotency_key="2")
    org_id = sandbox.organizations_with_external_id("acct_tk")[0]["id"]
    assert sandbox.tickets[int(linked.external_id)]["organization_id"] == org_id
    assert sandbox.tickets[int(orphan.external_id)]["organization_id"] is None


# -- users and batches ---------------------------------------------------------------------------
@pytest.mark.anyio
async def test_user_joins_its_accounts_organization(sandbox: ZendeskSandbox) -> None:
    connector = connector_for(sandbox)
    async with connector.http_client(connector.default_limits) as http:
        await connector.deliver(http, "upsert_organization", account("acct_u", "User Co"), idempotency_key="a")
        result = await connector.deliver(http, "upsert_user", contact("ct_u", account_id="acct_u"),
                                         idempotency_key="c")
        with pytest.raises(DataQualityError) as caught:
            await connector.deliver(http, "upsert_user", contact("ct_v", account_id="acct_missing"),
                                    idempotency_key="d")
    user = sandbox.users[int(result.external_id)]
    assert user["organization_id"] == sandbox.organizations_with_external_id("acct_u")[0]["id"]
    assert user["role"] == "end-user" and user["name"] == "Ann Lee"
    assert caught.value.code == "not_found" and not caught.value.retryable
    assert sandbox.users_with_external_id("ct_v") == []


@pytest.mark.anyio
async def test_batch_polls_the_job_and_resolves_organizations() -> None:
    with ZendeskSandbox(job_polls=3) as sandbox:
        connector = connector_for(sandbox)
        async with connector.http_client(connector.default_limits) as http:
            await connector.deliver(http, "upsert_organization", account("acct_b", "Batch Co"), idempotency_key="a")
            requests_before = sandbox.requests
            results = await connector.deliver_batch(http, "upsert_user", [
                ("k1", contact("ct_b1", account_id="acct_b")),
                ("k2", contact("ct_b2", account_id="acct_nowhere")),
                ("k3", contact("ct_b3")),
                ("k4", {"object_type": "contact", "id": "ct_b4"}),  # no source: refused before sending
            ])
        first, missing, third, malformed = results
        assert isinstance(first, DeliveryResult) and first.created is True
        assert isinstance(third, DeliveryResult)
        assert isinstance(missing, DataQualityError) and missing.code == "not_found"
        assert isinstance(malformed, DataQualityError) and malformed.code == "payload_invalid"
        org_id = sandbox.organizations_with_external_id("acct_b")[0]["id"]
        assert sandbox.users[int(first.external_id)]["organization_id"] == org_id
        (job,) = sandbox.jobs.values()
        assert job["polls"] == 3 and job["job"]["total"] == 2
        # show_many + create_or_update_many + three polls
        assert sandbox.requests - requests_before == 5


@pytest.mark.anyio
async def test_batch_failure_of_the_whole_request_is_every_items_error(sandbox: ZendeskSandbox) -> None:
    connector = connector_for(sandbox)
    sandbox.fail_next("rate_limit", retry_after=3)
    async with connector.http_client(connector.default_limits) as http:
        results = await connector.deliver_batch(http, "upsert_user", [("k1", contact("ct_r1")),
                                                                       ("k2", contact("ct_r2"))])
    assert all(isinstance(result, RateLimitedError) and result.retry_after == 3 for result in results)
    assert sandbox.users == {}


# -- the rate limit ------------------------------------------------------------------------------
def test_default_budget_is_the_per_minute_limit() -> None:
    limits = ZendeskConnector.default_limits
    assert limits.rate_per_second is not None and math.isclose(limits.rate_per_second, 700 / 60)
    assert limits.batch_size == 100
    assert ZendeskConnector.operations["upsert_user"].batchable


@pytest.mark.anyio
async def test_sandbox_rate_limit_answers_429_until_the_next_minute() -> None:
    clock = FakeClock(1_800_000_030.0)  # 30 s into a minute
    with ZendeskSandbox(requests_per_minute=2, clock=clock) as sandbox:
        connector = connector_for(sandbox)
        async with connector.http_client(connector.default_limits) as http:
            first = await http.get("/api/v2/tickets")
            assert first.headers[RATE_LIMIT_HEADER] == "2" and first.headers[RATE_LIMIT_REMAINING_HEADER] == "1"
            await connector.deliver(http, "upsert_organization", account("acct_r", "Rate Co"), idempotency_key="a")
            with pytest.raises(RateLimitedError) as caught:
                await connector.deliver(http, "upsert_organization", account("acct_r", "Rate Co"),
                                        idempotency_key="a")
            assert caught.value.retry_after == 30
            clock.now += 30  # the next minute
            again = await connector.deliver(http, "upsert_organization", account("acct_r", "Rate Co"),
                                            idempotency_key="a")
        assert again.created is False
        assert sandbox.rate_limited == 1


# -- authentication ------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_oauth_token_authenticates_and_a_wrong_one_pauses() -> None:
    with ZendeskSandbox(credentials={"oauth_token": "tok-123"}) as sandbox:
        def connector(token: str) -> ZendeskConnector:
            return ZendeskConnector(ConnectionSettings(name="zd", vendor="zendesk", base_url=sandbox.url,
                                                       secrets={"oauth_token": SecretStr(token)}))
        good, bad = connector("tok-123"), connector("tok-999")
        async with good.http_client(good.default_limits) as http:
            result = await good.deliver(http, "upsert_organization", account("acct_o", "OAuth Co"),
                                        idempotency_key="a")
        async with bad.http_client(bad.default_limits) as http:
            with pytest.raises(AuthConfigError):
                await bad.deliver(http, "upsert_organization", account("acct_o", "OAuth Co"), idempotency_key="a")
    assert result.created is True


# -- errors --------------------------------------------------------------------------------------
def _response(status: int, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def test_error_mapping() -> None:
    invalid = error_from_response(_response(422, {
        "error": "RecordInvalid", "description": "Record validation errors",
        "details": {"name": [{"description": "Name: Acme has already been taken", "error": "DuplicateValue"}]}}))
    assert isinstance(invalid, DataQualityError)
    assert invalid.details["field"] == "name" and invalid.details["field_error"] == "DuplicateValue"
    assert "has already been taken" in invalid.message
    missing = error_from_response(_response(404, {"error": "RecordNotFound", "description": "Not found"}))
    assert isinstance(missing, DataQualityError) and missing.code == "not_found"
    conflict = error_from_response(_response(409, {"error": "Conflict"}))
    assert type(conflict) is TransientError and conflict.retryable
    assert not isinstance(conflict, BusinessRuleError)
    limited = error_from_response(_response(429, {"error": "APIRateLimitExceeded"}, {"Retry-After": "93"}))
    assert isinstance(limited, RateLimitedError) and limited.retry_after == 93
    assert isinstance(error_from_response(_response(403, {"error": "Forbidden"})), AuthConfigError)
    assert isinstance(error_from_response(_response(503, None, {"Retry-After": "5"})), TransientError)
    unauthorized = error_from_response(_response(401, {"error": "Couldn't authenticate you"}))
    assert isinstance(unauthorized, AuthConfigError) and "Couldn't authenticate you" in unauthorized.message


@pytest.mark.anyio
async def test_organization_without_a_name_is_refused_before_sending(sandbox: ZendeskSandbox) -> None:
    connector = connector_for(sandbox)
    payload = o.Account(id="acct_n", source=o.SourceRef(system="crm", object_type="account", external_id="9"))
    async with connector.http_client(connector.default_limits) as http:
        with pytest.raises(DataQualityError) as caught:
            await connector.deliver(http, "upsert_organization", payload.model_dump(mode="json"),
                                    idempotency_key="n")
    assert caught.value.details["field"] == "name"
    assert sandbox.requests == 0


# -- catch-up ------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_catch_up_skips_the_boundary_second_it_already_returned() -> None:
    with ZendeskSandbox(page_size=3) as sandbox:
        t = 1_790_000_000
        seeded = [sandbox.seed_organizations(1, start=t)[0]]
        seeded += [sandbox.seed_organizations(1, start=t + 1)[0] for _ in range(2)]  # two in one second
        seeded += sandbox.seed_organizations(2, start=t + 2)
        connector = connector_for(sandbox)
        async with connector.http_client(connector.default_limits) as http:
            pages = [page async for page in connector.catch_up(http, None)]
            ids = [event["detail"]["id"] for page in pages for event in page.events]
            assert ids == [org["id"] for org in seeded]
            assert [page.cursor for page in pages] == [f"{t + 1}:{seeded[1]['id']},{seeded[2]['id']}",
                                                       f"{t + 2}:{seeded[3]['id']}", f"{t + 3}:{seeded[4]['id']}"]
            resumed = [page async for page in connector.catch_up(http, pages[-1].cursor)]
        assert [event for page in resumed for event in page.events] == []


@pytest.mark.anyio
async def test_catch_up_refuses_to_loop_on_a_page_of_one_second() -> None:
    with ZendeskSandbox(page_size=2) as sandbox:
        t = 1_790_000_000
        sandbox.seed_organizations(1, start=t)
        for _ in range(3):
            sandbox.seed_organizations(1, start=t + 1)
        sandbox.seed_organizations(1, start=t + 2)
        connector = connector_for(sandbox)
        async with connector.http_client(connector.default_limits) as http:
            with pytest.raises(TransientError) as caught:
                _ = [page async for page in connector.catch_up(http, None)]
    assert caught.value.code == "export_stalled"


def test_export_cursor_round_trip() -> None:
    cursor = ExportCursor(1_790_000_001, frozenset({"12", "7"}))
    assert str(cursor) == "1790000001:12,7"
    assert ExportCursor.parse(str(cursor)) == cursor
    assert ExportCursor.parse(None) == ExportCursor(0)
    with pytest.raises(DataQualityError):
        ExportCursor.parse("yesterday")


@pytest.mark.anyio
async def test_exported_organization_decodes_to_its_entitlement(sandbox: ZendeskSandbox) -> None:
    connector = connector_for(sandbox)
    async with connector.http_client(connector.default_limits) as http:
        await connector.deliver(http, "upsert_organization", account("acct_x", "Export Co"), idempotency_key="a")
        await connector.deliver(http, "upsert_organization", account("acct_y", "Plain Co"), idempotency_key="b")
        await connector.deliver(http, "set_entitlement", entitlement("acct_x", o.EntitlementLevel.PREMIUM),
                                idempotency_key="e")
        events = [event async for page in connector.catch_up(http, None) for event in page.events]
    decoded = {event["detail"]["external_id"]: connector.decode(event) for event in events}
    assert decoded["acct_y"] == []
    (changed,) = decoded["acct_x"]
    assert changed.type == "entitlement.changed"
    assert changed.data["account_id"] == "acct_x" and changed.data["level"] == "premium"


# -- webhooks from the sandbox -------------------------------------------------------------------
class Receiver:
    """A localhost endpoint that keeps every request it gets (headers and raw body)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        app = FastAPI()

        @app.post("/hooks/zendesk")
        async def hook(request: Request) -> Response:
            self.received.append((dict(request.headers), await request.body()))
            return Response(status_code=200)

        self.app = app

    def wait_for(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} of {count} webhooks arrived"
            time.sleep(0.01)


@pytest.mark.anyio
async def test_sandbox_webhooks_verify_and_decode() -> None:
    receiver = Receiver()
    with ServerThread(receiver.app) as server, ZendeskSandbox(webhook_url=f"{server.url}/hooks/zendesk") as sandbox:
        connector = connector_for(sandbox)
        async with connector.http_client(connector.default_limits) as http:
            await connector.deliver(http, "upsert_organization", account("acct_w", "Hook Co"), idempotency_key="a")
            opened = await connector.deliver(http, "open_ticket", ticket("tk_w", account_id="acct_w"),
                                             idempotency_key="t")
            receiver.wait_for(1)
            org = sandbox.organizations_with_external_id("acct_w")[0]
            sandbox.set_organization_field(org["id"], "support_level", "standard")  # an agent's edit
            sandbox.set_ticket_status(int(opened.external_id), "open")
            receiver.wait_for(3)
    decoded = []
    for headers, body in receiver.received:
        connector.verify_webhook(headers, body, now=time.time())
        with pytest.raises(SignatureError):
            connector.verify_webhook(headers, body + b" ", now=time.time())
        payload = httpx.Response(200, content=body).json()
        decoded.extend(connector.decode(payload))
    assert sorted(event.type for event in decoded) == [
        "entitlement.changed", "support_ticket.created", "support_ticket.created"]
    entitlement_event = next(event for event in decoded if event.type == "entitlement.changed")
    assert entitlement_event.data["account_id"] == "acct_w" and entitlement_event.data["level"] == "standard"
    ticket_ids = {event.data["id"] for event in decoded if event.type == "support_ticket.created"}
    assert ticket_ids == {"tk_w"}  # the ticket's external_id is the canonical id


def test_support_level_field_is_recognised_by_its_id_when_configured(sandbox: ZendeskSandbox) -> None:
    body = {"type": "zen:event-type:organization.custom_field_changed", "id": "9f8e", "time": "2026-11-20T09:16:01Z",
            "subject": "zen:organization:66", "account_id": 1,
            "detail": {"id": "66", "external_id": None, "name": "Acme", "updated_at": "2026-11-20T09:16:01Z"},
            "event": {"current": "basic", "previous": None,
                      "field": {"id": "7001", "title": "Tier", "type": "dropdown"}}}
    assert connector_for(sandbox).decode(body) == []
    (event,) = connector_for(sandbox, support_level_field_id=7001).decode(body)
    assert event.type == "entitlement.changed" and event.data["level"] == "basic"
    assert event.data["account_id"].startswith("account_")  # no external_id: a derived canonical id


# -- signatures ----------------------------------------------------------------------------------
def test_signature_replay_window_is_300_seconds_either_way(sandbox: ZendeskSandbox) -> None:
    connector = connector_for(sandbox)
    body = b'{"type":"zen:event-type:ticket.created","id":"1"}'
    signed_at = 1_790_000_000
    headers = WebhookSignature(sandbox.webhook_secret).sign(body, signed_at)
    assert headers[TIMESTAMP_HEADER] == "2026-09-21T14:13:20Z"  # ISO 8601, as Zendesk sends it
    for now in (signed_at - 300, signed_at, signed_at + 300):
        connector.verify_webhook(headers, body, now=now)
    for now in (signed_at - 301, signed_at + 301):
        with pytest.raises(SignatureError) as caught:
            connector.verify_webhook(headers, body, now=now)
        assert caught.value.code == "signature_stale"
    wider = connector_for(sandbox, tolerance_seconds=900)
    wider.verify_webhook(headers, body, now=signed_at + 600)


def test_signature_covers_the_timestamp_and_uses_the_signing_secret(sandbox: ZendeskSandbox) -> None:
    connector = connector_for(sandbox)
    body = b'{"type":"zen:event-type:ticket.created","id":"1"}'
    headers = WebhookSignature(sandbox.webhook_secret).sign(body, 1_790_000_000)
    moved = {**headers, TIMESTAMP_HEADER: "2026-09-21T14:13:21Z"}
    with pytest.raises(SignatureError) as caught:
        connector.verify_webhook(moved, body, now=1_790_000_000)
    assert caught.value.code == "signature_mismatch"
    other = WebhookSignature("another-secret").sign(body, 1_790_000_000)
    with pytest.raises(SignatureError):
        connector.verify_webhook(other, body, now=1_790_000_000)
    garbled = {**headers, TIMESTAMP_HEADER: "yesterday"}
    garbled[SIGNATURE_HEADER] = WebhookSignature(sandbox.webhook_secret)._digest("yesterday", body)
    with pytest.raises(SignatureError) as caught:
        connector.verify_webhook(garbled, body, now=1_790_000_000)
    assert caught.value.code == "signature_malformed"
