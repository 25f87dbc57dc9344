"""Canonical objects → NetSuite REST record bodies.

Every record is addressed by its canonical id as NetSuite external id, and so is every
reference to another synced record (``{"externalId": "account_3f2a..."}``), which lets the
upsert stand alone: no look-up of internal ids first. Account-specific lists (subsidiaries,
currencies, payment terms, items, general-ledger accounts) are referenced by internal id,
from the connection's options (:class:`MappingOptions`). Money goes out as exact
:class:`~decimal.Decimal` major units.

Invoice taxes travel as plain lines on a tax item (option ``tax_item_id``, default
``default_item_id``): one line per canonical :class:`~syncline.canonical.objects.TaxLine`, or
one line for the invoice's whole tax when the source gives no per-line detail. NetSuite's total
then equals the source system's total whatever tax engine the account runs; the account
should not compute tax on those items itself.

An update by external id appends the lines of a non-keyed sublist to the ones already there
(NetSuite's "Updating a Sublist"); every write therefore names the sublists it sends whole in
``?replace=``, so a second delivery of the same object leaves one set of lines.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, ValidationError

from syncline.canonical.money import Money
from syncline.canonical.objects import (
    Account,
    CreditMemo,
    Invoice,
    JournalEntry,
    Payment,
    PaymentStatus,
    Payout,
    Refund,
    SalesOrder,
)
from syncline.errors import AuthConfigError, ConfigError, DataQualityError

#: Canonical object type → (pydantic model, NetSuite record type).
RECORD_TYPES: dict[str, tuple[type[BaseModel], str]] = {
    "account": (Account, "customer"),
    "invoice": (Invoice, "invoice"),
    "payment": (Payment, "customerPayment"),
    "credit_memo": (CreditMemo, "creditMemo"),
    "refund": (Refund, "customerRefund"),
    "sales_order": (SalesOrder, "salesOrder"),
    "payout": (Payout, "deposit"),
    "journal_entry": (JournalEntry, "journalEntry"),
}

#: Where a journal line's source reference goes: its own custom column, or the line memo.
LINE_SOURCE_MEMO = "memo"
DEFAULT_LINE_SOURCE_FIELD = LINE_SOURCE_MEMO

_EXTERNAL_ID = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
_CUSTOM_COLUMN = re.compile(r"^custcol[a-z0-9_]+$")


@dataclass(frozen=True)
class RecordWrite:
    """One upsert to send: record type, body, and what the posting period depends on."""

    record_type: str
    body: dict[str, Any]
    #: Sublists the body carries whole (``?replace=``): an update must not append to them.
    replace: tuple[str, ...] = ()
    #: The transaction date, for records that post to the general ledger (None otherwise).
    tran_date: date | None = None
    #: The posting period the payload itself names (a journal entry's ``posting_period``).
    posting_period: str | None = None


@dataclass(frozen=True)
class MappingOptions:
    """Account-specific choices, from the connection's ``options``.

    ``subsidiaries`` maps canonical legal entity ids to subsidiary internal ids,
    ``currencies`` ISO 4217 codes to currency internal ids, ``payment_terms`` net days
    (``30``) to term internal ids, ``items`` canonical product ids to item internal ids and
    ``accounts`` the ledger's account codes to general-ledger account internal ids.
    ``posting_periods`` (``"2024-03"`` → period internal id) fixes periods by month; other
    months are looked up in the account's calendar unless ``resolve_posting_periods`` is off;
    the calendar is cached ``period_cache_seconds`` and its dates are read in
    ``suiteql_date_format`` (the integration user's date preference; ISO dates always work).
    """

    subsidiary_id: str = "1"
    default_item_id: str = "1"
    tax_item_id: str | None = None
    subsidiaries: Mapping[str, str] = field(default_factory=dict)
    #: the bank account customer refunds are paid from, when the account has no default.
    refund_account_id: str | None = None
    currencies: Mapping[str, str] = field(default_factory=dict)
    payment_terms: Mapping[int, str] = field(default_factory=dict)
    #: net days of the terms a new customer (and its sales orders) gets, a key of payment_terms.
    default_payment_terms: int | None = None
    items: Mapping[str, str] = field(default_factory=dict)
    accounts: Mapping[str, str] = field(default_factory=dict)
    #: the ledger's account codes are NetSuite internal ids already (no ``accounts`` mapping).
    accounts_are_internal_ids: bool = False
    #: the bank account payouts land in.
    deposit_account_id: str | None = None
    #: the account payouts are drawn from (the processor's clearing account, e.g. "Stripe").
    payout_clearing_account_id: str | None = None
    #: the expense account of processor fees taken from a payout.
    payout_fee_account_id: str | None = None
    #: ``memo`` or a custom transaction column id (``custcol_syncline_source``).
    line_source_field: str = DEFAULT_LINE_SOURCE_FIELD
    posting_periods: Mapping[str, str] = field(default_factory=dict)
    resolve_posting_periods: bool = True
    period_cache_seconds: float = 300.0
    suiteql_date_format: str = "%m/%d/%Y"

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> MappingOptions:
        """Read the mapping options of a connection (unknown keys are someone else's)."""
        try:
            terms = {int(days): str(term) for days, term in _mapping(options, "payment_terms").items()}
            default_terms = options.get("default_payment_terms")
            resolved = cls(
                subsidiary_id=str(options.get("subsidiary_id", "1")),
                default_item_id=str(options.get("default_item_id", "1")),
                tax_item_id=_optional_str(options.get("tax_item_id")),
                subsidiaries=_str_mapping(options, "subsidiaries"),
                refund_account_id=_optional_str(options.get("refund_account_id")),
                currencies={code.upper(): value for code, value in _str_mapping(options, "currencies").items()},
                payment_terms=terms,
                default_payment_terms=None if default_terms in (None, "") else int(default_terms),
                items=_str_mapping(options, "items"),
                accounts=_str_mapping(options, "accounts"),
                accounts_are_internal_ids=bool(options.get("accounts_are_internal_ids", False)),
                deposit_account_id=_optional_str(options.get("deposit_account_id")),
                payout_clearing_account_id=_optional_str(options.get("payout_clearing_account_id")),
                payout_fee_account_id=_optional_str(options.get("payout_fee_account_id")),
                line_source_field=str(options.get("line_source_field", DEFAULT_LINE_SOURCE_FIELD)),
                posting_periods=_str_mapping(options, "posting_periods"),
                resolve_posting_periods=bool(options.get("resolve_posting_periods", True)),
                period_cache_seconds=float(options.get("period_cache_seconds", 300.0)),
                suiteql_date_format=str(options.get("suiteql_date_format", "%m/%d/%Y")),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"netsuite options are invalid: {exc}") from None
        resolved._check()
        return resolved

    def _check(self) -> None:
        if self.default_payment_terms is not None and self.default_payment_terms not in self.payment_terms:
            raise ConfigError(f"netsuite options.default_payment_terms {self.default_payment_terms} "
                              "is not a key of options.payment_terms")
        if self.line_source_field != LINE_SOURCE_MEMO and not _CUSTOM_COLUMN.fullmatch(self.line_source_field):
            raise ConfigError("netsuite options.line_source_field must be 'memo' or a custom column id "
                              f"(custcol...), not {self.line_source_field!r}")
        bad_months = [month for month in self.posting_periods if not _MONTH.fullmatch(month)]
        if bad_months:
            raise ConfigError(f"netsuite options.posting_periods keys must be YYYY-MM, not {bad_months[0]!r}")
        if self.period_cache_seconds < 0:
            raise ConfigError("netsuite options.period_cache_seconds must not be negative")

    def subsidiary(self, legal_entity_id: str | None) -> dict[str, str]:
        """Return the subsidiary reference for a legal entity (the default one if unmapped)."""
        return {"id": self.subsidiaries.get(legal_entity_id or "", self.subsidiary_id)}

    def currency(self, code: str) -> dict[str, str]:
        """Return the currency reference: by internal id when mapped, else by its ISO code."""
        internal_id = self.currencies.get(code.upper())
        return {"id": internal_id} if internal_id is not None else {"refName": code.upper()}

    def terms(self, days: int | None) -> dict[str, str] | None:
        """Return the payment-terms reference for net ``days``, or None when unmapped."""
        internal_id = None if days is None else self.payment_terms.get(days)
        return None if internal_id is None else {"id": internal_id}

    def item(self, product_id: str | None) -> dict[str, str]:
        """Return the item reference of a canonical product (the default item if unmapped)."""
        return {"id": self.items.get(product_id or "", self.default_item_id)}

    def gl_account(self, code: str, where: str) -> dict[str, str]:
        """Return the general-ledger account reference of a ledger account code.

        A code missing from ``accounts`` is a mapping gap a person must fill, unless
        ``accounts_are_internal_ids`` says the ledger already speaks NetSuite internal ids.
        Account numbers and internal ids are both digits, so guessing would post to the
        wrong account.
        """
        internal_id = self.accounts.get(code)
        if internal_id is None:
            if not self.accounts_are_internal_ids:
                raise DataQualityError(
                    f"{where}: ledger account {code!r} has no NetSuite account in options.accounts",
                    field=where, code="account_unmapped",
                )
            internal_id = code
        return {"id": internal_id}


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


def to_record(record: BaseModel, options: MappingOptions) -> RecordWrite:
    """Return the NetSuite upsert (record type, body, replaced sublists, dates) of a canonical object."""
    if isinstance(record, Account):
        return RecordWrite("customer", customer_body(record, options), replace=("addressBook",))
    if isinstance(record, SalesOrder):
        return RecordWrite("salesOrder", sales_order_body(record, options), replace=("item",))
    if isinstance(record, Invoice):
        body = invoice_body(record, options)
        return RecordWrite("invoice", body, replace=("item",), tran_date=date.fromisoformat(body["tranDate"]))
    if isinstance(record, Payment):
        return RecordWrite("customerPayment", customer_payment_body(record, options), replace=("apply",),
                           tran_date=_utc_day(record.paid_at))
    if isinstance(record, CreditMemo):
        return RecordWrite("creditMemo", credit_memo_body(record, options), replace=("item",),
                           tran_date=_utc_day(record.issued_at))
    if isinstance(record, Refund):
        return RecordWrite("customerRefund", customer_refund_body(record, options), replace=("apply",),
                           tran_date=_utc_day(record.refunded_at))
    if isinstance(record, Payout):
        return RecordWrite("deposit", deposit_body(record, options), replace=("other", "cashBack"),
                           tran_date=record.arrival_date)
    if isinstance(record, JournalEntry):
        return RecordWrite("journalEntry", journal_entry_body(record, options), replace=("line",),
                           tran_date=record.posting_date, posting_period=record.posting_period)
    raise DataQualityError(f"NetSuite has no record for {type(record).__name__}", field="object_type")


def customer_body(account: Account, options: MappingOptions) -> dict[str, Any]:
    """Return the ``customer`` body of an account (a company, not an individual).

    The subsidiary is the account's legal entity (``options.subsidiaries``), the currency its
    billing currency and the terms ``options.default_payment_terms``.
    """
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
        body["currency"] = options.currency(account.currency)
    terms = options.terms(options.default_payment_terms)
    if terms is not None:
        body["terms"] = terms
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


def sales_order_body(order: SalesOrder, options: MappingOptions) -> dict[str, Any]:
    """Return the ``salesOrder`` body: customer, subsidiary, currency, terms and priced lines.

    A sales order posts nothing to the ledger, so it has no posting period.
    """
    if not order.lines:
        raise DataQualityError(f"sales order {order.id} has no lines", field="lines")
    items: list[dict[str, Any]] = []
    for line in order.lines:
        where = f"lines.{line.id}"
        rate = _amount(line.unit_amount, order.currency, f"{where}.unit_amount")
        item: dict[str, Any] = {
            "item": options.item(line.product_id),
            "description": line.description or line.id,
            "quantity": line.quantity,
            "rate": rate,
            "amount": _amount(Money(amount=line.unit_amount.amount * line.quantity, currency=order.currency),
                              order.currency, f"{where}.amount"),
        }
        if line.service_start is not None:
            item["revRecStartDate"] = line.service_start.isoformat()
        if line.service_end is not None:
            item["revRecEndDate"] = line.service_end.isoformat()
        items.append(item)
    body: dict[str, Any] = {
        "entity": {"externalId": external_id(order.account_id, field_name="account_id")},
        "tranDate": order.order_date.isoformat(),
        "currency": options.currency(order.currency),
        "subsidiary": options.subsidiary(order.legal_entity_id),
        "memo": (order.memo or _memo(order.source.system, order.source.external_id))[:999],
        "item": {"items": items},
    }
    terms = options.terms(options.default_payment_terms)
    if terms is not None:
        body["terms"] = terms
    return body


def invoice_body(invoice: Invoice, options: MappingOptions) -> dict[str, Any]:
    """Return the ``invoice`` body: customer, dates, terms, one line per source line plus tax lines."""
    if invoice.issued_at is None:
        raise DataQualityError(f"invoice {invoice.id} has no issued_at, so no tranDate", field="issued_at")
    items: list[dict[str, Any]] = []
    taxes: list[dict[str, Any]] = []
    tax_item = {"id": options.tax_item_id or options.default_item_id}
    for line in invoice.lines:
        items.append({
            "item": options.item(line.product_id),
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
    issued = _utc_day(invoice.issued_at)
    body: dict[str, Any] = {
        "entity": {"externalId": external_id(invoice.account_id, field_name="account_id")},
        "tranDate": issued.isoformat(),
        "currency": options.currency(invoice.currency),
        "subsidiary": options.subsidiary(invoice.legal_entity_id),
        "memo": _memo(invoice.source.system, invoice.source.external_id, invoice.number),
        "item": {"items": items + taxes},
    }
    if invoice.due_date is not None:
        body["dueDate"] = invoice.due_date.isoformat()
        terms = options.terms((invoice.due_date - issued).days)
        if terms is not None:
            body["terms"] = terms
    return body


def customer_payment_body(payment: Payment, options: MappingOptions) -> dict[str, Any]:
    """Return the ``customerPayment`` body, applied to the invoice or invoices it settles.

    ``applications`` name several invoices (or part of one); without them the whole amount
    goes to ``invoice_id``. What is not applied stays on the customer as unapplied credit.
    """
    if payment.status is not PaymentStatus.SUCCEEDED:
        raise DataQualityError(
            f"payment {payment.id} is {payment.status.value}; only succeeded payments post", field="status"
        )
    if payment.account_id is None:
        raise DataQualityError(f"payment {payment.id} has no account_id", field="account_id")
    currency = payment.amount.currency
    amount = _amount(payment.amount, currency, "amount")
    body: dict[str, Any] = {
        "customer": {"externalId": external_id(payment.account_id, field_name="account_id")},
        "tranDate": _utc_day(payment.paid_at).isoformat(),
        "currency": options.currency(currency),
        "subsidiary": options.subsidiary(None),
        "payment": amount,
        "memo": _memo(payment.source.system, payment.source.external_id, payment.method),
    }
    lines: list[dict[str, Any]] = []
    if payment.applications:
        seen: set[str] = set()
        for index, application in enumerate(payment.applications):
            where = f"applications.{index}"
            if application.invoice_id in seen:
                raise DataQualityError(f"payment {payment.id} applies twice to invoice {application.invoice_id}",
                                       field=f"{where}.invoice_id")
            seen.add(application.invoice_id)
            applied = _amount(application.amount, currency, f"{where}.amount")
            if applied <= 0:
                raise DataQualityError(f"{where}.amount must be positive", field=f"{where}.amount")
            doc = {"externalId": external_id(application.invoice_id, field_name=f"{where}.invoice_id")}
            lines.append({"doc": doc, "apply": True, "amount": applied})
        total = sum((line["amount"] for line in lines), Decimal(0))
        if total > amount:
            raise DataQualityError(
                f"payment {payment.id} applies {total} to invoices but only {amount} {currency} was paid",
                field="applications",
            )
    elif payment.invoice_id is not None:
        doc = {"externalId": external_id(payment.invoice_id, field_name="invoice_id")}
        lines.append({"doc": doc, "apply": True, "amount": amount})
    if lines:
        body["apply"] = {"items": lines}
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
        "tranDate": _utc_day(memo.issued_at).isoformat(),
        "currency": options.currency(memo.currency),
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
        "tranDate": _utc_day(refund.refunded_at).isoformat(),
        "currency": options.currency(refund.amount.currency),
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


def deposit_body(payout: Payout, options: MappingOptions) -> dict[str, Any]:
    """Return the ``deposit`` body of a payout: the gross from clearing, the fee as cash back.

    ``payout.amount`` is what reached the bank. The deposit draws ``amount + fees`` from the
    processor's clearing account (an ``other`` line) and takes the fees back out as a
    ``cashBack`` line on the fee account, so the deposit total equals the bank line and the
    fee lands in expenses.
    """
    if options.deposit_account_id is None or options.payout_clearing_account_id is None:
        # Without them every payout would fail the same way: a connection problem, not a data one.
        raise AuthConfigError("netsuite payouts need options.deposit_account_id and "
                              "options.payout_clearing_account_id", code="config_invalid")
    currency = payout.amount.currency
    net = _amount(payout.amount, currency, "amount")
    fees = _amount(payout.fees, currency, "fees") if payout.fees is not None else Decimal(0)
    if net <= 0:
        raise DataQualityError(f"payout {payout.id} of {net} {currency} is not a deposit (amount must be positive)",
                               field="amount")
    if fees < 0:
        raise DataQualityError(f"payout {payout.id} has negative fees", field="fees")
    memo = _memo(payout.source.system, payout.source.external_id, "payout")
    gross = net + fees
    body: dict[str, Any] = {
        "account": {"id": options.deposit_account_id},
        "tranDate": payout.arrival_date.isoformat(),
        "currency": options.currency(currency),
        "subsidiary": options.subsidiary(None),
        "memo": memo,
        "other": {"items": [{"account": {"id": options.payout_clearing_account_id}, "amount": gross, "memo": memo}]},
        "cashBack": {"items": []},
    }
    if fees:
        if options.payout_fee_account_id is None:
            raise AuthConfigError("netsuite payouts with fees need options.payout_fee_account_id",
                                  code="config_invalid")
        body["cashBack"]["items"].append(
            {"account": {"id": options.payout_fee_account_id}, "amount": fees, "memo": f"{memo} fees"[:999]}
        )
    return body


def journal_entry_body(entry: JournalEntry, options: MappingOptions) -> dict[str, Any]:
    """Return the ``journalEntry`` body; refuse an entry that does not balance.

    Each line carries its source reference (the line's source document, else the entry's
    summary key, else the entry id) in ``options.line_source_field``: a custom column, or
    appended to the line memo. Zero lines are dropped: NetSuite refuses a line with neither
    debit nor credit, and they change no balance.
    """
    currency = entry.currency
    lines: list[dict[str, Any]] = []
    debits = credits = Decimal(0)
    for index, line in enumerate(entry.lines):
        where = f"lines.{index}"
        if (line.debit is None) == (line.credit is None):
            raise DataQualityError(f"{where} needs exactly one of debit and credit", field=where)
        side, money = ("debit", line.debit) if line.debit is not None else ("credit", line.credit)
        assert money is not None
        value = _amount(money, currency, f"{where}.{side}")
        if value < 0:
            raise DataQualityError(f"{where}.{side} is negative", field=f"{where}.{side}")
        if value == 0:
            continue
        if side == "debit":
            debits += value
        else:
            credits += value
        source = line.source_document or entry.summary_key or entry.id
        item: dict[str, Any] = {"account": options.gl_account(line.account, f"{where}.account"), side: value}
        if options.line_source_field == LINE_SOURCE_MEMO:
            item["memo"] = (f"{line.memo} [{source}]" if line.memo else source)[:999]
        else:
            if line.memo:
                item["memo"] = line.memo[:999]
            item[options.line_source_field] = source[:999]
        lines.append(item)
    if len(lines) < 2:
        raise DataQualityError(f"journal entry {entry.id} needs at least two non-zero lines", field="lines")
    if debits != credits:
        raise DataQualityError(
            f"journal entry {entry.id} does not balance: debits {debits}, credits {credits} {currency}",
            field="lines", code="unbalanced",
        )
    body: dict[str, Any] = {
        "subsidiary": options.subsidiary(entry.legal_entity_id),
        "currency": options.currency(currency),
        "tranDate": entry.posting_date.isoformat(),
        "memo": (entry.memo or f"syncline {entry.id}")[:999],
        "line": {"items": lines},
    }
    if entry.exchange_rate is not None:
        body["exchangeRate"] = _exchange_rate(entry.exchange_rate)
    return body


def _amount(money: Money, currency: str, where: str) -> Decimal:
    """Return the exact major-unit amount, refusing a line in another currency than its document."""
    if money.currency != currency:
        raise DataQualityError(f"{where} is in {money.currency}, the document in {currency}", field=where)
    return money.to_decimal()


def _utc_day(moment: datetime) -> date:
    """Return the UTC calendar day of a moment: the ``tranDate`` NetSuite books it on."""
    return (moment.astimezone(UTC) if moment.tzinfo else moment).date()


def _exchange_rate(value: str) -> Decimal:
    try:
        rate = Decimal(value)
    except InvalidOperation:
        raise DataQualityError(f"exchange_rate {value!r} is not a number", field="exchange_rate") from None
    if not rate.is_finite() or rate <= 0:
        raise DataQualityError(f"exchange_rate {value!r} must be a positive number", field="exchange_rate")
    return rate


def _memo(system: str, source_id: str, extra: str | None = None) -> str:
    """Return the memo that lets an accountant find the source record: ``stripe in_123``."""
    memo = f"{system} {source_id}" + (f" ({extra})" if extra else "")
    # NetSuite's memo field holds 999 characters.
    return memo[:999]


def _optional_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _mapping(options: Mapping[str, Any], key: str) -> Mapping[Any, Any]:
    value = options.get(key) or {}
    if not isinstance(value, Mapping):
        raise TypeError(f"options.{key} must be a mapping, not {type(value).__name__}")
    return value


def _str_mapping(options: Mapping[str, Any], key: str) -> dict[str, str]:
    return {str(name): str(value) for name, value in _mapping(options, key).items()}
