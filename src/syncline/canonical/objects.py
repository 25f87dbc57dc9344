"""Canonical business objects (v1): the shape every connector maps to and from.

Ids: ``id`` is Syncline's canonical id; ``source`` says which system and record it came from.
Amounts are :class:`~syncline.canonical.money.Money`. Times are timezone-aware UTC datetimes;
calendar dates (service periods, due dates) are dates.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from syncline.canonical.money import CurrencyCode, Money


class _Canonical(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceRef(_Canonical):
    """Where a canonical object came from: system (connection), object type and its own id."""

    system: str
    object_type: str
    external_id: str


class Address(_Canonical):
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    region: str | None = None
    postal_code: str | None = None
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")


class LegalEntity(_Canonical):
    """A company of the group that books revenue (NetSuite subsidiary, SAP company code)."""

    id: str
    name: str
    country: str = Field(pattern=r"^[A-Z]{2}$")
    functional_currency: CurrencyCode


class Account(_Canonical):
    """A customer: the billing/CRM account."""

    object_type: Literal["account"] = "account"
    id: str
    source: SourceRef
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    currency: CurrencyCode | None = None
    address: Address | None = None
    tax_exempt: bool = False
    tax_ids: list[str] = Field(default_factory=list)
    legal_entity_id: str | None = None
    deleted: bool = False


class Contact(_Canonical):
    object_type: Literal["contact"] = "contact"
    id: str
    source: SourceRef
    account_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None


class Product(_Canonical):
    object_type: Literal["product"] = "product"
    id: str
    source: SourceRef
    name: str
    active: bool = True
    sku: str | None = None


class Interval(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"


class Price(_Canonical):
    object_type: Literal["price"] = "price"
    id: str
    source: SourceRef
    product_id: str
    unit_amount: Money
    interval: Interval | None = None
    interval_count: int = 1


class SubscriptionStatus(StrEnum):
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    PAUSED = "paused"
    CANCELED = "canceled"
    INCOMPLETE = "incomplete"


class SubscriptionItem(_Canonical):
    price_id: str
    quantity: int = Field(ge=0)


class Subscription(_Canonical):
    object_type: Literal["subscription"] = "subscription"
    id: str
    source: SourceRef
    account_id: str
    status: SubscriptionStatus
    currency: CurrencyCode
    items: list[SubscriptionItem]
    current_period_start: datetime | None = None
    current_period_end: datetime | None = None
    cancel_at: datetime | None = None


class TaxLine(_Canonical):
    amount: Money
    rate_basis_points: int | None = Field(default=None, description="19 % = 1900")
    jurisdiction: str | None = None
    tax_code: str | None = None


class ServicePeriod(_Canonical):
    start: date
    end: date


class InvoiceLine(_Canonical):
    id: str
    description: str | None = None
    amount: Money = Field(description="line amount before tax")
    quantity: int | None = None
    product_id: str | None = None
    price_id: str | None = None
    period: ServicePeriod | None = None
    taxes: list[TaxLine] = Field(default_factory=list)


class InvoiceStatus(StrEnum):
    DRAFT = "draft"
    OPEN = "open"
    PAID = "paid"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"


class Invoice(_Canonical):
    object_type: Literal["invoice"] = "invoice"
    id: str
    source: SourceRef
    account_id: str
    number: str | None = None
    status: InvoiceStatus
    currency: CurrencyCode
    subtotal: Money
    tax: Money
    total: Money
    amount_paid: Money
    amount_due: Money
    issued_at: datetime | None = None
    due_date: date | None = None
    subscription_id: str | None = None
    lines: list[InvoiceLine]
    legal_entity_id: str | None = None


class CreditMemoLine(_Canonical):
    id: str
    description: str | None = None
    amount: Money
    invoice_line_id: str | None = None


class CreditMemo(_Canonical):
    object_type: Literal["credit_memo"] = "credit_memo"
    id: str
    source: SourceRef
    account_id: str
    invoice_id: str | None = None
    number: str | None = None
    currency: CurrencyCode
    total: Money
    reason: str | None = None
    issued_at: datetime
    lines: list[CreditMemoLine]


class PaymentStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PENDING = "pending"


class PaymentApplication(_Canonical):
    """The part of a payment applied to one invoice."""

    invoice_id: str
    amount: Money


class Payment(_Canonical):
    object_type: Literal["payment"] = "payment"
    id: str
    source: SourceRef
    account_id: str | None = None
    invoice_id: str | None = None
    amount: Money
    amount_refunded: Money
    status: PaymentStatus
    paid_at: datetime
    method: str | None = None
    failure_reason: str | None = None
    #: Invoices the payment settles, when it settles several (or part of one); empty means
    #: the whole amount goes to ``invoice_id``. Any remainder stays unapplied customer credit.
    applications: list[PaymentApplication] = Field(default_factory=list)


class Refund(_Canonical):
    object_type: Literal["refund"] = "refund"
    id: str
    source: SourceRef
    payment_id: str
    account_id: str | None = None
    invoice_id: str | None = None
    amount: Money
    reason: str | None = None
    refunded_at: datetime


class Payout(_Canonical):
    object_type: Literal["payout"] = "payout"
    id: str
    source: SourceRef
    amount: Money
    fees: Money | None = None
    arrival_date: date
    paid_at: datetime


class JournalLine(_Canonical):
    """One debit or credit of a journal entry, in the entry's transaction currency.

    ``functional_debit``/``functional_credit`` carry the same amount converted to the legal
    entity's functional currency (absent when both currencies are the same).
    """

    account: str
    debit: Money | None = None
    credit: Money | None = None
    memo: str | None = None
    source_document: str | None = None
    functional_debit: Money | None = None
    functional_credit: Money | None = None


class JournalEntry(_Canonical):
    object_type: Literal["journal_entry"] = "journal_entry"
    id: str
    legal_entity_id: str
    currency: CurrencyCode
    posting_date: date
    memo: str | None = None
    lines: list[JournalLine]
    #: ERP accounting period the entry is posted into (its id in the period calendar).
    posting_period: str | None = None
    functional_currency: CurrencyCode | None = None
    #: Units of functional currency per unit of transaction currency, as a decimal string.
    exchange_rate: str | None = None
    #: Date of the rate used (the newest rate on or before the posting date).
    rate_date: date | None = None
    #: Source documents (canonical ids) of a detailed entry; a summarised entry keeps its
    #: drill-down list in Syncline's store and names it with ``summary_key``.
    source_documents: list[str] = Field(default_factory=list)
    summary_key: str | None = None


class OpportunityStage(StrEnum):
    OPEN = "open"
    CLOSED_WON = "closed_won"
    CLOSED_LOST = "closed_lost"


class OrderLine(_Canonical):
    """One line of an opportunity, quote or sales order: a price times a quantity."""

    id: str
    product_id: str | None = None
    price_id: str | None = None
    description: str | None = None
    quantity: int = Field(ge=0)
    unit_amount: Money
    interval: Interval | None = None
    service_start: date | None = None
    service_end: date | None = None


class Opportunity(_Canonical):
    """A CRM deal (Salesforce Opportunity, HubSpot deal); closed-won starts onboarding."""

    object_type: Literal["opportunity"] = "opportunity"
    id: str
    source: SourceRef
    account_id: str
    name: str | None = None
    stage: OpportunityStage
    currency: CurrencyCode
    amount: Money | None = None
    close_date: date | None = None
    lines: list[OrderLine] = Field(default_factory=list)
    #: Free-form status Syncline writes back to the CRM (e.g. "active in billing and ERP").
    sync_status: str | None = None


class QuoteStatus(StrEnum):
    DRAFT = "draft"
    PRESENTED = "presented"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class Quote(_Canonical):
    object_type: Literal["quote"] = "quote"
    id: str
    source: SourceRef
    account_id: str
    opportunity_id: str | None = None
    status: QuoteStatus
    currency: CurrencyCode
    lines: list[OrderLine] = Field(default_factory=list)
    expires_on: date | None = None


class ContractStatus(StrEnum):
    DRAFT = "draft"
    ACTIVATED = "activated"
    EXPIRED = "expired"
    CANCELED = "canceled"


class Contract(_Canonical):
    object_type: Literal["contract"] = "contract"
    id: str
    source: SourceRef
    account_id: str
    opportunity_id: str | None = None
    status: ContractStatus
    start_date: date
    term_months: int = Field(ge=1)


class SalesOrder(_Canonical):
    """The ERP's order for a won deal (NetSuite sales order)."""

    object_type: Literal["sales_order"] = "sales_order"
    id: str
    source: SourceRef
    account_id: str
    opportunity_id: str | None = None
    currency: CurrencyCode
    order_date: date
    lines: list[OrderLine]
    legal_entity_id: str | None = None
    memo: str | None = None


class DisputeStatus(StrEnum):
    OPEN = "open"
    WON = "won"
    LOST = "lost"


class Dispute(_Canonical):
    """A chargeback on a payment."""

    object_type: Literal["dispute"] = "dispute"
    id: str
    source: SourceRef
    payment_id: str
    account_id: str | None = None
    amount: Money
    status: DisputeStatus
    reason: str | None = None
    opened_at: datetime


class EntitlementLevel(StrEnum):
    NONE = "none"
    BASIC = "basic"
    STANDARD = "standard"
    PREMIUM = "premium"


class Entitlement(_Canonical):
    """The support level an account is entitled to (Zendesk organization fields/tags)."""

    object_type: Literal["entitlement"] = "entitlement"
    id: str
    source: SourceRef
    account_id: str
    level: EntitlementLevel
    active: bool = True
    reason: str | None = None


class TicketPriority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class SupportTicket(_Canonical):
    """A ticket in the support desk, e.g. for a support-side exception."""

    object_type: Literal["support_ticket"] = "support_ticket"
    id: str
    source: SourceRef
    account_id: str | None = None
    subject: str
    description: str
    priority: TicketPriority = TicketPriority.NORMAL
    tags: list[str] = Field(default_factory=list)


class RecordChangeKind(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


class RecordChange(_Canonical):
    """A source system's notice that one of its records changed, without the record itself.

    Some vendors notify with ids and one changed property only (HubSpot webhooks); a consumer
    that needs the whole record reads it from the source (catch-up does).
    """

    object_type: Literal["record_change"] = "record_change"
    #: Canonical id of the changed record.
    id: str
    source: SourceRef
    #: Canonical type of the changed record ("opportunity", "account", ...).
    record_type: str
    change: RecordChangeKind
    property_name: str | None = None
    property_value: str | None = None
    occurred_at: datetime


CanonicalObject = (
    Account | Contact | Product | Price | Subscription | Invoice | CreditMemo | Payment | Refund
    | Payout | JournalEntry | Opportunity | Quote | Contract | SalesOrder | Dispute | Entitlement | SupportTicket
)
