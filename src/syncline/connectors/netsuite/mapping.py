"""Canonical objects → NetSuite REST record bodies.

Every record is addressed by its canonical id as NetSuite external id, and so is every
reference (``{"externalId": "account_3f2a..."}``), which lets the upsert stand alone: no
look-up of internal ids first. Money goes out as exact :class:`~decimal.Decimal` major units.

Invoice taxes travel as plain lines on a tax item (option ``tax_item_id``, default
``default_item_id``): one line per canonical :class:`~syncline.canonical.objects.TaxLine`, or
one line for the invoice's whole tax when the source gives no per-line detail. NetSuite's total
then equals the source system's total whatever tax engine the account runs; the account
should not compute tax on those items itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ValidationError

from syncline.canonical.money import Money
from syncline.canonical.objects import Account, CreditMemo, Invoice, Payment, PaymentStatus, Refund
from syncline.errors import DataQualityError

#: Canonical object type → (pydantic model, NetSuite record type).
RECORD_TYPES: dict[str, tuple[type[BaseModel], str]] = {
    "account": (Account, "customer"),
    "invoice": (Invoice, "invoice"),
    "payment": (Payment, "customerPayment"),
    "credit_memo": (CreditMemo, "creditMemo"),
    "refund": (Refund, "customerRefund"),
}

_EXTERNAL_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


@dataclass(frozen=True)
class MappingOptions:
    """Account-specific choices, from the connection's ``options``."""

    subsidiary_id: str = "1"
    default_item_id: str = "1"
    tax_item_id: str | None = None
    #: canonical legal entity id → NetSuite subsidiary id, for groups with several subsidiaries.
    subsidiaries: Mapping[str, str] = field(default_factory=dict)
    #: the bank account customer refunds are paid from, when the account has no default.
    refund_account_id: str | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> MappingOptions:
        """Read the mapping options of a connection (unknown keys are someone else's)."""
        return cls(
            subsidiary_id=str(options.get("subsidiary_id", "1")),
            default_item_id=str(options.get("default_item_id", "1")),
            tax_item_id=_optional_str(options.get("tax_item_id")),
            subsidiaries={str(k): str(v) for k, v in (options.get("subsidiaries") or {}).items()},
            refund_account_id=_optional_str(options.get("refund_account_id")),
        )

    def subsidiary(self, legal_entity_id: str | None) -> dict[str, str]:
        """Return the subsidiary reference for a legal entity (the default one if unmapped)."""
        return {"id": self.subsidiaries.get(legal_entity_id or "", self.subsidiary_id)}


def parse(object_type: str, payload: Mapping[str, Any]) -> BaseModel:
    """Validate ``payload`` as the canonical ``object_type``; DataQualityError names the field."""
    model, _ = RECORD_TYPES[object_type]
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(payload)"
        raise DataQualityError(
            f"{object_type} payload is invalid at {where}: {first['msg']}", field=where, errors=exc.error_count()
        ) from None


def external_id(value: str, *, field_name: str = "id") -> str:
    """Return ``value`` if it can be a NetSuite external id in a URL, else DataQualityError."""
    if not _EXTERNAL_ID.fullmatch(value):
        raise DataQualityError(
            f"{field_name} {value!r} cannot be a NetSuite external id (letters, digits, _ and - only)",
            field=field_name,
        )
    return value


def to_record(record: BaseModel, options: MappingOptions) -> tuple[str, dict[str, Any]]:
    """Return the NetSuite record type and request body for a canonical object."""
    if isinstance(record, Account):
        return "customer", customer_body(record, options)
    if isinstance(record, Invoice):
        return "invoice", invoice_body(record, options)
    if isinstance(record, Payment):
        return "customerPayment", customer_payment_body(record, options)
    if isinstance(record, CreditMemo):
        return "creditMemo", credit_memo_body(record, options)
    if isinstance(record, Refund):
        return "customerRefund", customer_refund_body(record, options)
    raise DataQualityError(f"NetSuite has no record for {type(record).__name__}", field="object_type")


def customer_body(account: Account, options: MappingOptions) -> dict[str, Any]:
    """Return the ``customer`` body of an account (a company, not an individual)."""
    body: dict[str, Any] = {
        "isPerson": False,
        "companyName": account.name or account.id,
        "subsidiary": options.subsidiary(account.legal_entity_id),
        "isInactive": account.deleted,
        "comments": _memo(account.source.system, account.source.external_id),
    }
    if account.email:
        body["email"] = account.email
    if account.phone:
        body["phone"] = account.phone
    if account.currency:
        body["currency"] = {"refName": account.currency}
    if account.address:
        address = account.address
        fields = {
            "addr1": address.line1, "addr2": address.line2, "city": address.city,
            "state": address.region, "zip": address.postal_code,
        }
        book: dict[str, Any] = {key: value for key, value in fields.items() if value}
        if address.country:
            book["country"] = {"id": address.country}
        body["addressBook"] = {
            "items": [{"defaultBilling": True, "defaultShipping": True, "addressBookAddress": book}]
        }
    return body


def invoice_body(invoice: Invoice, options: MappingOptions) -> dict[str, Any]:
    """Return the ``invoice`` body: customer, dates, one line per source line plus tax lines."""
    if invoice.issued_at is None:
        raise DataQualityError(f"invoice {invoice.id} has no issued_at, so no tranDate", field="issued_at")
    items: list[dict[str, Any]] = []
    taxes: list[dict[str, Any]] = []
    tax_item = {"id": options.tax_item_id or options.default_item_id}
    for line in invoice.lines:
        items.append({
            "item": {"id": options.default_item_id},
            "description": line.description or line.id,
            "quantity": line.quantity if line.quantity is not None else 1,
            "amount": _amount(line.amount, invoice.currency, f"lines.{line.id}.amount"),
        })
        for tax in line.taxes:
            label = " ".join(part for part in ("Tax", tax.jurisdiction, tax.tax_code) if part)
            taxes.append({"item": tax_item, "description": label, "quantity": 1,
                          "amount": _amount(tax.amount, invoice.currency, f"lines.{line.id}.taxes")})
    if not taxes and invoice.tax.amount:
        taxes.append({"item": tax_item, "description": "Tax", "quantity": 1,
                      "amount": _amount(invoice.tax, invoice.currency, "tax")})
    body: dict[str, Any] = {
        "entity": {"externalId": external_id(invoice.account_id, field_name="account_id")},
        "tranDate": _day(invoice.issued_at),
        "currency": {"refName": invoice.currency},
        "subsidiary": options.subsidiary(invoice.legal_entity_id),
        "memo": _memo(invoice.source.system, invoice.source.external_id, invoice.number),
        "item": {"items": items + taxes},
    }
    if invoice.due_date is not None:
        body["dueDate"] = invoice.due_date.isoformat()
    return body


def customer_payment_body(payment: Payment, options: MappingOptions) -> dict[str, Any]:
    """Return the ``customerPayment`` body, applied to its invoice when it has one."""
    if payment.status is not PaymentStatus.SUCCEEDED:
        raise DataQualityError(
            f"payment {payment.id} is {payment.status.value}; only succeeded payments post", field="status"
        )
    if payment.account_id is None:
        raise DataQualityError(f"payment {payment.id} has no account_id", field="account_id")
    amount = _amount(payment.amount, payment.amount.currency, "amount")
    body: dict[str, Any] = {
        "customer": {"externalId": external_id(payment.account_id, field_name="account_id")},
        "tranDate": _day(payment.paid_at),
        "currency": {"refName": payment.amount.currency},
        "subsidiary": options.subsidiary(None),
        "payment": amount,
        "memo": _memo(payment.source.system, payment.source.external_id, payment.method),
    }
    if payment.invoice_id is not None:
        doc = {"externalId": external_id(payment.invoice_id, field_name="invoice_id")}
        body["apply"] = {"items": [{"doc": doc, "apply": True, "amount": amount}]}
    return body


def credit_memo_body(memo: CreditMemo, options: MappingOptions) -> dict[str, Any]:
    """Return the ``creditMemo`` body, created from its invoice when it has one."""
    lines = [
        {"item": {"id": options.default_item_id}, "description": line.description or line.id, "quantity": 1,
         "amount": _amount(line.amount, memo.currency, f"lines.{line.id}.amount")}
        for line in memo.lines
    ] or [
        {"item": {"id": options.default_item_id}, "description": memo.reason or "Credit", "quantity": 1,
         "amount": _amount(memo.total, memo.currency, "total")}
    ]
    body: dict[str, Any] = {
        "entity": {"externalId": external_id(memo.account_id, field_name="account_id")},
        "tranDate": _day(memo.issued_at),
        "currency": {"refName": memo.currency},
        "subsidiary": options.subsidiary(None),
        "memo": _memo(memo.source.system, memo.source.external_id, memo.reason),
        "item": {"items": lines},
    }
    if memo.invoice_id is not None:
        body["createdFrom"] = {"externalId": external_id(memo.invoice_id, field_name="invoice_id")}
    return body


def customer_refund_body(refund: Refund, options: MappingOptions) -> dict[str, Any]:
    """Return the ``customerRefund`` body, paying back against the customer payment refunded."""
    if refund.account_id is None:
        raise DataQualityError(f"refund {refund.id} has no account_id", field="account_id")
    amount = _amount(refund.amount, refund.amount.currency, "amount")
    body: dict[str, Any] = {
        "customer": {"externalId": external_id(refund.account_id, field_name="account_id")},
        "tranDate": _day(refund.refunded_at),
        "currency": {"refName": refund.amount.currency},
        "subsidiary": options.subsidiary(None),
        "memo": _memo(refund.source.system, refund.source.external_id, refund.reason),
        "apply": {"items": [{
            "doc": {"externalId": external_id(refund.payment_id, field_name="payment_id")},
            "apply": True,
            "amount": amount,
        }]},
    }
    if options.refund_account_id:
        body["account"] = {"id": options.refund_account_id}
    return body


def _amount(money: Money, currency: str, where: str) -> Decimal:
    """Return the exact major-unit amount, refusing a line in another currency than its document."""
    if money.currency != currency:
        raise DataQualityError(f"{where} is in {money.currency}, the document in {currency}", field=where)
    return money.to_decimal()


def _day(moment: datetime | date) -> str:
    """Return the ISO calendar date NetSuite expects in ``tranDate`` (UTC day for datetimes)."""
    if isinstance(moment, datetime):
        moment = (moment.astimezone(UTC) if moment.tzinfo else moment).date()
    return moment.isoformat()


def _memo(system: str, source_id: str, extra: str | None = None) -> str:
    """Return the memo that lets an accountant find the source record: ``stripe in_123``."""
    memo = f"{system} {source_id}" + (f" ({extra})" if extra else "")
    # NetSuite's memo field holds 999 characters.
    return memo[:999]


def _optional_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)
