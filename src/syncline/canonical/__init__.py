"""Canonical business objects, money and events."""

from syncline.canonical.events import (
    CloudEvent,
    EventType,
    canonical_id,
    event_type,
    event_types,
    json_schemas,
    make_event,
)
from syncline.canonical.money import Money, exponent
from syncline.canonical.objects import (
    Account,
    Address,
    Contact,
    CreditMemo,
    CreditMemoLine,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    JournalEntry,
    JournalLine,
    LegalEntity,
    Payment,
    PaymentStatus,
    Payout,
    Price,
    Product,
    Refund,
    ServicePeriod,
    SourceRef,
    Subscription,
    SubscriptionItem,
    SubscriptionStatus,
    TaxLine,
)

__all__ = [
    "Account", "Address", "CloudEvent", "Contact", "CreditMemo", "CreditMemoLine", "EventType",
    "Invoice", "InvoiceLine", "InvoiceStatus", "JournalEntry", "JournalLine", "LegalEntity", "Money",
    "Payment", "PaymentStatus", "Payout", "Price", "Product", "Refund", "ServicePeriod", "SourceRef",
    "Subscription", "SubscriptionItem", "SubscriptionStatus", "TaxLine", "canonical_id", "event_type",
    "event_types", "exponent", "json_schemas", "make_event",
]
