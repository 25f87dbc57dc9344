"""HubSpot through Syncline's own API and pipeline: signed webhooks in, loops dropped, catch-up routed."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from tests._fake import account_event
from tests.connectors._hubspot_harness import APP_ID, CLIENT_SECRET, TOKEN, outbound_cases

from syncline.api import create_app
from syncline.config import parse_config
from syncline.connectors.base import ConnectorRegistry
from syncline.connectors.hubspot import HubSpotConnector, HubSpotSandbox
from syncline.pipeline.catchup import catch_up
from syncline.pipeline.inbox import Received, write_inbox
from syncline.pipeline.normalize import normalize_batch
from syncline.runtime import Syncline
from syncline.sandbox import ServerThread
from syncline.store import deliveries, inbox
from syncline.testing import FakeConnector, FakeVendor


@pytest.fixture
def running(store_url: str) -> Iterator[tuple[Syncline, HubSpotSandbox]]:
    os.environ["HUBSPOT_TEST_TOKEN"] = TOKEN
    os.environ["HUBSPOT_TEST_CLIENT_SECRET"] = CLIENT_SECRET
    sandbox = HubSpotSandbox(access_token=TOKEN, app_id=APP_ID, client_secret=CLIENT_SECRET)
    vendor = FakeVendor("hubspot-pipeline-erp")
    with ServerThread(sandbox.app) as api:
        config = parse_config({
            "store": store_url,
            "connections": {
                "hubspot": {"vendor": "hubspot", "base_url": api.url,
                            "secrets": {"access_token": "${env:HUBSPOT_TEST_TOKEN}",
                                        "client_secret": "${env:HUBSPOT_TEST_CLIENT_SECRET}"},
                            "options": {"app_id": str(APP_ID), "currency": "USD", "search_rate_per_second": 100.0,
                                        "catch_up_objects": ["companies"]}},
                "erp": {"vendor": "fake", "base_url": "http://127.0.0.1:9", "options": {"vendor_state": vendor.name}},
            },
            "routes": [{"event": "account.*", "deliver": {"connection": "erp", "operation": "upsert_account"}}],
        })
        syncline = Syncline(config, registry=ConnectorRegistry([HubSpotConnector, FakeConnector]))
        syncline.migrate()
        with ServerThread(create_app(syncline)) as app:
            # No webhook_url option: the signature is checked against the URL the request reached.
            sandbox.webhook_url = f"{app.url}/v1/webhooks/hubspot"
            yield syncline, sandbox
        syncline.close()


def _inbox_rows(syncline: Syncline) -> list[tuple[str, str]]:
    with syncline.engine.connect() as conn:
        return [(r.vendor_event_id, r.state) for r in conn.execute(
            select(inbox.c.vendor_event_id, inbox.c.state).order_by(inbox.c.id))]


def _wait_for_inbox(syncline: Syncline, count: int) -> None:
    deadline = time.monotonic() + 5
    while len(_inbox_rows(syncline)) < count:
        assert time.monotonic() < deadline, f"inbox has {_inbox_rows(syncline)}"
        time.sleep(0.02)


@pytest.mark.anyio
async def test_webhooks_and_catch_up_through_the_pipeline(running: tuple[Syncline, HubSpotSandbox]) -> None:
    syncline, sandbox = running
    connector = syncline.connectors["hubspot"]
    company = outbound_cases()[0]
    async with connector.http_client(connector.default_limits) as http:
        written = await connector.deliver(http, company.operation, company.create, idempotency_key="k")
    _wait_for_inbox(syncline, 1)  # Syncline's own write, echoed back by HubSpot
    sandbox.touch("companies", written.external_id, {"phone": "+1 555 0199"})
    _wait_for_inbox(syncline, 2)  # a person's change in HubSpot

    stats = normalize_batch(syncline.engine, syncline.connectors, syncline.router)
    assert (stats.claimed, stats.ignored, stats.events, stats.deliveries) == (2, 1, 1, 0)
    assert [state for _, state in _inbox_rows(syncline)] == ["ignored", "done"]

    seen, new = await catch_up(syncline.engine, connector, syncline.limits["hubspot"], syncline.budgets["hubspot"])
    assert (seen, new) == (1, 1)
    normalize_batch(syncline.engine, syncline.connectors, syncline.router)
    with syncline.engine.connect() as conn:
        [delivery] = conn.execute(select(deliveries.c.operation, deliveries.c.canonical_id, deliveries.c.event_type,
                                         deliveries.c.payload)).all()
    assert delivery.operation == "upsert_account" and delivery.event_type == "account.updated"
    # the company Syncline wrote keeps its canonical id (from syncline_id), not a HubSpot-derived one
    assert delivery.canonical_id == company.create["id"]
    assert '"+1 555 0199"' in delivery.payload
    again = await catch_up(syncline.engine, connector, syncline.limits["hubspot"], syncline.budgets["hubspot"])
    assert again == (0, 0)  # the stored cursor is past everything


@pytest.mark.anyio
async def test_delivery_workers_batch_accounts_into_hubspot(store_url: str) -> None:
    os.environ["HUBSPOT_TEST_TOKEN"] = TOKEN
    os.environ["FAKE_WEBHOOK_SECRET"] = "whsec_fake_for_tests"
    sandbox = HubSpotSandbox(access_token=TOKEN, app_id=APP_ID, client_secret=CLIENT_SECRET)
    with ServerThread(sandbox.app) as api:
        config = parse_config({
            "store": store_url,
            "connections": {
                "src": {"vendor": "fake", "base_url": "http://127.0.0.1:9",
                        "secrets": {"webhook_secret": "${env:FAKE_WEBHOOK_SECRET}"}},
                "hubspot": {"vendor": "hubspot", "base_url": api.url,
                            "secrets": {"access_token": "${env:HUBSPOT_TEST_TOKEN}"}},
            },
            "routes": [{"event": "account.*", "deliver": {"connection": "hubspot", "operation": "upsert_company"}}],
        })
        syncline = Syncline(config, registry=ConnectorRegistry([HubSpotConnector, FakeConnector]))
        try:
            syncline.migrate()
            bodies = [account_event(f"evt_{i}", f"account_{i}", name=f"Customer {i}") for i in range(40)]
            write_inbox(syncline.engine, [Received("src", f"evt_{i}", "account.created", body)
                                          for i, body in enumerate(bodies)])
            stop = asyncio.Event()
            task = asyncio.create_task(syncline.run_workers(stop))
            try:
                assert await syncline.wait_idle(20), f"backlog left: {syncline.backlog()}"
            finally:
                stop.set()
                await task
        finally:
            syncline.close()
    companies = {r["properties"]["syncline_id"]: r["properties"]["name"] for r in sandbox.records("companies")}
    assert companies == {f"account_{i}": f"Customer {i}" for i in range(40)}
    calls = [r for r in sandbox.requests if r.path == "/crm/v3/objects/companies/batch/upsert"]
    assert len(calls) < 40  # the worker grouped deliveries into HubSpot batch calls


@pytest.mark.anyio
async def test_a_change_notice_makes_the_runtime_read_the_record_through_catch_up(store_url: str) -> None:
    # HubSpot webhooks carry an id and one property: the runtime reads the record itself soon
    # after (catch_up_seconds set), instead of waiting for the next scheduled poll.
    os.environ["HUBSPOT_TEST_TOKEN"] = TOKEN
    os.environ["HUBSPOT_TEST_CLIENT_SECRET"] = CLIENT_SECRET
    sandbox = HubSpotSandbox(access_token=TOKEN, app_id=APP_ID, client_secret=CLIENT_SECRET)
    vendor = FakeVendor("hubspot-notice-erp")
    with ServerThread(sandbox.app) as api:
        config = parse_config({
            "store": store_url,
            "connections": {
                "hubspot": {"vendor": "hubspot", "base_url": api.url, "catch_up_seconds": 3600,
                            "secrets": {"access_token": "${env:HUBSPOT_TEST_TOKEN}",
                                        "client_secret": "${env:HUBSPOT_TEST_CLIENT_SECRET}"},
                            "options": {"app_id": str(APP_ID), "currency": "USD", "search_rate_per_second": 100.0,
                                        "catch_up_objects": ["companies"]}},
                "erp": {"vendor": "fake", "base_url": "http://127.0.0.1:9", "options": {"vendor_state": vendor.name}},
            },
            "routes": [{"event": "account.*", "deliver": {"connection": "erp", "operation": "upsert_account"}}],
        })
        syncline = Syncline(config, registry=ConnectorRegistry([HubSpotConnector, FakeConnector]))
        syncline.migrate()
        try:
            company = outbound_cases()[0]
            connector = syncline.connectors["hubspot"]
            async with connector.http_client(connector.default_limits) as http:
                written = await connector.deliver(http, company.operation, company.create, idempotency_key="k")
            with ServerThread(create_app(syncline, run_workers=True)) as app:
                sandbox.webhook_url = f"{app.url}/v1/webhooks/hubspot"
                sandbox.touch("companies", written.external_id, {"phone": "+1 555 0142"})
                deadline = time.monotonic() + 15
                while not any(call[0] == "upsert_account" for call in vendor.calls):
                    assert time.monotonic() < deadline, f"nothing delivered; inbox {_inbox_rows(syncline)}"
                    await asyncio.sleep(0.05)
        finally:
            syncline.close()
    (call,) = [call for call in vendor.calls if call[0] == "upsert_account"]
    assert call[1] == company.create["id"] and call[2]["phone"] == "+1 555 0142"
