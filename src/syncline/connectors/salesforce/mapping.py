"""Canonical objects ⇄ Salesforce sObject fields.

Outbound, every record is addressed by its canonical id in the external id field
(``Syncline_Id__c`` unless ``options.external_id_field`` says otherwise), and so is every
reference: ``{"Account": {"Syncline_Id__c": "account_3f2a..."}}`` lets Salesforce resolve the
lookup itself, with no read first. Money goes out as exact :class:`~decimal.Decimal` major units.

Inbound, a record keeps the canonical id Syncline gave it when ``Syncline_Id__c`` is set (it was
created from another system) and otherwise gets ``canonical_id(connection, type, Salesforce id)``;
lookups (``AccountId``) are mapped the second way. Change events carry compound fields
(``Name: {"FirstName", "LastName"}``, ``BillingAddress: {"Street", ...}``); query results carry
them flat (``FirstName``, ``BillingStreet``); both are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, ValidationError

from syncline.canonical import Account, Address, Money, SourceRef, canonical_id
from syncline.canonical.objects import (
    Contact,
    Contract,
    ContractStatus,
    Opportunity,
    OpportunityStage,
    Quote,
    QuoteStatus,
)
from syncline.errors import ConfigError, DataQualityError

DEFAULT_STAGES: Mapping[str, str] = {
    OpportunityStage.OPEN.value: "Prospecting",
    OpportunityStage.CLOSED_WON.value: "Closed Won",
    OpportunityStage.CLOSED_LOST.value: "Closed Lost",
}
QUOTE_STATUSES: Mapping[QuoteStatus, str] = {
    QuoteStatus.DRAFT: "Draft", QuoteStatus.PRESENTED: "Presented",
    QuoteStatus.ACCEPTED: "Accepted", QuoteStatus.REJECTED: "Rejected",
}
CONTRACT_STATUSES: Mapping[ContractStatus, str] = {
    ContractStatus.DRAFT: "Draft", ContractStatus.ACTIVATED: "Activated",
    ContractStatus.EXPIRED: "Expired", ContractStatus.CANCELED: "Canceled",
}
#: Salesforce's own limit on text external id values.
MAX_EXTERNAL_ID = 255


@dataclass(frozen=True)
class MappingOptions:
    """Org-specific choices, from the connection's ``options``."""

    external_id_field: str = "Syncline_Id__c"
    status_field: str = "Syncline_Status__c"
    billing_id_field: str = "Syncline_Billing_Id__c"
    erp_id_field: str = "Syncline_ERP_Id__c"
    #: Salesforce CPQ's quote object; a plain ``Quote`` org would need its own field names.
    quote_object: str = "SBQQ__Quote__c"
    #: Send ``CurrencyIsoCode`` (only orgs with multiple currencies enabled have the field).
    multi_currency: bool = False
    #: Currency of records without ``CurrencyIsoCode`` (single-currency orgs).
    default_currency: str = "USD"
    #: canonical stage → StageName picklist value.
    stages: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_STAGES))
    #: PricebookEntryId for opportunity lines without a ``price_id``.
    default_pricebook_entry_id: str | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> MappingOptions:
        """Read the mapping options of a connection (unknown keys are someone else's)."""
        defaults = cls()
        stages = dict(DEFAULT_STAGES)
        stages.update({str(k): str(v) for k, v in (options.get("stages") or {}).items()})
        unknown = set(stages) - set(DEFAULT_STAGES)
        if unknown:
            raise ConfigError(f"options.stages has unknown canonical stages {sorted(unknown)}")
        entry = options.get("default_pricebook_entry_id")
        return cls(
            external_id_field=str(options.get("external_id_field", defaults.external_id_field)),
            status_field=str(options.get("status_field", defaults.status_field)),
            billing_id_field=str(options.get("billing_id_field", defaults.billing_id_field)),
            erp_id_field=str(options.get("erp_id_field", defaults.erp_id_field)),
            quote_object=str(options.get("quote_object", defaults.quote_object)),
            multi_currency=bool(options.get("multi_currency", False)),
            default_currency=str(options.get("default_currency", defaults.default_currency)).upper(),
            stages=stages,
            default_pricebook_entry_id=str(entry) if entry else None,
        )

    def ref(self, canonical: str, what: str) -> dict[str, str]:
        """Return a lookup by external id: ``{"Syncline_Id__c": "account_3f2a..."}``."""
        return {self.external_id_field: external_id(canonical, what)}

    def stage_of(self, stage_name: str | None) -> OpportunityStage:
        """Return the canonical stage of a StageName (unknown names are open deals)."""
        for canonical, name in self.stages.items():
            if name == stage_name:
                return OpportunityStage(canonical)
        return OpportunityStage.OPEN


def parse(model: type[BaseModel], payload: Mapping[str, Any]) -> Any:
    """Validate ``payload`` as ``model``; DataQualityError names the first bad field."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(payload)"
        raise DataQualityError(
            f"{model.__name__.lower()} payload is invalid at {where}: {first['msg']}", field=where,
            errors=exc.error_count(),
        ) from None


def external_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it can be an external id in a URL path segment, else DataQualityError."""
    if not value or len(value) > MAX_EXTERNAL_ID or "/" in value or value.strip() != value:
        raise DataQualityError(f"{what} {value!r} cannot be a Salesforce external id", field=what)
    return value


# -- canonical → sObject ----------------------------------------------------------------------
def account_fields(account: Account, options: MappingOptions) -> dict[str, Any]:
    """Return Account fields; ``Name`` is left out when unknown, so Salesforce names the gap."""
    body: dict[str, Any] = {}
    if account.name:
        body["Name"] = account.name
    if account.phone:
        body["Phone"] = account.phone
    if account.address:
        address = account.address
        street = "\n".join(part for part in (address.line1, address.line2) if part)
        parts = {"BillingStreet": street, "BillingCity": address.city, "BillingState": address.region,
                 "BillingPostalCode": address.postal_code, "BillingCountry": address.country}
        body.update({key: value for key, value in parts.items() if value})
    if options.multi_currency and account.currency:
        body["CurrencyIsoCode"] = account.currency
    return body


def contact_fields(contact: Contact, options: MappingOptions) -> dict[str, Any]:
    """Return Contact fields with the Account lookup by external id."""
    body: dict[str, Any] = {}
    for key, value in (("FirstName", contact.first_name), ("LastName", contact.last_name),
                       ("Email", contact.email)):
        if value:
            body[key] = value
    if contact.account_id:
        body["Account"] = options.ref(contact.account_id, "account_id")
    return body


def opportunity_fields(opportunity: Opportunity, options: MappingOptions) -> dict[str, Any]:
    """Return Opportunity fields (without its lines, which are their own records)."""
    body: dict[str, Any] = {
        "StageName": options.stages[opportunity.stage.value],
        "Account": options.ref(opportunity.account_id, "account_id"),
    }
    if opportunity.name:
        body["Name"] = opportunity.name
    if opportunity.close_date:
        body["CloseDate"] = opportunity.close_date.isoformat()
    if opportunity.amount is not None:
        body["Amount"] = _amount(opportunity.amount, opportunity.currency, "amount")
    if options.multi_currency:
        body["CurrencyIsoCode"] = opportunity.currency
    return body


def line_item_key(opportunity_id: str, line_id: str) -> str:
    """Return the external id of an opportunity line: unique per opportunity and line."""
    return external_id(f"{opportunity_id}:{line_id}", "lines.id")


def line_item_records(opportunity: Opportunity, options: MappingOptions) -> list[dict[str, Any]]:
    """Return OpportunityLineItem records for an sObject Collections upsert.

    A line with a ``price_id`` points at the PricebookEntry carrying that id in its external id
    field; one without uses ``options.default_pricebook_entry_id``.
    """
    records: list[dict[str, Any]] = []
    for line in opportunity.lines:
        record: dict[str, Any] = {
            "attributes": {"type": "OpportunityLineItem"},
            options.external_id_field: line_item_key(opportunity.id, line.id),
            "Opportunity": options.ref(opportunity.id, "id"),
            "Quantity": line.quantity,
            "UnitPrice": _amount(line.unit_amount, opportunity.currency, f"lines.{line.id}.unit_amount"),
        }
        if line.price_id:
            record["PricebookEntry"] = options.ref(line.price_id, f"lines.{line.id}.price_id")
        elif options.default_pricebook_entry_id:
            record["PricebookEntryId"] = options.default_pricebook_entry_id
        else:
            raise DataQualityError(
                f"opportunity {opportunity.id} line {line.id} has no price_id and the connection has no "
                "options.default_pricebook_entry_id", field=f"lines.{line.id}.price_id",
            )
        if line.description:
            record["Description"] = line.description
        if line.service_start:
            record["ServiceDate"] = line.service_start.isoformat()
        records.append(record)
    return records


def quote_fields(quote: Quote, options: MappingOptions) -> dict[str, Any]:
    """Return Salesforce CPQ quote fields (``SBQQ__Quote__c``); quote lines are not written."""
    body: dict[str, Any] = {
        "SBQQ__Account__r": options.ref(quote.account_id, "account_id"),
        "SBQQ__Status__c": QUOTE_STATUSES[quote.status],
        "SBQQ__Primary__c": True,
    }
    if quote.opportunity_id:
        body["SBQQ__Opportunity2__r"] = options.ref(quote.opportunity_id, "opportunity_id")
    if quote.expires_on:
        body["SBQQ__ExpirationDate__c"] = quote.expires_on.isoformat()
    if options.multi_currency:
        body["CurrencyIsoCode"] = quote.currency
    return body


def contract_fields(contract: Contract, options: MappingOptions) -> dict[str, Any]:
    """Return Contract fields; the Status values must exist in the org's picklist."""
    return {
        "Account": options.ref(contract.account_id, "account_id"),
        "StartDate": contract.start_date.isoformat(),
        "ContractTerm": contract.term_months,
        "Status": CONTRACT_STATUSES[contract.status],
    }


def write_back_fields(opportunity: Opportunity, external_ids: Mapping[str, Any],
                      options: MappingOptions) -> dict[str, Any]:
    """Return only the Syncline-owned Opportunity fields: status text and other systems' ids."""
    body: dict[str, Any] = {options.status_field: opportunity.sync_status}
    for key, field_name in (("billing", options.billing_id_field), ("erp", options.erp_id_field)):
        value = external_ids.get(key)
        if value is not None:
            if not isinstance(value, str) or not value:
                raise DataQualityError(f"external_ids.{key} must be a non-empty string", field=f"external_ids.{key}")
            body[field_name] = value
    return body


def _amount(money: Money, currency: str, where: str) -> Decimal:
    if money.currency != currency:
        raise DataQualityError(f"{where} is in {money.currency}, the record in {currency}", field=where)
    return money.to_decimal()


# -- sObject → canonical ----------------------------------------------------------------------
class Record:
    """Read one sObject's fields, raising DataQualityError that names the missing or bad field."""

    def __init__(self, connection: str, entity: str, record_id: str, fields: Mapping[str, Any],
                 options: MappingOptions) -> None:
        self.connection = connection
        self.entity = entity
        self.record_id = record_id
        self.fields = fields
        self.options = options

    def _error(self, name: str, why: str) -> DataQualityError:
        return DataQualityError(f"{self.entity} {self.record_id}: {name} {why}", code="field_invalid", field=name)

    def text(self, name: str, *compound: str) -> str | None:
        """Return a text field, from ``name`` or from a compound field's part (``Name.FirstName``)."""
        value = self.fields.get(name)
        if value is None and compound:
            parent = self.fields.get(compound[0])
            value = parent.get(compound[1]) if isinstance(parent, Mapping) else None
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self._error(name, f"must be text, got {type(value).__name__}")
        return value

    def required_text(self, name: str) -> str:
        value = self.text(name)
        if value is None:
            raise DataQualityError(f"{self.entity} {self.record_id}: {name} is missing (add it to the change "
                                   "event's enriched fields)", code="field_missing", field=name)
        return value

    def day(self, name: str) -> date | None:
        value = self.text(name)
        try:
            return None if value is None else date.fromisoformat(value[:10])
        except ValueError:
            raise self._error(name, f"is not a date: {value!r}") from None

    def money(self, name: str, currency: str) -> Money | None:
        value = self.fields.get(name)
        if value is None:
            return None
        if isinstance(value, bool):
            raise self._error(name, "must be a number")
        try:
            return Money.from_decimal(Decimal(str(value)), currency)
        except (InvalidOperation, ValueError) as exc:
            raise self._error(name, f"is not an amount in {currency}: {exc}") from None

    def currency(self) -> str:
        return (self.text("CurrencyIsoCode") or self.options.default_currency).upper()

    def source(self) -> SourceRef:
        return SourceRef(system=self.connection, object_type=self.entity, external_id=self.record_id)

    def own_id(self, object_type: str) -> str:
        """Return the canonical id: Syncline's own (external id field) or one derived from the record id."""
        return self.text(self.options.external_id_field) or canonical_id(self.connection, object_type, self.record_id)

    def lookup(self, name: str, object_type: str) -> str | None:
        value = self.text(name)
        return None if value is None else canonical_id(self.connection, object_type, value)


def to_account(record: Record, *, deleted: bool = False) -> Account:
    """Return the canonical account of an Account record or change event."""
    street = record.text("BillingStreet", "BillingAddress", "Street")
    line1, _, line2 = (street or "").partition("\n")
    address = Address(
        line1=line1 or None, line2=line2 or None,
        city=record.text("BillingCity", "BillingAddress", "City"),
        region=record.text("BillingState", "BillingAddress", "State"),
        postal_code=record.text("BillingPostalCode", "BillingAddress", "PostalCode"),
        country=_country(record.text("BillingCountryCode", "BillingAddress", "CountryCode")
                         or record.text("BillingCountry", "BillingAddress", "Country")),
    )
    return Account(
        id=record.own_id("account"), source=record.source(), name=record.text("Name"),
        phone=record.text("Phone"), currency=record.text("CurrencyIsoCode"),
        address=address if address != Address() else None, deleted=deleted,
    )


def to_contact(record: Record) -> Contact:
    """Return the canonical contact of a Contact record or change event."""
    return Contact(
        id=record.own_id("contact"), source=record.source(),
        account_id=record.lookup("AccountId", "account"),
        first_name=record.text("FirstName", "Name", "FirstName"),
        last_name=record.text("LastName", "Name", "LastName"),
        email=record.text("Email"),
    )


def to_opportunity(record: Record) -> Opportunity:
    """Return the canonical opportunity of an Opportunity record or change event (no lines)."""
    account_id = record.lookup("AccountId", "account")
    if account_id is None:
        raise DataQualityError(f"Opportunity {record.record_id}: AccountId is missing (add it to the change "
                               "event's enriched fields)", code="field_missing", field="AccountId")
    currency = record.currency()
    return Opportunity(
        id=record.own_id("opportunity"), source=record.source(), account_id=account_id,
        name=record.text("Name"), stage=record.options.stage_of(record.text("StageName")),
        currency=currency, amount=record.money("Amount", currency), close_date=record.day("CloseDate"),
        sync_status=record.text(record.options.status_field),
    )


def _country(value: str | None) -> str | None:
    # Only ISO alpha-2 codes are canonical; a free-text "Germany" stays out rather than guessed.
    return value if value and len(value) == 2 and value.isalpha() and value.isupper() else None
