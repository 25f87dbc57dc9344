"""Canonical events: a CloudEvents 1.0 envelope around a versioned canonical object.

Each event type is registered once with its version and data model; the JSON Schema of every
type is exported by :func:`json_schemas` (and ``syncline schemas``). The envelope keeps the
CloudEvents attribute names, adds the ``correlationid`` extension and records the data version
in ``dataschema``.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from syncline.canonical import objects as o

_NAMESPACE = uuid.UUID("6f1c1d8e-3c56-4e55-9a44-3f4d0e9b7a10")


@dataclass(frozen=True)
class EventType:
    """One registered event type: ``invoice.issued`` v1 carries an :class:`~objects.Invoice`."""

    name: str
    version: int
    data_model: type[BaseModel]
    description: str

    @property
    def dataschema(self) -> str:
        return f"urn:syncline:schema:{self.name}:v{self.version}"


_TYPES: dict[str, EventType] = {}


def _register(name: str, model: type[BaseModel], description: str, version: int = 1) -> None:
    if name in _TYPES:
        raise ValueError(f"event type {name} registered twice")
    _TYPES[name] = EventType(name, version, model, description)


_BUILTIN: list[tuple[str, type[BaseModel], str]] = [
    ("account.created", o.Account, "a customer account appeared in a source system"),
    ("account.updated", o.Account, "a customer account changed"),
    ("account.deleted", o.Account, "a customer account was deleted"),
    ("subscription.activated", o.Subscription, "a subscription started"),
    ("subscription.updated", o.Subscription, "a subscription was amended"),
    ("subscription.canceled", o.Subscription, "a subscription was cancelled"),
    ("invoice.issued", o.Invoice, "an invoice was finalised and sent"),
    ("invoice.paid", o.Invoice, "an invoice was paid in full"),
    ("invoice.voided", o.Invoice, "an invoice was voided"),
    ("invoice.uncollectible", o.Invoice, "an invoice was written off as uncollectible"),
    ("payment.succeeded", o.Payment, "a payment was captured"),
    ("payment.failed", o.Payment, "a payment attempt failed"),
    ("refund.succeeded", o.Refund, "money went back to a customer"),
    ("credit_memo.issued", o.CreditMemo, "a credit note was issued"),
    ("payout.paid", o.Payout, "the billing platform paid out to the bank"),
    ("journal_entry.posted", o.JournalEntry, "a journal entry is ready for the ERP"),
    ("contact.created", o.Contact, "a contact appeared in a source system"),
    ("contact.updated", o.Contact, "a contact changed"),
    ("product.created", o.Product, "a product appeared in the catalogue"),
    ("product.updated", o.Product, "a product changed"),
    ("price.created", o.Price, "a price appeared"),
    ("price.updated", o.Price, "a price changed"),
    ("opportunity.created", o.Opportunity, "a CRM deal was opened"),
    ("opportunity.updated", o.Opportunity, "a CRM deal changed"),
    ("opportunity.closed_won", o.Opportunity, "a CRM deal was won: onboarding starts"),
    ("opportunity.closed_lost", o.Opportunity, "a CRM deal was lost"),
    ("quote.accepted", o.Quote, "a quote was accepted by the customer"),
    ("contract.activated", o.Contract, "a contract was activated"),
    ("sales_order.created", o.SalesOrder, "an order was created in the ERP"),
    ("dispute.opened", o.Dispute, "a chargeback was opened"),
    ("dispute.won", o.Dispute, "a chargeback was decided for the merchant"),
    ("dispute.lost", o.Dispute, "a chargeback was decided for the cardholder"),
    ("entitlement.changed", o.Entitlement, "an account's support entitlement changed"),
    ("support_ticket.created", o.SupportTicket, "a ticket was opened in the support desk"),
    ("record.changed", o.RecordChange, "a source record changed; only its id and the changed field are known"),
]
for _name, _model, _what in _BUILTIN:
    _register(_name, _model, _what)


def event_type(name: str) -> EventType:
    """Return the registered :class:`EventType` ``name``; ``KeyError`` if unknown."""
    return _TYPES[name]


def event_types() -> Mapping[str, EventType]:
    """Return every registered event type by name."""
    return dict(_TYPES)


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 (structured mode) envelope carrying canonical data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    specversion: str = "1.0"
    id: str = Field(description="unique per source; deterministic from the vendor event")
    source: str = Field(description="URI reference of the producing connection, e.g. /connections/stripe")
    type: str
    subject: str | None = Field(default=None, description="canonical id of the object")
    time: datetime
    datacontenttype: str = "application/json"
    dataschema: str
    correlationid: str = Field(description="Syncline extension: the business transaction id")
    sequence: str | None = Field(
        default=None,
        description="CloudEvents sequence extension: orders versions of one subject (lexicographic)",
    )
    data: dict[str, Any]


def make_event(
    name: str,
    data: BaseModel,
    *,
    connection: str,
    vendor_event_id: str,
    time: datetime,
    correlation_id: str | None = None,
    sequence: str | None = None,
) -> CloudEvent:
    """Build the canonical event ``name`` for ``data`` decoded from one vendor event.

    The event id is derived from (connection, vendor event id, type) so decoding the same vendor
    event twice yields the same canonical event.
    """
    kind = _TYPES[name]
    if not isinstance(data, kind.data_model):
        raise TypeError(f"{name} carries {kind.data_model.__name__}, not {type(data).__name__}")
    subject = getattr(data, "id", None)
    return CloudEvent(
        id=str(uuid.uuid5(_NAMESPACE, f"{connection}/{vendor_event_id}/{name}")),
        source=f"/connections/{connection}",
        type=name,
        subject=subject,
        time=time,
        dataschema=kind.dataschema,
        correlationid=correlation_id or subject or vendor_event_id,
        sequence=sequence,
        data=data.model_dump(mode="json"),
    )


@functools.lru_cache(maxsize=65536)
def canonical_id(connection: str, object_type: str, external_id: str) -> str:
    """Return the deterministic canonical id for a record first seen in ``connection``.

    Deterministic so that replaying or re-decoding never mints a second identity; the
    cross-reference table still records the mapping for look-ups the other way.
    """
    digest = hashlib.blake2b(f"{connection}/{object_type}/{external_id}".encode(), digest_size=10).hexdigest()
    return f"{object_type}_{digest}"


def json_schemas() -> dict[str, dict[str, Any]]:
    """Return the JSON Schema of each event type's envelope, keyed by ``<type>.v<version>``."""
    schemas: dict[str, dict[str, Any]] = {}
    for kind in _TYPES.values():
        data_schema = kind.data_model.model_json_schema(mode="serialization")
        envelope = CloudEvent.model_json_schema()
        envelope["title"] = f"{kind.name} v{kind.version}"
        envelope["description"] = kind.description
        defs = {**data_schema.pop("$defs", {})}
        envelope["properties"]["data"] = data_schema
        envelope["properties"]["type"] = {"const": kind.name}
        envelope["properties"]["dataschema"] = {"const": kind.dataschema}
        envelope["$defs"] = defs
        envelope["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        envelope["$id"] = kind.dataschema
        schemas[f"{kind.name}.v{kind.version}"] = envelope
    return schemas
