"""Onboarding end to end on the vendor sandboxes: Salesforce → Stripe → NetSuite → Zendesk → Salesforce.

A person closes a deal in the Salesforce sandbox UI; its change events reach Syncline's webhook
endpoint through the sandbox's signed relay; the onboarding flow drives Stripe, NetSuite and
Zendesk through their connectors, and writes the status back to the Opportunity. Also: an
account that fails validation (task → decision → finished), an ERP rejection (compensation, the
reason on the Opportunity), and billing silence (timer → escalation task).

The Opportunity is created with ``Syncline_Id__c`` set: the Salesforce connector's
``write_back_status`` addresses Opportunities by that external id only (see the report).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from sqlalchemy import select

from syncline.api import create_app
from syncline.config import parse_config
from syncline.connectors.base import ConnectorRegistry
from syncline.connectors.netsuite import NetSuiteConnector
from syncline.connectors.netsuite.sandbox import NetSuiteSandbox
from syncline.connectors.salesforce import SalesforceConnector, SalesforceSandbox
from syncline.connectors.stripe import StripeConnector
from syncline.connectors.stripe.sandbox import StripeSandbox
from syncline.connectors.zendesk import ZendeskConnector, ZendeskSandbox
from syncline.connectors.zendesk.sandbox import SANDBOX_API_TOKEN, SANDBOX_EMAIL
from syncline.flows import QUOTE_TO_CASH, complete_task
from syncline.flows._tables import flow_instances, flow_tasks
from syncline.flows.trace import trace
from syncline.runtime import Syncline
from syncline.sandbox import ServerThread, free_port

RELAY_SECRET = "relay-secret-flows-e2e"
STRIPE_KEY = "sk_test_flows_e2e"


@dataclass
class Systems:
    salesforce: SalesforceSandbox
    stripe: StripeSandbox
    netsuite: NetSuiteSandbox
    zendesk: ZendeskSandbox
    syncline: Syncline
    netsuite_url: str
    stripe_url: str

    def stripe_objects(self) -> dict[str, int]:
        return dict(httpx.get(f"{self.stripe_url}/_sandbox/stats").json()["objects"])

    def stripe_get(self, path: str) -> dict[str, Any]:
        answer = httpx.get(f"{self.stripe_url}{path}", headers={"Authorization": f"Bearer {STRIPE_KEY}"})
        answer.raise_for_status()
        return dict(answer.json())

    def account_country(self, salesforce_id: str) -> str | None:
        from syncline.canonical import canonical_id
        from syncline.flows._tables import flow_facts

        with self.syncline.engine.connect() as conn:
            data = conn.execute(select(flow_facts.c.data).where(
                flow_facts.c.canonical_id == canonical_id("crm", "account", salesforce_id))).scalar()
        return None if data is None else (orjson.loads(data).get("address") or {}).get("country")

    def close(self, account_id: str, opportunity_id: str) -> str:
        created = self.salesforce.ui_create("Opportunity", {
            "Name": f"{opportunity_id} deal", "AccountId": account_id, "StageName": "Prospecting",
            "CloseDate": "2026-11-20", "Amount": 1200, "Syncline_Id__c": opportunity_id,
        })
        self.salesforce.ui_update("Opportunity", created["Id"], {"StageName": "Closed Won"})
        return opportunity_id

    def wait(self, condition: Callable[[], bool], what: str, within: float = 45.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        with self.syncline.engine.connect() as conn:
            rows = [(row.id, row.state, row.step, row.error) for row in conn.execute(select(flow_instances))]
        raise AssertionError(f"{what} not reached within {within}s; flows: {rows}")

    def instance(self, opportunity: str) -> Any:
        with self.syncline.engine.connect() as conn:
            return conn.execute(select(flow_instances).where(flow_instances.c.key == opportunity)).first()

    def state(self, opportunity: str) -> str | None:
        row = self.instance(opportunity)
        return None if row is None else str(row.state)

    def tasks(self, opportunity: str) -> list[Any]:
        with self.syncline.engine.connect() as conn:
            return list(conn.execute(select(flow_tasks).where(flow_tasks.c.instance_id == f"onboarding:{opportunity}")
                                     .order_by(flow_tasks.c.created_at)))

    def netsuite_records(self, kind: str, external_id: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.netsuite_url}/_sandbox/records", params={"type": kind, "externalId": external_id})
        return list(answer.json()["records"])

    def deal(self, name: str, *, country: str = "US", stage_first: bool = True) -> str:
        """Create an account and a deal in the Salesforce UI, then close it; return the opportunity id."""
        account = self.salesforce.ui_create("Account", {"Name": name, "BillingCountry": country})
        return self.close(account["Id"], f"opportunity_{name.lower().replace(' ', '_')}")

    def opportunity(self, opportunity_id: str) -> dict[str, Any]:
        [record] = self.salesforce.find("Opportunity", opportunity_id)
        return record


@contextmanager
def running_systems(store_url: str, *, billing_confirm_seconds: float = 30.0,
                    max_attempts: int = 4) -> Iterator[Systems]:
    """Serve the four sandboxes and Syncline (API, normalizer, flows, workers) wired together."""
    port = free_port()
    os.environ.update({"E2E_SF_ID": "3MVG9sandbox.connected.app", "E2E_SF_SECRET": "sandbox-client-secret",
                       "E2E_RELAY": RELAY_SECRET, "E2E_STRIPE_KEY": STRIPE_KEY, "E2E_STRIPE_WHSEC": "whsec_e2e",
                       "E2E_NS": "unused", "E2E_ZD_EMAIL": SANDBOX_EMAIL, "E2E_ZD_TOKEN": SANDBOX_API_TOKEN})
    with ExitStack() as stack:
        salesforce = SalesforceSandbox(webhook_url=f"http://127.0.0.1:{port}/v1/webhooks/crm",
                                       webhook_secret=RELAY_SECRET)
        stack.enter_context(salesforce)
        stripe = StripeSandbox(api_key=STRIPE_KEY)
        stripe_server = stack.enter_context(ServerThread(stripe.app))
        netsuite = NetSuiteSandbox()
        netsuite_server = stack.enter_context(ServerThread(netsuite.app))
        zendesk = stack.enter_context(ZendeskSandbox())
        ns_secrets = {key: "${env:E2E_NS}" for key in ("consumer_key", "consumer_secret", "token_id", "token_secret")}
        stripe_secrets = {"api_key": "${env:E2E_STRIPE_KEY}", "webhook_secret": "${env:E2E_STRIPE_WHSEC}"}
        config = parse_config({
            "store": store_url,
            "connections": {
                "crm": {"vendor": "salesforce", "base_url": salesforce.url,
                        "secrets": {"client_id": "${env:E2E_SF_ID}", "client_secret": "${env:E2E_SF_SECRET}",
                                    "webhook_secret": "${env:E2E_RELAY}"},
                        "options": {"organization_id": salesforce.organization_id, "api_reserve": 0}},
                "billing": {"vendor": "stripe", "base_url": stripe_server.url, "secrets": stripe_secrets},
                "erp": {"vendor": "netsuite", "base_url": netsuite_server.url, "secrets": ns_secrets,
                        "options": {"account_id": "TSTDRV1", "subsidiary_id": "1",
                                    # ca-ltd points at a subsidiary NetSuite does not have: the ERP refuses.
                                    "subsidiaries": {"us-inc": "1", "de-gmbh": "2", "ca-ltd": "99"},
                                    "currencies": {"USD": "1", "EUR": "4", "CAD": "3"}}},
                "support": {"vendor": "zendesk", "base_url": zendesk.url,
                            "secrets": {"email": "${env:E2E_ZD_EMAIL}", "api_token": "${env:E2E_ZD_TOKEN}"},
                            "options": {"job_poll_seconds": 0.01}},
            },
            "retry": {"base_seconds": 0.05, "cap_seconds": 0.2, "max_attempts": max_attempts},
            "flows": {
                "legal_entities": [
                    {"id": "us-inc", "countries": ["US"], "currency": "USD", "requires_tax_id": False},
                    {"id": "ca-ltd", "countries": ["CA"], "currency": "USD", "requires_tax_id": False},
                    {"id": "de-gmbh", "countries": ["DE"], "currency": "EUR"},
                ],
                "default_interval": "year", "billing_confirm_seconds": billing_confirm_seconds,
                "poll_seconds": 0.02,
            },
        })
        registry = ConnectorRegistry([SalesforceConnector, StripeConnector, NetSuiteConnector, ZendeskConnector])
        syncline = Syncline(config, registry=registry, flows=QUOTE_TO_CASH)
        syncline.migrate()
        stack.callback(syncline.close)
        stack.enter_context(ServerThread(create_app(syncline, run_workers=True), port=port))
        yield Systems(salesforce, stripe, netsuite, zendesk, syncline, netsuite_server.url, stripe_server.url)


def test_closed_won_in_salesforce_reaches_every_system_and_comes_back(store_url: str) -> None:
    with running_systems(store_url) as systems:
        deal = systems.deal("Initech")
        systems.wait(lambda: systems.state(deal) == "completed", "onboarding completed")
        data = orjson.loads(systems.instance(deal).data)
        customer = data["customer_id"]
        stripe = systems.stripe_objects()
        opportunity = systems.opportunity(deal)
        netsuite_customers = systems.netsuite_records("customer", customer)
        netsuite_orders = systems.netsuite_records("salesOrder", data["sales_order_id"])
        organizations = systems.zendesk.organizations_with_external_id(customer)
        timeline = trace(systems.syncline.engine, deal)
    assert (stripe.get("customer"), stripe.get("subscription"), stripe.get("price")) == (1, 1, 1)
    # One timeline across the systems: the CRM's events, every delivery, the flow's end.
    delivered = {entry.connection for entry in timeline.entries if entry.stage == "delivered"}
    assert delivered == {"crm", "billing", "erp", "support"}
    assert timeline.entries[0].stage == "normalized" and timeline.entries[0].connection == "crm"
    assert any(entry.stage == "flow_completed" for entry in timeline.entries)
    assert len(netsuite_customers) == 1 and len(netsuite_orders) == 1
    assert len(organizations) == 1
    assert "syncline_standard" in organizations[0]["tags"]
    assert opportunity["Syncline_Status__c"].startswith(f"active: billing {data['billing_customer_id']}")
    assert opportunity["Syncline_Billing_Id__c"] == data["billing_subscription_external_id"]
    assert opportunity["Syncline_ERP_Id__c"] == data["erp_sales_order_id"]


def test_validation_failure_task_fixed_in_salesforce_then_finished(store_url: str) -> None:
    with running_systems(store_url) as systems:
        account = systems.salesforce.ui_create("Account", {"Name": "Hooli"})  # no billing country
        deal = systems.close(account["Id"], "opportunity_hooli")
        systems.wait(lambda: systems.state(deal) == "waiting_for_task", "validation task")
        [task] = systems.tasks(deal)
        assert task.kind == "fix_account_data"
        assert "billing country is missing" in task.data
        systems.salesforce.ui_update("Account", account["Id"], {"BillingCountry": "US"})
        systems.wait(lambda: systems.account_country(account["Id"]) == "US", "account update seen")
        complete_task(systems.syncline.engine, task.id, "retry", "ops-anna", reason="country added in Salesforce")
        systems.wait(lambda: systems.state(deal) == "completed", "onboarding completed after the task")
        status = systems.opportunity(deal)["Syncline_Status__c"]
    assert status.startswith("active: billing cus_")


def test_erp_rejection_cancels_the_subscription_and_salesforce_shows_why(store_url: str) -> None:
    with running_systems(store_url) as systems:
        deal = systems.deal("Northwind", country="CA")
        systems.wait(lambda: systems.state(deal) == "compensated", "compensation")
        data = orjson.loads(systems.instance(deal).data)
        subscription = systems.stripe_get(f"/v1/subscriptions/{data['billing_subscription_external_id']}")
        status = systems.opportunity(deal)["Syncline_Status__c"]
        organizations = systems.zendesk.organizations_with_external_id(data["customer_id"])
    assert subscription["status"] == "canceled"
    assert status.startswith("onboarding stopped: ERP rejected the order")
    assert status.endswith("subscription cancelled")
    assert organizations == [], "no support entitlement for a deal the ERP refused"


def test_billing_silence_fires_the_timer_and_escalates(store_url: str) -> None:
    with running_systems(store_url, billing_confirm_seconds=1.0, max_attempts=100) as systems:
        httpx.post(f"{systems.stripe_url}/_sandbox/faults", json={"server_error_rate": 1.0}).raise_for_status()
        deal = systems.deal("Umbrella")
        systems.wait(lambda: systems.state(deal) == "waiting_for_task", "escalation")
        [task] = systems.tasks(deal)
        assert (task.kind, task.owner_role) == ("billing_not_confirmed", "admin")
        httpx.post(f"{systems.stripe_url}/_sandbox/faults", json={"server_error_rate": 0.0}).raise_for_status()
        systems.wait(lambda: systems.state(deal) == "completed", "onboarding completed once billing answered")
        [task] = systems.tasks(deal)
    assert (task.state, task.reason) == ("cancelled", "billing confirmed")
