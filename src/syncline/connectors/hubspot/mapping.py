"""Canonical objects ⇄ HubSpot CRM properties.

HubSpot property values travel as strings on the v3 API (``"amount": "1250.00"``); money goes
out as an exact decimal in major units, never through a float. Every record Syncline writes
carries the unique property ``syncline_id`` (configurable) holding the canonical id: that is
what batch upsert matches on, so a retry updates instead of duplicating.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, ValidationError

from syncline.canonical import objects as o
from syncline.canonical.events import canonical_id
from syncline.canonical.money import Money
from syncline.errors import DataQualityError

DEFAULT_ID_PROPERTY = "syncline_id"

_STAGE_OUT = {o.OpportunityStage.CLOSED_WON: "closedwon", o.OpportunityStage.CLOSED_LOST: "closedlost"}
_QUOTE_STATUS_OUT = {
    o.QuoteStatus.DRAFT: "DRAFT",
    o.QuoteStatus.PRESENTED: "APPROVAL_NOT_NEEDED",
    o.QuoteStatus.ACCEPTED: "APPROVED",
    o.QuoteStatus.REJECTED: "REJECTED",
}
_QUOTE_STATUS_IN = {value: key for key, value in _QUOTE_STATUS_OUT.items()}
_FREQUENCY = {o.Interval.WEEK: "weekly", o.Interval.MONTH: "monthly", o.Interval.YEAR: "annually"}
#: Keys a sender may add beside a canonical opportunity for the status write-back:
#: ``"external_ids": {"billing": "sub_1Q2w3E", "erp": "SO-1042"}`` (the flows send this shape).
WRITE_BACK_EXTRAS = ("external_ids",)
#: ``external_ids`` key → the deal property it is written to.
WRITE_BACK_PROPERTIES = {"billing": "syncline_billing_id", "erp": "syncline_erp_id"}
#: Keys beside a canonical order line naming the record it belongs to.
LINE_PARENTS = ("opportunity_id", "quote_id")

MODELS: dict[str, type[BaseModel]] = {
    "account": o.Account, "contact": o.Contact, "opportunity": o.Opportunity, "product": o.Product,
    "quote": o.Quote, "order_line": o.OrderLine,
}


@dataclass(frozen=True)
class MappingOptions:
    """Per-connection mapping settings (``options`` of the connection)."""

    id_property: str = DEFAULT_ID_PROPERTY
    #: The deal stage an open opportunity is written with (pipelines differ per portal).
    open_stage: str = "appointmentscheduled"
    pipeline: str = "default"
    #: The portal's company currency: what a deal without ``deal_currency_code`` is in.
    currency: str | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> MappingOptions:
        """Read the mapping settings from connection options, with defaults."""
        currency = options.get("currency")
        return cls(
            id_property=str(options.get("id_property", DEFAULT_ID_PROPERTY)),
            open_stage=str(options.get("open_stage", "appointmentscheduled")),
            pipeline=str(options.get("pipeline", "default")),
            currency=str(currency).upper() if currency else None,
        )


def parse(kind: str, payload: Mapping[str, Any]) -> BaseModel:
    """Validate a canonical payload of ``kind``; DataQualityError names the first bad field."""
    model = MODELS[kind]
    try:
        return model.model_validate(dict(payload))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise DataQualityError(f"{kind} payload invalid at {where}: {first['msg']}", field=where) from None


def money(value: Money) -> str:
    """Return ``Money`` as HubSpot's decimal string in major units (1999 USD → ``"19.99"``)."""
    return format(value.to_decimal(), "f")


def _drop_none(properties: Mapping[str, str | None]) -> dict[str, str]:
    return {key: value for key, value in properties.items() if value is not None}


def company_properties(account: o.Account, opts: MappingOptions) -> dict[str, str]:
    """Return the company properties of an account."""
    address = account.address or o.Address()
    return _drop_none({
        opts.id_property: account.id, "name": account.name, "phone": account.phone,
        "address": address.line1, "address2": address.line2, "city": address.city, "state": address.region,
        "zip": address.postal_code, "country": address.country,
    })


def contact_properties(contact: o.Contact, opts: MappingOptions) -> dict[str, str]:
    """Return the contact properties of a contact."""
    return _drop_none({
        opts.id_property: contact.id, "firstname": contact.first_name, "lastname": contact.last_name,
        "email": contact.email,
    })


def product_properties(product: o.Product, opts: MappingOptions) -> dict[str, str]:
    """Return the product properties of a product."""
    return _drop_none({opts.id_property: product.id, "name": product.name, "hs_sku": product.sku})


def deal_properties(deal: o.Opportunity, opts: MappingOptions) -> dict[str, str]:
    """Return the deal properties of an opportunity (its lines go out as line items)."""
    return _drop_none({
        opts.id_property: deal.id, "dealname": deal.name,
        "dealstage": _STAGE_OUT.get(deal.stage, opts.open_stage), "pipeline": opts.pipeline,
        "amount": money(deal.amount) if deal.amount is not None else None,
        "deal_currency_code": deal.currency,
        "closedate": deal.close_date.isoformat() if deal.close_date else None,
        "syncline_status": deal.sync_status,
    })


def line_item_properties(line: o.OrderLine, opts: MappingOptions) -> dict[str, str]:
    """Return the line item properties of an order line."""
    return _drop_none({
        opts.id_property: line.id, "name": line.description or line.product_id or line.id,
        "quantity": str(line.quantity), "price": money(line.unit_amount),
        "hs_line_item_currency_code": line.unit_amount.currency,
        "recurringbillingfrequency": _FREQUENCY.get(line.interval) if line.interval else None,
        "hs_recurring_billing_start_date": line.service_start.isoformat() if line.service_start else None,
    })


def quote_properties(quote: o.Quote, opts: MappingOptions) -> dict[str, str]:
    """Return the quote properties of a quote (HubSpot requires a title and an expiry date)."""
    return _drop_none({
        opts.id_property: quote.id, "hs_title": f"Quote {quote.id}",
        "hs_status": _QUOTE_STATUS_OUT[quote.status], "hs_currency": quote.currency,
        "hs_expiration_date": quote.expires_on.isoformat() if quote.expires_on else None,
    })


def status_properties(deal: o.Opportunity, extras: Mapping[str, Any], opts: MappingOptions) -> dict[str, str]:
    """Return the properties ``write_back_status`` sets on a deal."""
    if deal.sync_status is None:
        raise DataQualityError(f"opportunity {deal.id} has no sync_status to write back", field="sync_status")
    properties = {"syncline_status": deal.sync_status}
    external = extras.get("external_ids") or {}
    if not isinstance(external, Mapping):
        raise DataQualityError("external_ids must be an object like {\"billing\": ..., \"erp\": ...}",
                               field="external_ids")
    for key, prop in WRITE_BACK_PROPERTIES.items():
        value = external.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise DataQualityError(f"external_ids.{key} must be a non-empty string", field=f"external_ids.{key}")
        properties[prop] = value
    return properties


# -- HubSpot → canonical (catch-up snapshots and webhooks) ------------------------------------


def _text(properties: Mapping[str, Any], name: str) -> str | None:
    value = properties.get(name)
    return str(value) if value not in (None, "") else None


def _source(connection: str, object_type: str, hubspot_id: str) -> o.SourceRef:
    return o.SourceRef(system=connection, object_type=object_type, external_id=hubspot_id)


def record_id(connection: str, kind: str, hubspot_type: str, hubspot_id: str,
              properties: Mapping[str, Any], opts: MappingOptions) -> str:
    """Return the canonical id of a HubSpot record: ours if Syncline wrote it, else derived."""
    return _text(properties, opts.id_property) or canonical_id(connection, kind, f"{hubspot_type}/{hubspot_id}")


def to_account(connection: str, hubspot_id: str, props: Mapping[str, Any], opts: MappingOptions) -> o.Account:
    """Return the canonical account of a HubSpot company."""
    address = o.Address(line1=_text(props, "address"), line2=_text(props, "address2"), city=_text(props, "city"),
                        region=_text(props, "state"), postal_code=_text(props, "zip"),
                        country=_country(_text(props, "country")))
    return o.Account(
        id=record_id(connection, "account", "companies", hubspot_id, props, opts),
        source=_source(connection, "company", hubspot_id), name=_text(props, "name"), phone=_text(props, "phone"),
        address=address if address != o.Address() else None,
    )


def linked_id(connection: str, kind: str, object_name: str, link: Mapping[str, Any]) -> str:
    """Return the canonical id of an associated record ``{"id": "8812", "key": "account_..." | None}``.

    ``key`` is the record's unique property value when Syncline wrote it; otherwise the id is
    derived from the HubSpot id the same way :func:`record_id` derives it.
    """
    key = link.get("key")
    return str(key) if key else canonical_id(connection, kind, f"{object_name}/{link.get('id')}")


def to_contact(connection: str, hubspot_id: str, props: Mapping[str, Any], account_ids: list[str],
               opts: MappingOptions) -> o.Contact:
    """Return the canonical contact of a HubSpot contact and the accounts of its associated companies."""
    return o.Contact(
        id=record_id(connection, "contact", "contacts", hubspot_id, props, opts),
        source=_source(connection, "contact", hubspot_id),
        account_id=account_ids[0] if account_ids else None,
        first_name=_text(props, "firstname"), last_name=_text(props, "lastname"), email=_text(props, "email"),
    )


def to_product(connection: str, hubspot_id: str, props: Mapping[str, Any], opts: MappingOptions) -> o.Product:
    """Return the canonical product of a HubSpot product."""
    name = _text(props, "name")
    if name is None:
        raise DataQualityError(f"HubSpot product {hubspot_id} has no name", field="name")
    return o.Product(id=record_id(connection, "product", "products", hubspot_id, props, opts),
                     source=_source(connection, "product", hubspot_id), name=name, sku=_text(props, "hs_sku"))


def to_opportunity(
    connection: str, hubspot_id: str, props: Mapping[str, Any], account_ids: list[str], opts: MappingOptions
) -> o.Opportunity:
    """Return the canonical opportunity of a HubSpot deal and the accounts of its associated companies."""
    if not account_ids:
        raise DataQualityError(f"HubSpot deal {hubspot_id} has no associated company", field="associations")
    currency = _text(props, "deal_currency_code") or opts.currency
    if currency is None:
        raise DataQualityError(
            f"HubSpot deal {hubspot_id} has no deal_currency_code and the connection has no options.currency",
            field="deal_currency_code")
    amount = _text(props, "amount")
    return o.Opportunity(
        id=record_id(connection, "opportunity", "deals", hubspot_id, props, opts),
        source=_source(connection, "deal", hubspot_id),
        account_id=account_ids[0],
        name=_text(props, "dealname"), stage=stage_of(_text(props, "dealstage")), currency=currency,
        amount=_money_in(amount, currency, "amount") if amount is not None else None,
        close_date=_date(_text(props, "closedate")), sync_status=_text(props, "syncline_status"),
    )


def to_quote(connection: str, hubspot_id: str, props: Mapping[str, Any], opportunity_ids: list[str],
             account_ids: list[str], opts: MappingOptions) -> o.Quote:
    """Return the canonical quote of a HubSpot quote and the canonical ids of its deal and company."""
    if not account_ids:
        raise DataQualityError(f"HubSpot quote {hubspot_id} has no associated company", field="associations")
    currency = _text(props, "hs_currency") or opts.currency
    if currency is None:
        raise DataQualityError(f"HubSpot quote {hubspot_id} has no hs_currency", field="hs_currency")
    return o.Quote(
        id=record_id(connection, "quote", "quotes", hubspot_id, props, opts),
        source=_source(connection, "quote", hubspot_id),
        account_id=account_ids[0],
        opportunity_id=opportunity_ids[0] if opportunity_ids else None,
        status=_QUOTE_STATUS_IN.get(_text(props, "hs_status") or "", o.QuoteStatus.DRAFT), currency=currency,
        expires_on=_date(_text(props, "hs_expiration_date")),
    )


def stage_of(dealstage: str | None) -> o.OpportunityStage:
    """Return the canonical stage of a HubSpot ``dealstage`` value."""
    if dealstage == "closedwon":
        return o.OpportunityStage.CLOSED_WON
    if dealstage == "closedlost":
        return o.OpportunityStage.CLOSED_LOST
    return o.OpportunityStage.OPEN


def parse_time(value: Any) -> datetime:
    """Parse HubSpot's ISO 8601 (``2024-03-05T12:30:00.000Z``) or epoch-milliseconds time."""
    text = str(value)
    if text.isdigit():
        return datetime.fromtimestamp(int(text) / 1000, UTC)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise DataQualityError(f"{text!r} is not a HubSpot timestamp", code="field_invalid") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _date(value: str | None) -> date | None:
    if value is None:
        return None
    return parse_time(value if "T" in value or value.isdigit() else value + "T00:00:00Z").date()


def _money_in(value: str, currency: str, field: str) -> Money:
    try:
        return Money.from_decimal(Decimal(value), currency)
    except (InvalidOperation, ValueError) as exc:
        raise DataQualityError(f"{field} {value!r} is not an amount in {currency}: {exc}", field=field) from None


def _country(value: str | None) -> str | None:
    # HubSpot's country is free text; only a two-letter code can go into the canonical field.
    return value.upper() if value and len(value) == 2 and value.isalpha() else None
