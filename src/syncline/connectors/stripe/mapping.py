"""Map Stripe objects (API version 2024-06-20, plus the newer ``taxes``/``pricing`` line shapes) to
canonical objects.

Stripe amounts are already integer minor units in every currency (500 JPY is ``500``, 1.500 KWD
is ``1500``), so they are copied, never scaled. Currencies arrive lower-case and leave upper-case.
Every id becomes ``canonical_id(connection, <canonical type>, <stripe id>)``; references to other
objects (an invoice's customer) are mapped the same way, so they meet without a look-up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from syncline.canonical import (
    Account,
    Address,
    CreditMemo,
    CreditMemoLine,
    Invoice,
    InvoiceLine,
    InvoiceStatus,
    Money,
    Payment,
    PaymentStatus,
    Payout,
    Refund,
    ServicePeriod,
    SourceRef,
    TaxLine,
    canonical_id,
)
from syncline.canonical.objects import (
    Dispute,
    DisputeStatus,
    Price,
    Product,
    Subscription,
    SubscriptionItem,
    SubscriptionStatus,
)
from syncline.errors import DataQualityError

_CURRENCY = re.compile(r"^[A-Za-z]{3}$")
_Model = TypeVar("_Model", bound=BaseModel)


class Fields:
    """Read one Stripe object, raising DataQualityError that names the missing or bad field."""

    def __init__(self, obj: Any, label: str, prefix: str = "") -> None:
        if not isinstance(obj, Mapping):
            raise DataQualityError(
                f"{label}: {prefix.rstrip('.') or 'object'} is not a JSON object",
                code="field_invalid", field=prefix.rstrip(".") or None,
            )
        self.obj: Mapping[str, Any] = obj
        self.label = label
        self.prefix = prefix

    def path(self, key: str) -> str:
        """Return the dotted path of ``key`` from the event's object."""
        return f"{self.prefix}{key}"

    def _missing(self, key: str) -> DataQualityError:
        return DataQualityError(f"{self.label}: {self.path(key)} is missing", code="field_missing",
                                field=self.path(key))

    def _invalid(self, key: str, why: str) -> DataQualityError:
        return DataQualityError(f"{self.label}: {self.path(key)} {why}", code="field_invalid",
                                field=self.path(key))

    def raw(self, key: str) -> Any:
        """Return the value of ``key`` as sent, or None."""
        return self.obj.get(key)

    def string(self, key: str) -> str:
        """Return the required non-empty string ``key``."""
        value = self.obj.get(key)
        if value is None or value == "":
            raise self._missing(key)
        if not isinstance(value, str):
            raise self._invalid(key, f"must be a string, got {type(value).__name__}")
        return value

    def opt_string(self, key: str) -> str | None:
        """Return the string ``key`` or None when absent or empty."""
        value = self.obj.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self._invalid(key, f"must be a string, got {type(value).__name__}")
        return value

    def integer(self, key: str) -> int:
        """Return the required integer ``key`` (an amount in minor units or a unix time)."""
        value = self.opt_integer(key)
        if value is None:
            raise self._missing(key)
        return value

    def opt_integer(self, key: str) -> int | None:
        """Return the integer ``key`` or None; floats and booleans are refused."""
        value = self.obj.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._invalid(key, f"must be an integer, got {type(value).__name__} {value!r}")
        return value

    def timestamp(self, key: str) -> datetime:
        """Return the required unix-time ``key`` as an aware UTC datetime."""
        return datetime.fromtimestamp(self.integer(key), UTC)

    def opt_timestamp(self, key: str) -> datetime | None:
        """Return the unix-time ``key`` as an aware UTC datetime, or None."""
        value = self.opt_integer(key)
        return None if value is None else datetime.fromtimestamp(value, UTC)

    def opt_date(self, key: str) -> date | None:
        """Return the unix-time ``key`` as its UTC calendar date, or None."""
        moment = self.opt_timestamp(key)
        return None if moment is None else moment.date()

    def currency(self, key: str = "currency") -> str:
        """Return the required ISO 4217 code ``key``, upper-cased."""
        value = self.string(key)
        if not _CURRENCY.match(value):
            raise self._invalid(key, f"is not a 3-letter ISO 4217 code: {value!r}")
        return value.upper()

    def opt_currency(self, key: str = "currency") -> str | None:
        """Return the ISO 4217 code ``key`` upper-cased, or None."""
        return None if self.obj.get(key) in (None, "") else self.currency(key)

    def ref(self, key: str) -> str | None:
        """Return the id of an expandable field: the string itself or the expanded object's id."""
        value = self.obj.get(key)
        if value is None or value == "":
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, Mapping) and isinstance(value.get("id"), str):
            return str(value["id"])
        raise self._invalid(key, "must be an id or an expanded object with an id")

    def child(self, key: str) -> Fields:
        """Return the required nested object ``key``."""
        value = self.obj.get(key)
        if value is None:
            raise self._missing(key)
        return Fields(value, self.label, f"{self.path(key)}.")

    def opt_child(self, key: str) -> Fields | None:
        """Return the nested object ``key`` or None."""
        value = self.obj.get(key)
        return None if value is None else Fields(value, self.label, f"{self.path(key)}.")

    def items(self, key: str, *, required: bool = True) -> list[Fields]:
        """Return the entries of a Stripe list object (``{"object": "list", "data": [...]}``) or array."""
        value = self.obj.get(key)
        if value is None:
            if required:
                raise self._missing(key)
            return []
        path = self.path(key)
        if isinstance(value, Mapping):
            value = value.get("data")
            path = f"{path}.data"
            if value is None:
                raise DataQualityError(f"{self.label}: {path} is missing", code="field_missing", field=path)
        if not isinstance(value, list):
            raise DataQualityError(f"{self.label}: {path} must be a list", code="field_invalid", field=path)
        return [Fields(item, self.label, f"{path}[{index}].") for index, item in enumerate(value)]


def build(model: type[_Model], label: str, **values: Any) -> _Model:
    """Construct ``model``, turning a validation failure into a DataQualityError naming the field."""
    try:
        return model(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or model.__name__
        message = f"{label}: {where}: {first['msg']}"
        raise DataQualityError(message, code="field_invalid", field=where) from None


def label_of(stripe_object: Mapping[str, Any]) -> str:
    """Return ``"stripe invoice in_123"`` for messages."""
    return f"stripe {stripe_object.get('object') or 'object'} {stripe_object.get('id') or '(no id)'}"


def _source(connection: str, object_type: str, external_id: str) -> SourceRef:
    return SourceRef(system=connection, object_type=object_type, external_id=external_id)


def own_id(connection: str, object_type: str, stripe_id: str, stripe_object: Mapping[str, Any]) -> str:
    """Return the canonical id of a Stripe object: the one Syncline wrote, if Syncline created it.

    Objects the connector creates carry ``metadata[syncline_id]`` (see :mod:`.outbound`); their
    webhooks must decode to that identity, not to a new one minted from the Stripe id, or the
    echo of a CRM account would reach the ERP as a second customer. Only a value shaped like a
    canonical id of the same type is taken.
    """
    metadata = stripe_object.get("metadata")
    if isinstance(metadata, Mapping):
        own = metadata.get("syncline_id")
        if isinstance(own, str) and own.startswith(f"{object_type}_") and len(own) <= 128:
            return own
    return canonical_id(connection, object_type, stripe_id)


def _opt_id(connection: str, object_type: str, external_id: str | None) -> str | None:
    return None if external_id is None else canonical_id(connection, object_type, external_id)


# -- customers -----------------------------------------------------------------------------------

def to_account(connection: str, customer: Mapping[str, Any], *, deleted: bool = False) -> Account:
    """Map a Stripe customer to an Account."""
    label = label_of(customer)
    f = Fields(customer, label)
    stripe_id = f.string("id")
    address = None
    if (raw := f.opt_child("address")) is not None and any(raw.obj.values()):
        country = raw.opt_string("country")
        address = build(
            Address, label, line1=raw.opt_string("line1"), line2=raw.opt_string("line2"),
            city=raw.opt_string("city"), region=raw.opt_string("state"),
            postal_code=raw.opt_string("postal_code"), country=country.upper() if country else None,
        )
    tax_ids = [entry.string("value") for entry in f.items("tax_ids", required=False)]
    return build(
        Account, label,
        id=own_id(connection, "account", stripe_id, customer),
        source=_source(connection, "customer", stripe_id),
        name=f.opt_string("name"), email=f.opt_string("email"), phone=f.opt_string("phone"),
        currency=f.opt_currency(), address=address,
        # "reverse" (reverse charge) also means the seller charges no tax
        tax_exempt=f.opt_string("tax_exempt") in ("exempt", "reverse"),
        tax_ids=tax_ids, deleted=deleted or customer.get("deleted") is True,
    )


# -- invoices ------------------------------------------------------------------------------------

def _basis_points(rate: Fields) -> int | None:
    percentage = rate.raw("percentage")
    if percentage is None or isinstance(percentage, bool):
        return None
    try:
        # percentages are JSON numbers (19, 7.25); str() keeps the digits Stripe sent
        return int((Decimal(str(percentage)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    except InvalidOperation:
        raise DataQualityError(f"{rate.label}: {rate.path('percentage')} is not a number",
                               code="field_invalid", field=rate.path("percentage")) from None


def _line_taxes(line: Fields, currency: str) -> tuple[list[TaxLine], int]:
    """Return the line's tax lines and the part of its amount that is inclusive tax."""
    taxes: list[TaxLine] = []
    inclusive = 0
    # tax_amounts name their rate by id; the line's own tax_rates list carries the full objects
    known_rates = {rate.string("id"): rate for rate in line.items("tax_rates", required=False)}
    for entry in line.items("tax_amounts", required=False):  # API 2024-06-20
        amount = entry.integer("amount")
        rate = entry.raw("tax_rate")
        details = entry.child("tax_rate") if isinstance(rate, Mapping) else known_rates.get(str(rate))
        taxes.append(build(
            TaxLine, line.label, amount=Money(amount=amount, currency=currency),
            rate_basis_points=_basis_points(details) if details else None,
            jurisdiction=(
                (details.opt_string("jurisdiction") or details.opt_string("country")) if details else None
            ),
        ))
        if entry.raw("inclusive") is True:
            inclusive += amount
    for entry in line.items("taxes", required=False):  # API 2025-03-31 and later
        amount = entry.integer("amount")
        taxes.append(build(TaxLine, line.label, amount=Money(amount=amount, currency=currency)))
        if entry.raw("tax_behavior") == "inclusive":
            inclusive += amount
    return taxes, inclusive


def _line_price(line: Fields) -> tuple[str | None, str | None]:
    """Return the (price id, product id) of a line, from ``price`` or the newer ``pricing``."""
    price = line.raw("price")
    if isinstance(price, str):
        return price, None
    if isinstance(price, Mapping):
        details = line.child("price")
        return details.opt_string("id"), details.ref("product")
    pricing = line.raw("pricing")
    if isinstance(pricing, Mapping) and isinstance(pricing.get("price_details"), Mapping):
        details = line.child("pricing").child("price_details")
        return details.ref("price"), details.ref("product")
    return None, None


def _invoice_line(connection: str, line: Fields, currency: str) -> InvoiceLine:
    stripe_id = line.string("id")
    taxes, inclusive = _line_taxes(line, currency)
    gross = line.integer("amount")
    net = line.opt_integer("amount_excluding_tax")
    if net is None:
        net = gross - inclusive
    period = None
    if (raw := line.opt_child("period")) is not None:
        start, end = raw.opt_date("start"), raw.opt_date("end")
        if start is not None and end is not None:
            period = build(ServicePeriod, line.label, start=start, end=end)
    price_id, product_id = _line_price(line)
    return build(
        InvoiceLine, line.label,
        id=canonical_id(connection, "invoice_line", stripe_id),
        description=line.opt_string("description"),
        amount=Money(amount=net, currency=currency),
        quantity=line.opt_integer("quantity"),
        product_id=_opt_id(connection, "product", product_id),
        price_id=_opt_id(connection, "price", price_id),
        period=period, taxes=taxes,
    )


def _invoice_tax(f: Fields, subtotal: int, total: int) -> int:
    tax = f.opt_integer("tax")
    if tax is not None:
        return tax
    if isinstance(f.raw("total_taxes"), list):
        return sum(entry.integer("amount") for entry in f.items("total_taxes"))
    if (excluding := f.opt_integer("total_excluding_tax")) is not None:
        return total - excluding
    # no tax field at all: what total adds to subtotal is tax (a discount would make it negative)
    return max(total - subtotal, 0)


def _subscription_ref(f: Fields) -> str | None:
    if (subscription := f.ref("subscription")) is not None:
        return subscription
    parent = f.raw("parent")
    if isinstance(parent, Mapping) and isinstance(parent.get("subscription_details"), Mapping):
        return f.child("parent").child("subscription_details").ref("subscription")
    return None


def to_invoice(connection: str, invoice: Mapping[str, Any]) -> Invoice:
    """Map a Stripe invoice to an Invoice."""
    label = label_of(invoice)
    f = Fields(invoice, label)
    stripe_id = f.string("id")
    currency = f.currency()
    status = f.string("status")
    if status not in InvoiceStatus.__members__.values():
        raise DataQualityError(f"{label}: status {status!r} is not an invoice status", code="field_invalid",
                               field="status")
    subtotal, total = f.integer("subtotal"), f.integer("total")
    customer = f.ref("customer")
    if customer is None:
        raise DataQualityError(f"{label}: customer is missing", code="field_missing", field="customer")
    transitions = f.opt_child("status_transitions")
    issued_at = (
        (transitions.opt_timestamp("finalized_at") if transitions else None)
        or f.opt_timestamp("effective_at") or f.timestamp("created")
    )

    def money(amount: int) -> Money:
        return Money(amount=amount, currency=currency)

    return build(
        Invoice, label,
        id=canonical_id(connection, "invoice", stripe_id),
        source=_source(connection, "invoice", stripe_id),
        account_id=canonical_id(connection, "account", customer),
        number=f.opt_string("number"),
        status=InvoiceStatus(status),
        currency=currency,
        subtotal=money(subtotal),
        tax=money(_invoice_tax(f, subtotal, total)),
        total=money(total),
        amount_paid=money(f.integer("amount_paid")),
        amount_due=money(f.integer("amount_due")),
        issued_at=issued_at,
        due_date=f.opt_date("due_date"),
        subscription_id=_opt_id(connection, "subscription", _subscription_ref(f)),
        lines=[_invoice_line(connection, line, currency) for line in f.items("lines")],
    )


# -- charges and refunds -------------------------------------------------------------------------

_PAYMENT_STATUS = {"succeeded": PaymentStatus.SUCCEEDED, "failed": PaymentStatus.FAILED,
                   "pending": PaymentStatus.PENDING}


def to_payment(connection: str, charge: Mapping[str, Any]) -> Payment:
    """Map a Stripe charge to a Payment."""
    label = label_of(charge)
    f = Fields(charge, label)
    stripe_id = f.string("id")
    currency = f.currency()
    status = f.string("status")
    if status not in _PAYMENT_STATUS:
        raise DataQualityError(f"{label}: status {status!r} is not a charge status", code="field_invalid",
                               field="status")
    details = f.opt_child("payment_method_details")
    return build(
        Payment, label,
        id=canonical_id(connection, "payment", stripe_id),
        source=_source(connection, "charge", stripe_id),
        account_id=_opt_id(connection, "account", f.ref("customer")),
        invoice_id=_opt_id(connection, "invoice", f.ref("invoice")),
        amount=Money(amount=f.integer("amount"), currency=currency),
        amount_refunded=Money(amount=f.opt_integer("amount_refunded") or 0, currency=currency),
        status=_PAYMENT_STATUS[status],
        paid_at=f.timestamp("created"),
        method=details.opt_string("type") if details else None,
        failure_reason=f.opt_string("failure_message") or f.opt_string("failure_code"),
    )


def to_refunds(
    connection: str, charge: Mapping[str, Any], previous: Mapping[str, Any] | None = None
) -> list[Refund]:
    """Map the refunds of a refunded Stripe charge to Refunds.

    One Refund per succeeded or pending entry of ``charge.refunds.data``. Since API version
    2022-11-15 Stripe leaves ``refunds`` out of charges unless expanded; then a single Refund
    stands for the event, with external id ``"{charge id}:refunded:{amount_refunded}"`` (the
    cumulative amount makes it unique per refund) and, as amount, what the event added to
    ``amount_refunded`` (from ``previous_attributes``), or all of ``amount_refunded`` without it.
    """
    label = label_of(charge)
    f = Fields(charge, label)
    charge_id = f.string("id")
    currency = f.currency()
    payment_id = canonical_id(connection, "payment", charge_id)
    account_id = _opt_id(connection, "account", f.ref("customer"))
    invoice_id = _opt_id(connection, "invoice", f.ref("invoice"))
    if charge.get("refunds") is not None:
        refunds = []
        for entry in f.items("refunds"):
            if entry.opt_string("status") in ("failed", "canceled"):
                continue
            refund_id = entry.string("id")
            refunds.append(build(
                Refund, label,
                id=canonical_id(connection, "refund", refund_id),
                source=_source(connection, "refund", refund_id),
                payment_id=payment_id, account_id=account_id, invoice_id=invoice_id,
                amount=Money(amount=entry.integer("amount"), currency=entry.currency()),
                reason=entry.opt_string("reason"),
                refunded_at=entry.timestamp("created"),
            ))
        return refunds
    refunded = f.integer("amount_refunded")
    before = previous.get("amount_refunded") if previous else None
    amount = refunded - before if isinstance(before, int) and not isinstance(before, bool) else refunded
    external_id = f"{charge_id}:refunded:{refunded}"
    return [build(
        Refund, label,
        id=canonical_id(connection, "refund", external_id),
        source=_source(connection, "charge", external_id),
        payment_id=payment_id, account_id=account_id, invoice_id=invoice_id,
        amount=Money(amount=amount, currency=currency),
        refunded_at=f.timestamp("created"),
    )]


# -- credit notes and payouts --------------------------------------------------------------------

def to_credit_memo(connection: str, credit_note: Mapping[str, Any]) -> CreditMemo:
    """Map a Stripe credit note to a CreditMemo."""
    label = label_of(credit_note)
    f = Fields(credit_note, label)
    stripe_id = f.string("id")
    currency = f.currency()
    customer = f.ref("customer")
    if customer is None:
        raise DataQualityError(f"{label}: customer is missing", code="field_missing", field="customer")
    total = f.opt_integer("total")
    lines = [
        build(
            CreditMemoLine, label,
            id=canonical_id(connection, "credit_memo_line", line.string("id")),
            description=line.opt_string("description"),
            amount=Money(amount=line.integer("amount"), currency=currency),
            invoice_line_id=_opt_id(connection, "invoice_line", line.ref("invoice_line_item")),
        )
        for line in f.items("lines")
    ]
    return build(
        CreditMemo, label,
        id=canonical_id(connection, "credit_memo", stripe_id),
        source=_source(connection, "credit_note", stripe_id),
        account_id=canonical_id(connection, "account", customer),
        invoice_id=_opt_id(connection, "invoice", f.ref("invoice")),
        number=f.opt_string("number"),
        currency=currency,
        total=Money(amount=total if total is not None else f.integer("amount"), currency=currency),
        reason=f.opt_string("reason"),
        issued_at=f.opt_timestamp("effective_at") or f.timestamp("created"),
        lines=lines,
    )


def to_payout(connection: str, payout: Mapping[str, Any], *, paid_at: datetime) -> Payout:
    """Map a Stripe payout to a Payout; ``paid_at`` is when Stripe reported it paid."""
    label = label_of(payout)
    f = Fields(payout, label)
    stripe_id = f.string("id")
    arrival = f.opt_date("arrival_date")
    if arrival is None:
        raise DataQualityError(f"{label}: arrival_date is missing", code="field_missing",
                               field="arrival_date")
    return build(
        Payout, label,
        id=canonical_id(connection, "payout", stripe_id),
        source=_source(connection, "payout", stripe_id),
        amount=Money(amount=f.integer("amount"), currency=f.currency()),
        arrival_date=arrival,
        paid_at=paid_at,
    )


# -- catalogue -----------------------------------------------------------------------------------

def to_product(connection: str, product: Mapping[str, Any]) -> Product:
    """Map a Stripe product to a Product (``metadata.sku``, when set, is its SKU)."""
    label = label_of(product)
    f = Fields(product, label)
    stripe_id = f.string("id")
    metadata = f.raw("metadata")
    sku = metadata.get("sku") if isinstance(metadata, Mapping) else None
    return build(
        Product, label,
        id=own_id(connection, "product", stripe_id, product),
        source=_source(connection, "product", stripe_id),
        name=f.string("name"), active=f.raw("active") is not False,
        sku=sku if isinstance(sku, str) and sku else None,
    )


def to_price(connection: str, price: Mapping[str, Any]) -> Price:
    """Map a Stripe per-unit price to a Price; tiered and customer-chosen prices have no unit amount."""
    label = label_of(price)
    f = Fields(price, label)
    stripe_id = f.string("id")
    product = f.ref("product")
    if product is None:
        raise DataQualityError(f"{label}: product is missing", code="field_missing", field="product")
    amount = f.opt_integer("unit_amount")
    if amount is None:
        raise DataQualityError(
            f"{label}: unit_amount is missing (billing_scheme {f.raw('billing_scheme')!r}); only per-unit "
            "prices map to a canonical Price", code="field_missing", field="unit_amount",
        )
    recurring = f.opt_child("recurring")
    interval = recurring.opt_string("interval") if recurring else None
    return build(
        Price, label,
        id=own_id(connection, "price", stripe_id, price),
        source=_source(connection, "price", stripe_id),
        product_id=canonical_id(connection, "product", product),
        unit_amount=Money(amount=amount, currency=f.currency()),
        interval=interval,
        interval_count=(recurring.opt_integer("interval_count") or 1) if recurring else 1,
    )


# -- subscriptions ---------------------------------------------------------------------------------

_SUBSCRIPTION_STATUS = {
    "trialing": SubscriptionStatus.TRIALING, "active": SubscriptionStatus.ACTIVE,
    "past_due": SubscriptionStatus.PAST_DUE, "unpaid": SubscriptionStatus.PAST_DUE,
    "paused": SubscriptionStatus.PAUSED, "canceled": SubscriptionStatus.CANCELED,
    "incomplete": SubscriptionStatus.INCOMPLETE,
    # the first payment never succeeded: the subscription is over without having started
    "incomplete_expired": SubscriptionStatus.CANCELED,
}


def to_subscription(connection: str, subscription: Mapping[str, Any]) -> Subscription:
    """Map a Stripe subscription to a Subscription.

    The billing period sits on the subscription up to API 2025-03-31 and on each item after; the
    first item's period is used when the subscription has none.
    """
    label = label_of(subscription)
    f = Fields(subscription, label)
    stripe_id = f.string("id")
    status = f.string("status")
    if status not in _SUBSCRIPTION_STATUS:
        raise DataQualityError(f"{label}: status {status!r} is not a subscription status", code="field_invalid",
                               field="status")
    customer = f.ref("customer")
    if customer is None:
        raise DataQualityError(f"{label}: customer is missing", code="field_missing", field="customer")
    entries = f.items("items")
    items = []
    for entry in entries:
        price = entry.ref("price") or entry.ref("plan")
        if price is None:
            raise DataQualityError(f"{label}: {entry.path('price')} is missing", code="field_missing",
                                   field=entry.path("price"))
        quantity = entry.opt_integer("quantity")
        items.append(build(SubscriptionItem, label, price_id=canonical_id(connection, "price", price),
                           quantity=1 if quantity is None else quantity))
    first = entries[0] if entries else None
    start = f.opt_timestamp("current_period_start") or (first.opt_timestamp("current_period_start") if first else None)
    end = f.opt_timestamp("current_period_end") or (first.opt_timestamp("current_period_end") if first else None)
    return build(
        Subscription, label,
        id=own_id(connection, "subscription", stripe_id, subscription),
        source=_source(connection, "subscription", stripe_id),
        account_id=canonical_id(connection, "account", customer),
        status=_SUBSCRIPTION_STATUS[status], currency=f.currency(), items=items,
        current_period_start=start, current_period_end=end, cancel_at=f.opt_timestamp("cancel_at"),
    )


# -- disputes --------------------------------------------------------------------------------------

#: Stripe dispute statuses; ``warning_closed`` ends an inquiry that never became a chargeback, so
#: the merchant keeps the money, which is a win.
_DISPUTE_STATUS = {
    "warning_needs_response": DisputeStatus.OPEN, "warning_under_review": DisputeStatus.OPEN,
    "needs_response": DisputeStatus.OPEN, "under_review": DisputeStatus.OPEN,
    "warning_closed": DisputeStatus.WON, "won": DisputeStatus.WON, "lost": DisputeStatus.LOST,
}


def to_dispute(connection: str, dispute: Mapping[str, Any]) -> Dispute:
    """Map a Stripe dispute (chargeback or inquiry) to a Dispute on the charge's payment."""
    label = label_of(dispute)
    f = Fields(dispute, label)
    stripe_id = f.string("id")
    status = f.string("status")
    if status not in _DISPUTE_STATUS:
        raise DataQualityError(f"{label}: status {status!r} is not a dispute status", code="field_invalid",
                               field="status")
    charge = f.ref("charge")
    if charge is None:
        raise DataQualityError(f"{label}: charge is missing", code="field_missing", field="charge")
    return build(
        Dispute, label,
        id=canonical_id(connection, "dispute", stripe_id),
        source=_source(connection, "dispute", stripe_id),
        payment_id=canonical_id(connection, "payment", charge),
        amount=Money(amount=f.integer("amount"), currency=f.currency()),
        status=_DISPUTE_STATUS[status], reason=f.opt_string("reason"), opened_at=f.timestamp("created"),
    )
