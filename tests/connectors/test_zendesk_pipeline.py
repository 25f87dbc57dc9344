"""The Zendesk connector inside the real pipeline: inbox → normalize → route → delivery workers."""

from __future__ import annotations

import asyncio
import os

import orjson
import pytest
from sqlalchemy import func, select

from syncline.config import parse_config
from syncline.connectors.base import ConnectorRegistry
from syncline.connectors.zendesk import ZendeskConnector, ZendeskSandbox
from syncline.connectors.zendesk.sandbox import SANDBOX_API_TOKEN, SANDBOX_EMAIL
from syncline.pipeline.inbox import Received, write_inbox
from syncline.runtime import Syncline, default_registry
from syncline.store import deliveries
from syncline.testing import FakeConnector


def _event(event_id: str, kind: str, data: dict[str, object]) -> Received:
    body = orjson.dumps({"id": event_id, "type": kind, "sequence": 1, "created": 1_790_000_000, "data": data})
    return Received("src", event_id, kind, body)


def _source(ext: str) -> dict[str, str]:
    return {"system": "src", "object_type": "customer", "external_id": ext}


def test_zendesk_is_a_shipped_connector() -> None:
    assert default_registry().get("zendesk") is ZendeskConnector


@pytest.mark.anyio
async def test_accounts_contacts_and_entitlements_reach_zendesk_once(store_url: str) -> None:
    os.environ["ZD_TEST_EMAIL"] = SANDBOX_EMAIL
    os.environ["ZD_TEST_TOKEN"] = SANDBOX_API_TOKEN
    with ZendeskSandbox(job_polls=2) as sandbox:
        config = parse_config({
            "store": store_url,
            "connections": {
                "src": {"vendor": "fake", "base_url": "http://127.0.0.1:9"},
                "zendesk": {"vendor": "zendesk", "base_url": sandbox.url,
                            "secrets": {"email": "${env:ZD_TEST_EMAIL}", "api_token": "${env:ZD_TEST_TOKEN}"},
                            "options": {"job_poll_seconds": 0.01}, "budget": {"rate_per_second": 200}},
            },
            "routes": [
                {"event": "account.*", "deliver": {"connection": "zendesk", "operation": "upsert_organization"}},
                {"event": "contact.*", "deliver": {"connection": "zendesk", "operation": "upsert_user"}},
                {"event": "entitlement.changed", "deliver": {"connection": "zendesk", "operation": "set_entitlement"}},
            ],
            "retry": {"base_seconds": 0.01, "cap_seconds": 0.05, "max_attempts": 4},
        })
        syncline = Syncline(config, registry=ConnectorRegistry([FakeConnector, ZendeskConnector]))
        try:
            syncline.migrate()
            items = [_event(f"a{n}", "account.created",
                            {"id": f"account_{n}", "source": _source(f"c{n}"), "name": f"Customer {n}"})
                     for n in range(4)]
            items += [_event(f"c{n}", "contact.created",
                             {"id": f"contact_{n}", "source": _source(f"p{n}"), "account_id": f"account_{n % 4}",
                              "first_name": "Pat", "last_name": f"No{n}", "email": f"pat{n}@example.com"})
                      for n in range(8)]
            write_inbox(syncline.engine, items)
            stop = asyncio.Event()
            task = asyncio.create_task(syncline.run_workers(stop))
            try:
                assert await syncline.wait_idle(20), f"backlog left: {syncline.backlog()}"
                # entitlements after the organizations exist (the router orders only contacts
                # after their account; see the report)
                write_inbox(syncline.engine, [
                    _event(f"e{n}", "entitlement.changed",
                           {"id": f"entitlement_{n}", "source": _source(f"c{n}"), "account_id": f"account_{n}",
                            "level": "premium"}) for n in range(4)])
                assert await syncline.wait_idle(20), f"backlog left: {syncline.backlog()}"
            finally:
                stop.set()
                await task
            with syncline.engine.connect() as conn:
                states = dict(conn.execute(select(deliveries.c.state, func.count()).group_by(deliveries.c.state)).all())
        finally:
            syncline.close()
        assert states == {"done": 16}
        assert len(sandbox.organizations) == 4 and len(sandbox.users) == 8
        for n in range(8):
            (user,) = sandbox.users_with_external_id(f"contact_{n}")
            (org,) = sandbox.organizations_with_external_id(f"account_{n % 4}")
            assert user["organization_id"] == org["id"]
            assert org["tags"] == ["syncline_premium"]
        assert sandbox.jobs, "contacts went through create_or_update_many"


@pytest.mark.anyio
async def test_agent_change_comes_back_through_the_api_and_converges(store_url: str) -> None:
    """An agent sets a support level in Zendesk; the signed webhook reaches Syncline's API, is
    decoded to ``entitlement.changed`` and routed back as ``set_entitlement``, which adds the level
    tag; Syncline's own write fires one more webhook that is recorded, not routed."""
    from syncline.api import create_app
    from syncline.sandbox import ServerThread
    from syncline.store import inbox

    os.environ["ZD_TEST_EMAIL"] = SANDBOX_EMAIL
    os.environ["ZD_TEST_TOKEN"] = SANDBOX_API_TOKEN
    with ZendeskSandbox() as sandbox:
        os.environ["ZD_TEST_WEBHOOK_SECRET"] = sandbox.webhook_secret
        config = parse_config({
            "store": store_url,
            "connections": {"zendesk": {
                "vendor": "zendesk", "base_url": sandbox.url,
                "secrets": {"email": "${env:ZD_TEST_EMAIL}", "api_token": "${env:ZD_TEST_TOKEN}",
                            "webhook_secret": "${env:ZD_TEST_WEBHOOK_SECRET}"},
                "budget": {"rate_per_second": 200}}},
            "routes": [{"event": "entitlement.changed",
                        "deliver": {"connection": "zendesk", "operation": "set_entitlement"}}],
            "retry": {"base_seconds": 0.01, "cap_seconds": 0.05, "max_attempts": 4},
        })
        syncline = Syncline(config)
        syncline.migrate()
        server = ServerThread(create_app(syncline)).start()
        try:
            sandbox.webhook_url = f"{server.url}/v1/webhooks/zendesk"
            connector = syncline.connectors["zendesk"]
            async with connector.http_client(connector.default_limits) as http:
                result = await connector.deliver(http, "upsert_organization",
                                                 {"id": "account_e2e", "source": _source("c1"), "name": "Loop Co"},
                                                 idempotency_key="a")
            sandbox.set_organization_field(int(result.external_id), "support_level", "standard")

            async def settle() -> None:
                deadline = asyncio.get_running_loop().time() + 10
                while True:
                    with syncline.engine.connect() as conn:
                        stored = conn.execute(select(func.count()).select_from(inbox)).scalar_one()
                    if stored == len(sandbox.webhooks_sent):
                        break
                    assert asyncio.get_running_loop().time() < deadline, "webhooks did not reach the inbox"
                    await asyncio.sleep(0.02)
                assert await syncline.wait_idle(10), f"backlog left: {syncline.backlog()}"

            stop = asyncio.Event()
            task = asyncio.create_task(syncline.run_workers(stop))
            try:
                await settle()   # the agent's change, routed back
                await settle()   # the webhook Syncline's own write fired
            finally:
                stop.set()
                await task
            with syncline.engine.connect() as conn:
                rows = conn.execute(select(inbox.c.vendor_event_type, inbox.c.state).order_by(inbox.c.id)).all()
                done = conn.execute(select(func.count()).select_from(deliveries)
                                    .where(deliveries.c.state == "done")).scalar_one()
        finally:
            server.stop()
            syncline.close()
    (org,) = sandbox.organizations_with_external_id("account_e2e")
    assert org["tags"] == ["syncline_standard"]
    assert org["organization_fields"] == {"support_level": "standard", "entitlement_active": True}
    assert done == 1
    assert [kind for kind, _ in rows] == ["zen:event-type:organization.custom_field_changed"] * 2
    assert [state for _, state in rows] == ["done", "ignored"]
