"""The conformance-suite harness for Salesforce: the connector wired to a live SalesforceSandbox."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date
from typing import Any

import orjson
from pydantic import SecretStr
from tests.connectors.conformance import OutboundCase, WebhookCase

from syncline.canonical import Account, Address, CloudEvent, Money, SourceRef, canonical_id
from syncline.canonical.objects import (
    Contact,
    Contract,
    ContractStatus,
    Opportunity,
    OpportunityStage,
    OrderLine,
    Quote,
    QuoteStatus,
)
from syncline.connectors.base import ConnectionSettings
from syncline.connectors.salesforce import SalesforceConnector, SalesforceSandbox
from syncline.connectors.salesforce.inbound import RelaySignature

CONNECTION = "crm"
WEBHOOK_SECRET = "relay-secret-for-tests"
PAGE = 3
#: Canonical ids of records that exist in the org before the suite runs.
ACCOUNT = "account_acme"
OPPORTUNITY = "opportunity_acme_renewal"
PRICE = "price_pro_monthly"
ENTITY_OF = {
    "upsert_account": "Account", "upsert_contact": "Contact", "upsert_opportunity": "Opportunity",
    "upsert_quote": "SBQQ__Quote__c", "upsert_contract": "Contract", "write_back_status": "Opportunity",
}


def make_connector(sandbox: SalesforceSandbox, **options: Any) -> SalesforceConnector:
    """Return a connector for the sandbox org (client credentials, no API reserve unless given)."""
    secrets = {"client_id": sandbox.client_id, "client_secret": sandbox.client_secret,
               "webhook_secret": WEBHOOK_SECRET}
    settings = ConnectionSettings(
        name=CONNECTION, vendor="salesforce", base_url=sandbox.url,
        secrets={key: SecretStr(value) for key, value in secrets.items()},
        options={"organization_id": sandbox.organization_id, "api_reserve": 0, "query_batch_size": PAGE,
                 **options},
    )
    return SalesforceConnector(settings)


def source(external_id: str) -> dict[str, str]:
    return {"system": "stripe", "object_type": "customer", "external_id": external_id}


def _usd(amount: int) -> Money:
    return Money(amount=amount, currency="USD")


def _check(predicate: Callable[[list[CloudEvent]], bool], what: str) -> Callable[[list[CloudEvent]], None]:
    def check(events: list[CloudEvent]) -> None:
        assert predicate(events), f"{what}: {[event.data for event in events]}"
    return check


class SalesforceHarness:
    """Implements ``tests.connectors.conformance.Harness`` over a started sandbox."""

    catch_up_page_size = PAGE
    batch_operation = "upsert_account"

    def __init__(self, sandbox: SalesforceSandbox) -> None:
        self.sandbox = sandbox
        self.connector = make_connector(sandbox)
        # What a real org would already hold: the customer, a won deal, a price book entry.
        self.account = sandbox.ui_create("Account", {"Name": "Acme Corp", "Syncline_Id__c": ACCOUNT,
                                                     "BillingCity": "Berlin", "BillingCountry": "DE"})
        self.opportunity = sandbox.ui_create("Opportunity", {
            "Name": "Acme renewal", "StageName": "Negotiation", "CloseDate": "2026-11-30", "Amount": 1200,
            "AccountId": self.account["Id"], "Syncline_Id__c": OPPORTUNITY})
        sandbox.ui_create("PricebookEntry", {"UnitPrice": 600, "Syncline_Id__c": PRICE})
        self.contact = sandbox.ui_create("Contact", {"FirstName": "Ada", "LastName": "Lovelace",
                                                     "AccountId": self.account["Id"]})
        sandbox.ui_update("Opportunity", self.opportunity["Id"], {"StageName": "Closed Won"})
        sandbox.ui_update("Opportunity", self.opportunity["Id"], {"Amount": 1300})
        self.webhook_cases = self._webhook_cases(sandbox.change_events)
        self.outbound_cases = self._outbound_cases()
        self.not_found_case = OutboundCase(
            "write_back_status",
            {**self._deal("opportunity_never_synced", "open"), "sync_status": "failed"},
            {**self._deal("opportunity_never_synced", "open"), "sync_status": "failed"},
            "sf-not-found",
        )
        contact = Contact(id="contact_no_last_name", source=SourceRef(**source("cus_9")), account_id=ACCOUNT,
                          first_name="Nameless").model_dump(mode="json")
        self.invalid_case = OutboundCase("upsert_contact", contact, contact, "sf-invalid")

    # -- inbound ------------------------------------------------------------------------------
    def _webhook_cases(self, events: Sequence[Mapping[str, Any]]) -> list[WebhookCase]:
        account_created, opportunity_created, contact_created, won, amount_changed = events[:5]
        own = orjson.loads(orjson.dumps(won))
        own["payload"]["ChangeEventHeader"]["changeOrigin"] = "com/salesforce/api/rest/61.0;client=syncline"
        own["payload"]["ChangeEventHeader"]["transactionKey"] = "0001-syncline-own"
        own["event"]["replayId"] = 9001
        deleted = {"schema": "sandbox-Account-v1", "event": {"replayId": 9002}, "payload": {"ChangeEventHeader": {
            "entityName": "Account", "recordIds": [self.account["Id"]], "changeType": "DELETE", "changedFields": [],
            "changeOrigin": "", "transactionKey": "0001-delete", "sequenceNumber": 1,
            "commitTimestamp": 1_795_000_000_000, "commitNumber": 1, "commitUser": "0055g00000UiUsrAAA"}}}
        gap = orjson.loads(orjson.dumps(amount_changed))
        gap["payload"] = {"ChangeEventHeader": {**gap["payload"]["ChangeEventHeader"], "changeType": "GAP_UPDATE"}}
        gap["payload"]["ChangeEventHeader"]["transactionKey"] = "0001-gap"
        gap["event"]["replayId"] = 9003
        account_id = canonical_id(CONNECTION, "account", self.account["Id"])
        return [
            WebhookCase("AccountChangeEvent CREATE", orjson.dumps(account_created), ["account.created"],
                        _check(lambda e: e[0].data["id"] == ACCOUNT and e[0].data["name"] == "Acme Corp"
                               and e[0].data["address"]["country"] == "DE", "own canonical id, name, address")),
            WebhookCase("OpportunityChangeEvent CREATE (open)", orjson.dumps(opportunity_created),
                        ["opportunity.created"],
                        _check(lambda e: e[0].data["amount"] == {"amount": 120000, "currency": "USD"}
                               and e[0].data["account_id"] == account_id, "amount in minor units, account")),
            WebhookCase("ContactChangeEvent CREATE (compound Name)", orjson.dumps(contact_created),
                        ["contact.created"],
                        _check(lambda e: (e[0].data["first_name"], e[0].data["last_name"]) == ("Ada", "Lovelace")
                               and e[0].data["account_id"] == account_id, "names from the compound field")),
            WebhookCase("OpportunityChangeEvent UPDATE to Closed Won", orjson.dumps(won),
                        ["opportunity.updated", "opportunity.closed_won"],
                        _check(lambda e: e[1].data["stage"] == "closed_won" and e[0].subject == OPPORTUNITY,
                               "closed won")),
            WebhookCase("OpportunityChangeEvent UPDATE of a won deal's amount", orjson.dumps(amount_changed),
                        ["opportunity.updated"]),
            WebhookCase("AccountChangeEvent DELETE", orjson.dumps(deleted), ["account.deleted"],
                        _check(lambda e: e[0].data["deleted"] is True, "deleted flag")),
            WebhookCase("Syncline's own change (changeOrigin client=syncline)", orjson.dumps(own), []),
            WebhookCase("Gap event", orjson.dumps(gap), []),
        ]

    def sign(self, body: bytes, *, timestamp: float) -> dict[str, str]:
        return {"X-Syncline-Signature": RelaySignature(WEBHOOK_SECRET).sign(body, int(timestamp))}

    def signature_headers(self) -> Sequence[str]:
        return ["X-Syncline-Signature"]

    # -- outbound -----------------------------------------------------------------------------
    def _deal(self, opportunity_id: str, stage: str) -> dict[str, Any]:
        return Opportunity(
            id=opportunity_id, source=SourceRef(**source("cus_1")), account_id=ACCOUNT, name="Acme expansion",
            stage=OpportunityStage(stage), currency="USD", amount=_usd(120000), close_date=date(2026, 12, 15),
            lines=[OrderLine(id="line_1", price_id=PRICE, quantity=2, unit_amount=_usd(60000),
                             description="Pro plan", service_start=date(2027, 1, 1))],
        ).model_dump(mode="json")

    def _outbound_cases(self) -> list[OutboundCase]:
        account = Account(id="account_globex", source=SourceRef(**source("cus_2")), name="Globex",
                          phone="+49 30 1234", address=Address(line1="Unter den Linden 1", city="Berlin",
                                                               country="DE"))
        contact = Contact(id="contact_grace", source=SourceRef(**source("cus_3")), account_id=ACCOUNT,
                          first_name="Grace", last_name="Hopper", email="grace@acme.example")
        quote = Quote(id="quote_acme_1", source=SourceRef(**source("qt_1")), account_id=ACCOUNT,
                      opportunity_id=OPPORTUNITY, status=QuoteStatus.PRESENTED, currency="USD",
                      expires_on=date(2026, 12, 31))
        contract = Contract(id="contract_acme_1", source=SourceRef(**source("ct_1")), account_id=ACCOUNT,
                            opportunity_id=OPPORTUNITY, status=ContractStatus.DRAFT, start_date=date(2027, 1, 1),
                            term_months=12)
        status = {**self._deal(OPPORTUNITY, "closed_won"), "sync_status": "provisioning",
                  "external_ids": {"billing": "sub_1Q2w3E"}}
        return [
            OutboundCase("upsert_account", account.model_dump(mode="json"),
                         account.model_copy(update={"name": "Globex Corporation"}).model_dump(mode="json"),
                         "sf-account-1"),
            OutboundCase("upsert_contact", contact.model_dump(mode="json"),
                         contact.model_copy(update={"email": "grace.hopper@acme.example"}).model_dump(mode="json"),
                         "sf-contact-1"),
            OutboundCase("upsert_opportunity", self._deal("opportunity_acme_expansion", "open"),
                         self._deal("opportunity_acme_expansion", "closed_won"), "sf-opportunity-1"),
            OutboundCase("upsert_quote", quote.model_dump(mode="json"),
                         quote.model_copy(update={"status": QuoteStatus.ACCEPTED}).model_dump(mode="json"),
                         "sf-quote-1"),
            OutboundCase("upsert_contract", contract.model_dump(mode="json"),
                         contract.model_copy(update={"term_months": 24}).model_dump(mode="json"), "sf-contract-1"),
            OutboundCase("write_back_status", status,
                         {**status, "sync_status": "active in billing and ERP",
                          "external_ids": {"billing": "sub_1Q2w3E", "erp": "SO-1042"}}, "sf-status-1"),
        ]

    def count(self, case: OutboundCase) -> int:
        return len(self.sandbox.find(ENTITY_OF[case.operation], str(case.create["id"])))

    def stored(self, case: OutboundCase) -> Mapping[str, Any]:
        (record,) = self.sandbox.find(ENTITY_OF[case.operation], str(case.create["id"]))
        return record

    def changed(self, case: OutboundCase, record: Mapping[str, Any]) -> bool:
        expected = {
            "upsert_account": ("Name", "Globex Corporation"),
            "upsert_contact": ("Email", "grace.hopper@acme.example"),
            "upsert_opportunity": ("StageName", "Closed Won"),
            "upsert_quote": ("SBQQ__Status__c", "Accepted"),
            "upsert_contract": ("ContractTerm", 24),
            "write_back_status": ("Syncline_Status__c", "active in billing and ERP"),
        }
        name, value = expected[case.operation]
        return bool(record.get(name) == value)

    def inject(self, fault: Any, *, retry_after: float | None = None) -> None:
        self.sandbox.inject(fault, retry_after=retry_after)

    def seed_events(self, n: int) -> list[str]:
        """Create ``n`` Accounts as a person would; return their catch-up event ids, oldest first."""
        created = [self.sandbox.ui_create("Account", {"Name": f"Seeded {index}"}) for index in range(n)]
        return [f"catchup:Account/{record['Id']}/{record['SystemModstamp']}" for record in created]

    def batch_items(self) -> list[tuple[str, Mapping[str, Any]]]:
        def account(account_id: str, name: str | None) -> Mapping[str, Any]:
            return Account(id=account_id, source=SourceRef(**source(f"cus_{account_id}")),
                           name=name).model_dump(mode="json")
        return [("sf-batch-1", account("account_batch_1", "Initech")),
                ("sf-batch-2", account("account_batch_2", None)),
                ("sf-batch-3", account("account_batch_3", "Umbrella"))]
