"""The conformance Harness for HubSpot: the real HubSpotSandbox on a localhost port.

Counts and stored records are read from the sandbox's own state by the unique ``syncline_id``
value, not through the API the connector uses, so a connector bug cannot hide a duplicate.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date
from typing import Any, Literal

from pydantic import SecretStr
from tests.connectors.conformance import OutboundCase, WebhookCase

from syncline.canonical import Account, CloudEvent, Contact, Money, Product, SourceRef
from syncline.canonical.objects import Opportunity, OpportunityStage, OrderLine, Quote, QuoteStatus
from syncline.connectors.base import ConnectionSettings
from syncline.connectors.hubspot import HubSpotConnector, HubSpotSandbox
from syncline.connectors.hubspot.client import SignatureV3
from syncline.connectors.hubspot.inbound import identify
from syncline.sandbox import ServerThread

TOKEN = "pat-na1-conformance-0000"
CLIENT_SECRET = "hubspot-conformance-client-secret"
APP_ID = 1160452
PORTAL_ID = 62515
CONNECTION = "hubspot"
#: The target URL configured in the HubSpot app; the query string is part of what is signed.
WEBHOOK_URL = "https://syncline.example.com/v1/webhooks/hubspot?portal=62515"
PAGE_SIZE = 5

_OBJECTS = {
    "upsert_company": "companies", "upsert_contact": "contacts", "upsert_product": "products",
    "upsert_line_item": "line_items", "upsert_deal": "deals", "upsert_quote": "quotes",
    "write_back_status": "deals",
}


def src(object_type: str, external_id: str) -> SourceRef:
    return SourceRef(system="crm", object_type=object_type, external_id=external_id)


def dump(model: Any) -> dict[str, Any]:
    return dict(model.model_dump(mode="json"))


def element(event_id: int, subscription: str, object_id: int, *, prop: str | None = None,
            value: str | None = None, source: str = "CRM_UI", source_id: str | None = "userId:1274",
            occurred: int = 1732370000000) -> dict[str, Any]:
    """Return one webhook event as HubSpot sends it."""
    event: dict[str, Any] = {
        "eventId": event_id, "subscriptionId": 25, "portalId": PORTAL_ID, "appId": APP_ID, "occurredAt": occurred,
        "subscriptionType": subscription, "attemptNumber": 0, "objectId": object_id, "changeSource": source,
    }
    if source_id is not None:
        event["sourceId"] = source_id
    if prop is not None:
        event["propertyName"], event["propertyValue"] = prop, value
    return event


def _expect(**fields: Any) -> Any:
    def check(events: list[CloudEvent]) -> None:
        for key, value in fields.items():
            assert events[0].data[key] == value, (key, events[0].data[key], value)
    return check


def webhook_cases() -> list[WebhookCase]:
    """Webhook batches: one per subscription kind the connector routes, plus ones it only records."""
    def body(*events: dict[str, Any]) -> bytes:
        return json.dumps(list(events)).encode()

    return [
        WebhookCase("deal won", body(element(1, "deal.propertyChange", 1246965, prop="dealstage", value="closedwon")),
                    ["record.changed"], _expect(record_type="opportunity", change="updated",
                                                property_name="dealstage", property_value="closedwon")),
        WebhookCase("contact created", body(element(2, "contact.creation", 512)), ["record.changed"],
                    _expect(record_type="contact", change="created", property_name=None)),
        WebhookCase("company deleted", body(element(3, "company.deletion", 8812)), ["record.changed"],
                    _expect(record_type="account", change="deleted")),
        WebhookCase("product and quote changed, line item ignored", body(
            element(4, "product.propertyChange", 77, prop="name", value="Gold plan"),
            element(5, "line_item.creation", 901),
            element(6, "quote.propertyChange", 4411, prop="hs_status", value="APPROVED"),
        ), ["record.changed", "record.changed"]),
        WebhookCase("own write echoed back", body(
            element(7, "deal.propertyChange", 1246965, prop="syncline_status", value="active",
                    source="INTEGRATION", source_id=str(APP_ID)),
        ), []),
        WebhookCase("association change recorded", body(element(8, "deal.associationChange", 1246965)), []),
    ]


def _lines(prefix: str, quantity: int) -> list[OrderLine]:
    return [
        OrderLine(id=f"{prefix}-line-1", description="Gold plan", quantity=quantity,
                  unit_amount=Money(amount=4900, currency="USD"), interval="month",
                  service_start=date(2026, 12, 1)),
        OrderLine(id=f"{prefix}-line-2", description="Onboarding", quantity=1,
                  unit_amount=Money(amount=150000, currency="USD")),
    ]


def _deal(stage: OpportunityStage, amount: int, quantity: int, status: str | None = None,
          deal_id: str = "opportunity_conf1") -> Opportunity:
    return Opportunity(id=deal_id, source=src("opportunity", "006A"), account_id="account_conf1", name="Acme renewal",
                       stage=stage, currency="USD", amount=Money(amount=amount, currency="USD"),
                       close_date=date(2026, 11, 30), lines=_lines(deal_id, quantity), sync_status=status)


def outbound_cases() -> list[OutboundCase]:
    """One case per operation; the quote and the status write-back need the deal before them."""
    account = Account(id="account_conf1", source=src("account", "001A"), name="Acme", phone="+1 555 0100")
    contact = Contact(id="contact_conf1", source=src("contact", "003A"), account_id=account.id, first_name="Ada",
                      last_name="Lovelace", email="ada@example.com")
    product = Product(id="product_conf1", source=src("product", "01tA"), name="Gold plan", sku="GOLD-M")
    line = OrderLine(id="line_conf1", description="Seats", quantity=3, unit_amount=Money(amount=1999, currency="USD"))
    quote = Quote(id="quote_conf1", source=src("quote", "0Q0A"), account_id=account.id,
                  opportunity_id="opportunity_conf1", status=QuoteStatus.PRESENTED, currency="USD",
                  lines=_lines("quote_conf1", 2), expires_on=date(2026, 12, 31))
    return [
        OutboundCase("upsert_company", dump(account), dump(account.model_copy(update={"name": "Acme Ltd"})), "k-co"),
        OutboundCase("upsert_contact", dump(contact), dump(contact.model_copy(update={"last_name": "King"})), "k-ct"),
        OutboundCase("upsert_product", dump(product), dump(product.model_copy(update={"name": "Gold plan v2"})),
                     "k-pr"),
        OutboundCase("upsert_line_item", dump(line), dump(line.model_copy(update={"quantity": 5})), "k-li"),
        OutboundCase("upsert_deal", dump(_deal(OpportunityStage.OPEN, 208800, 10)),
                     dump(_deal(OpportunityStage.CLOSED_WON, 267600, 20)), "k-dl"),
        OutboundCase("upsert_quote", dump(quote), dump(quote.model_copy(update={"status": QuoteStatus.ACCEPTED})),
                     "k-qt"),
        OutboundCase("write_back_status", dump(_deal(OpportunityStage.CLOSED_WON, 208800, 10, "in billing")),
                     {**dump(_deal(OpportunityStage.CLOSED_WON, 208800, 10, "active in billing and ERP")),
                      "external_ids": {"billing": "cus_Q1", "erp": "4711"}}, "k-wb"),
    ]


class HubSpotHarness:
    """Drives the HubSpot connector against a running :class:`HubSpotSandbox`."""

    batch_operation = "upsert_contact"
    catch_up_page_size = PAGE_SIZE
    replay_window = True

    def __init__(self, sandbox: HubSpotSandbox, url: str, **options: Any) -> None:
        self.sandbox = sandbox
        self.connector = HubSpotConnector(ConnectionSettings(
            name=CONNECTION, vendor="hubspot", base_url=url,
            secrets={"access_token": SecretStr(TOKEN), "client_secret": SecretStr(CLIENT_SECRET)},
            options={"app_id": str(APP_ID), "webhook_url": WEBHOOK_URL, "page_size": PAGE_SIZE,
                     "currency": "USD", **options},
        ))
        self.webhook_cases = webhook_cases()
        self.outbound_cases = outbound_cases()
        missing = _deal(OpportunityStage.CLOSED_WON, 100, 1, "active", deal_id="opportunity_missing")
        self.not_found_case = OutboundCase("write_back_status", dump(missing), dump(missing), "k-nf")
        bad = Contact(id="contact_bad", source=src("contact", "003B"), email="not-an-email")
        self.invalid_case = OutboundCase("upsert_contact", dump(bad), dump(bad), "k-bad")

    def sign(self, body: bytes, *, timestamp: float) -> dict[str, str]:
        return SignatureV3(CLIENT_SECRET).headers("POST", WEBHOOK_URL, body, int(timestamp * 1000))

    def signature_headers(self) -> Sequence[str]:
        return ["X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp"]

    def _matching(self, case: OutboundCase) -> list[dict[str, Any]]:
        key = str(case.create["id"])
        return [r for r in self.sandbox.records(_OBJECTS[case.operation]) if r["properties"].get("syncline_id") == key]

    def count(self, case: OutboundCase) -> int:
        return len(self._matching(case))

    def stored(self, case: OutboundCase) -> Mapping[str, Any]:
        [record] = self._matching(case)
        return record

    def changed(self, case: OutboundCase, record: Mapping[str, Any]) -> bool:
        props = record["properties"]
        checks = {
            "upsert_company": lambda: props.get("name") == "Acme Ltd",
            "upsert_contact": lambda: props.get("lastname") == "King",
            "upsert_product": lambda: props.get("name") == "Gold plan v2",
            "upsert_line_item": lambda: props.get("quantity") == "5",
            "upsert_deal": lambda: props.get("dealstage") == "closedwon" and props.get("amount") == "2676.00",
            "upsert_quote": lambda: props.get("hs_status") == "APPROVED",
            "write_back_status": lambda: props.get("syncline_status") == "active in billing and ERP"
            and props.get("syncline_billing_id") == "cus_Q1" and props.get("syncline_erp_id") == "4711",
        }
        return bool(checks[case.operation]())

    def inject(self, fault: Literal["rate_limit", "server_error", "auth"], *, retry_after: float | None = None) -> None:
        self.sandbox.inject(fault, retry_after=retry_after)

    def seed_events(self, n: int) -> Sequence[str]:
        """Create ``n`` contacts as HubSpot users would; return their snapshot identities, oldest first."""
        ids = [self.sandbox.create("contacts", {"firstname": f"Seed {i}", "email": f"seed{i}@example.com"})
               for i in range(n)]
        records = {r["id"]: r for r in self.sandbox.records("contacts")}
        return [identify({"objectType": "contacts", "id": i, "properties": {},
                          "updatedAt": records[i]["updatedAt"]}).event_id for i in ids]

    def batch_items(self) -> list[tuple[str, Mapping[str, Any]]]:
        good = [Contact(id=f"contact_batch{i}", source=src("contact", f"003C{i}"), email=f"b{i}@example.com")
                for i in (1, 2)]
        bad = Contact(id="contact_batch_bad", source=src("contact", "003CX"), email="nobody-at-example")
        return [("kb1", dump(good[0])), ("kb-bad", dump(bad)), ("kb2", dump(good[1]))]


@contextmanager
def hubspot_harness(connector_options: Mapping[str, Any] | None = None,
                    **sandbox_options: Any) -> Iterator[HubSpotHarness]:
    """Start a HubSpot sandbox on a free port and yield a harness around it."""
    sandbox = HubSpotSandbox(access_token=TOKEN, portal_id=PORTAL_ID, app_id=APP_ID, client_secret=CLIENT_SECRET,
                             **sandbox_options)
    with ServerThread(sandbox.app) as server:
        yield HubSpotHarness(sandbox, server.url, **(connector_options or {}))
