"""Stripe outbound: canonical customers, products, prices, subscriptions, invoices and credit notes.

Stripe has no upsert by external id, so each operation finds or creates its Stripe object in three
steps, all of them safe to repeat:

1. **Find.** An object that originated in Stripe (``source.system`` is this connection) is
   addressed by ``source.external_id``. Any other object carries its canonical id in
   ``metadata[syncline_id]`` and is found with the Search API
   (``GET /v1/customers/search?query=metadata['syncline_id']:'acc_1'``).
2. **Create with identity only.** When the search finds nothing, the object is created with
   ``Idempotency-Key: syncline-create-<canonical id>`` and ONLY its identity parameters
   (``metadata[syncline_id]`` plus whatever Stripe requires to create it: a product's name, a
   price's terms, a subscription's customer and prices). The same canonical object therefore
   yields the same Stripe object while Stripe keeps the key (24 h); the search covers the time
   after that, and the key covers the minute Stripe's search index lags behind writes. When the
   key comes back with other identity parameters (the object was created under it recently and
   the index has not caught up), the delivery fails as transient and the next attempt finds it.
3. **Update with the full state.** ``POST /v1/<objects>/{id}`` with everything else, under the
   delivery's own idempotency key (sub-steps append ``:<step>``), so a redelivery replays it.

References between objects (a subscription's customer and prices, a price's product, an
invoice's customer, a credit note's invoice) are resolved the same way, by search on
``metadata[syncline_id]``; a reference Stripe does not hold is a
:class:`~syncline.errors.DataQualityError` with code ``not_found`` (parked: the referenced object
must be delivered first). References to objects that originated in Stripe cannot be resolved from
a canonical id alone (that needs the identity cross-reference) and are reported the same way.

Prices are immutable except ``active``, ``metadata``, ``nickname``: a changed amount, currency,
interval or product creates a new price (keyed by the canonical id and the terms) and
deactivates the old one, so exactly one active price carries a canonical id.

Every POST is form-encoded the way Stripe reads nested parameters (``metadata[syncline_id]=...``,
``items[0][price]=...``) and carries ``Idempotency-Key`` and ``Stripe-Version: 2024-06-20``
(:data:`~syncline.connectors.stripe.client.API_VERSION`, the version the mapping and the sandbox
follow). Stripe's vendored OpenAPI document is older (``2020-08-27``); the requests are checked
against it in ``tests/connectors/test_stripe_openapi.py``, which lists the two invoice parameters
and the endpoints it predates.

Stripe has no batch write endpoints, so no operation is ``batchable``; the pipeline sends one
request chain per record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any
from urllib.parse import urlencode

import httpx
from pydantic import BaseModel, ValidationError

from syncline.canonical import Account, CreditMemo, Invoice, Price, Product, Subscription
from syncline.canonical.objects import InvoiceStatus, SubscriptionStatus
from syncline.connectors.base import DeliveryResult, Operation
from syncline.connectors.stripe.client import API_VERSION, form_encode
from syncline.connectors.stripe.errors import raise_for_stripe, translate_transport_errors
from syncline.errors import DataQualityError, DeliveryError, SynclineError, TransientError

JSON = dict[str, Any]

#: Outbound operations by name, as routes refer to them. None is batchable: Stripe has no batch writes.
OPERATIONS: Mapping[str, Operation] = {
    op.name: op for op in (
        Operation("upsert_customer", "account", "create or update the Stripe customer of an account"),
        Operation("upsert_product", "product", "create or update a Stripe product"),
        Operation("upsert_price", "price",
                  "create a Stripe price; changed terms make a new price and deactivate the old one"),
        Operation("upsert_subscription", "subscription",
                  "create a subscription, change its items and quantities, cancel it"),
        Operation("upsert_invoice", "invoice",
                  "create a draft invoice with its items, then finalize, pay out of band, void or write off"),
        Operation("create_credit_note", "credit_memo", "issue a credit note on an invoice"),
    )
}

#: Stripe's credit note reasons; other canonical reasons travel in the memo only.
_CREDIT_NOTE_REASONS = frozenset({"duplicate", "fraudulent", "order_change", "product_unsatisfactory"})


def _parse(model: type[BaseModel], payload: Mapping[str, Any], operation: str) -> Any:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or model.__name__
        raise DataQualityError(f"{operation}: payload is not a valid {model.__name__}: {where}: {first['msg']}",
                               code="payload_invalid", field=where) from None


def _unix(moment: datetime | date) -> int:
    if not isinstance(moment, datetime):
        moment = datetime.combine(moment, time(), UTC)
    return int(moment.timestamp())


def _quoted(value: str) -> str:
    """Quote ``value`` for Stripe's search query language."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass
class StripeWriter:
    """Apply canonical objects to one Stripe account through ``http`` (see the module docstring)."""

    connection: str
    http: httpx.AsyncClient

    # -- requests ----------------------------------------------------------------------------------
    async def send(
        self, method: str, path: str, *, form: Mapping[str, Any] | None = None,
        query: Mapping[str, str | int] | None = None, key: str | None = None,
    ) -> httpx.Response:
        """Send one request and return the 2xx response; POSTs are form-encoded with ``Idempotency-Key``."""
        headers = {"Stripe-Version": API_VERSION}
        content = None
        if method == "POST":
            if key is None:
                raise SynclineError(f"POST {path} needs an idempotency key", code="idempotency_key_missing")
            headers["Idempotency-Key"] = _fit_key(key)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            content = urlencode(form_encode(form or {})).encode()
        with translate_transport_errors(f"{method} {path}"):
            response = await self.http.request(method, path, params=query, content=content, headers=headers)
        raise_for_stripe(response)
        return response

    async def request(
        self, method: str, path: str, *, form: Mapping[str, Any] | None = None,
        query: Mapping[str, str | int] | None = None, key: str | None = None,
    ) -> JSON:
        """Send one request (see :meth:`send`) and return its JSON body."""
        response = await self.send(method, path, form=form, query=query, key=key)
        body: JSON = response.json()
        return body

    async def search(self, resource: str, syncline_id: str, *, extra: str = "") -> list[JSON]:
        """Return the ``resource`` objects whose ``metadata[syncline_id]`` is ``syncline_id``."""
        query = f"metadata['syncline_id']:{_quoted(syncline_id)}{extra}"
        body = await self.request("GET", f"/v1/{resource}/search", query={"query": query, "limit": 100})
        data = body.get("data")
        if not isinstance(data, list):
            raise DataQualityError(f"Stripe {resource} search answered without a data list", code="field_missing",
                                   field="data")
        return data

    async def find_one(self, resource: str, syncline_id: str) -> JSON | None:
        """Return the single object carrying ``syncline_id``, None, or raise when Stripe holds several.

        For prices only the active one counts: replaced prices keep their metadata, deactivated.
        """
        extra = " AND active:'true'" if resource == "prices" else ""
        found = await self.search(resource, syncline_id, extra=extra)
        if len(found) > 1:
            ids = ", ".join(str(obj.get("id")) for obj in found)
            raise DataQualityError(f"Stripe holds several {resource} for {syncline_id}: {ids}",
                                   code="duplicate_at_vendor")
        return found[0] if found else None

    async def resolve(self, resource: str, syncline_id: str, *, field: str) -> str:
        """Return the Stripe id of the object ``field`` refers to, or raise DataQualityError not_found."""
        found = await self.find_one(resource, syncline_id)
        if found is None:
            raise DataQualityError(
                f"{field} {syncline_id} is not in Stripe (no {resource} has metadata syncline_id={syncline_id})",
                code="not_found", field=field,
            )
        return str(found["id"])

    async def create_identity(self, resource: str, syncline_id: str, identity: Mapping[str, Any],
                              *, key_suffix: str = "") -> tuple[JSON, bool]:
        """Create the object with identity params only, under ``syncline-create-<id>``.

        Return it and whether this call created it (False when Stripe replayed an earlier create).
        """
        params = {**identity, "metadata": {"syncline_id": syncline_id}}
        try:
            response = await self.send("POST", f"/v1/{resource}", form=params,
                                       key=f"syncline-create-{syncline_id}{key_suffix}")
        except DataQualityError as exc:
            if exc.code != "idempotency_key_reused":
                raise
            # created under this key within 24 h with other identity params (a renamed product, a
            # subscription whose items changed): it exists, the search index has not caught up yet
            raise TransientError(
                f"Stripe {resource} for {syncline_id} was created moments ago and is not searchable yet",
                code="search_lagging", retry_after=5.0,
            ) from exc
        body: JSON = response.json()
        return body, response.headers.get("idempotent-replayed") != "true"

    async def find_or_create(self, resource: str, canonical: Any, identity: Mapping[str, Any]) -> tuple[JSON, bool]:
        """Return ``(object, created)`` for a canonical object, by origin, search, then create."""
        if canonical.source.system == self.connection:
            existing = await self.request("GET", f"/v1/{resource}/{canonical.source.external_id}")
            return existing, False
        found = await self.find_one(resource, canonical.id)
        if found is not None:
            return found, False
        return await self.create_identity(resource, canonical.id, identity)

    # -- customers, products -----------------------------------------------------------------------
    async def upsert_customer(self, account: Account, key: str) -> DeliveryResult:
        """Find or create the customer, then apply name, contact details, address and tax status.

        A deleted account deletes its customer; one Stripe does not hold (never delivered, or
        already deleted) is reported as ``not_found`` rather than created to be deleted.
        """
        if account.deleted:
            if account.source.system == self.connection:
                target: JSON | None = {"id": account.source.external_id}
            else:
                target = await self.find_one("customers", account.id)
            if target is None:
                raise DataQualityError(f"account {account.id} is deleted and Stripe holds no customer for it",
                                       code="not_found", field="id")
            await self.request("DELETE", f"/v1/customers/{target['id']}")
            return DeliveryResult(external_id=str(target["id"]), object_type="customer", created=False)
        customer, created = await self.find_or_create("customers", account, {})
        exempt = "exempt" if account.tax_exempt else "none"
        if account.tax_exempt and customer.get("tax_exempt") == "reverse":
            exempt = "reverse"  # reverse charge reads as exempt in the canonical model: keep Stripe's finer value
        params: JSON = {
            "name": account.name, "email": account.email, "phone": account.phone, "tax_exempt": exempt,
            "metadata": {"syncline_id": account.id},
        }
        if account.address is not None:
            address = account.address
            params["address"] = {
                "line1": address.line1, "line2": address.line2, "city": address.city, "state": address.region,
                "postal_code": address.postal_code, "country": address.country,
            }
        await self.request("POST", f"/v1/customers/{customer['id']}", form=params, key=key)
        return DeliveryResult(external_id=str(customer["id"]), object_type="customer", created=created)

    async def upsert_product(self, product: Product, key: str) -> DeliveryResult:
        """Find or create the product (Stripe requires a name to create), then apply its state."""
        found, created = await self.find_or_create("products", product, {"name": product.name})
        metadata: JSON = {"syncline_id": product.id}
        if product.sku:
            metadata["sku"] = product.sku
        await self.request("POST", f"/v1/products/{found['id']}", key=key,
                           form={"name": product.name, "active": product.active, "metadata": metadata})
        return DeliveryResult(external_id=str(found["id"]), object_type="product", created=created)

    # -- prices ------------------------------------------------------------------------------------
    async def upsert_price(self, price: Price, key: str) -> DeliveryResult:
        """Keep exactly one active Stripe price with the canonical price's terms.

        A price whose terms (product, currency, amount, interval) changed is replaced: the new one
        is created under a key naming the terms, then the others are deactivated. A crash between
        the two leaves two active prices, which the next attempt repairs.
        """
        product = await self.resolve("products", price.product_id, field="product_id")
        terms: JSON = {"product": product, "currency": price.unit_amount.currency.lower(),
                       "unit_amount": price.unit_amount.amount}
        if price.interval is not None:
            terms["recurring"] = {"interval": price.interval.value, "interval_count": price.interval_count}
        if price.source.system == self.connection:
            candidates = [await self.request("GET", f"/v1/prices/{price.source.external_id}")]
        else:
            candidates = await self.search("prices", price.id, extra=" AND active:'true'")
        keep = next((candidate for candidate in candidates if _price_terms(candidate) == terms), None)
        created = False
        if keep is None:
            digest = hashlib.sha256(repr(sorted(_flat(terms))).encode()).hexdigest()[:16]
            keep, created = await self.create_identity("prices", price.id, terms, key_suffix=f"-{digest}")
        for stale in candidates:
            if stale["id"] != keep["id"] and stale.get("active", True):
                await self.request("POST", f"/v1/prices/{stale['id']}", form={"active": False},
                                   key=f"{key}:deactivate:{stale['id']}")
        await self.request("POST", f"/v1/prices/{keep['id']}", key=key,
                           form={"active": True, "metadata": {"syncline_id": price.id}})
        return DeliveryResult(external_id=str(keep["id"]), object_type="price", created=created)

    # -- subscriptions -----------------------------------------------------------------------------
    async def upsert_subscription(self, subscription: Subscription, key: str) -> DeliveryResult:
        """Create the subscription, set its items and quantities, or cancel it."""
        customer = await self.resolve("customers", subscription.account_id, field="account_id")
        prices = [await self.resolve("prices", item.price_id, field=f"items[{index}].price_id")
                  for index, item in enumerate(subscription.items)]
        canceled = subscription.status is SubscriptionStatus.CANCELED
        identity = {"customer": customer, "items": [{"price": price_id} for price_id in prices]}
        found, created = await self.find_or_create("subscriptions", subscription, identity)
        sub_id = str(found["id"])
        if found.get("status") == "canceled":
            if not canceled:
                raise DataQualityError(f"Stripe subscription {sub_id} is canceled and cannot be reactivated",
                                       code="subscription_canceled", field="status")
            return DeliveryResult(external_id=sub_id, object_type="subscription", created=created)
        wanted = {price_id: item.quantity for price_id, item in zip(prices, subscription.items, strict=True)}
        existing = {str(item["price"]["id"]): item for item in found.get("items", {}).get("data", [])}
        items: list[JSON] = []
        for price_id, quantity in wanted.items():
            current = existing.get(price_id)
            if current is None:
                items.append({"price": price_id, "quantity": quantity})
            elif current.get("quantity") != quantity:
                items.append({"id": current["id"], "quantity": quantity})
        items.extend({"id": item["id"], "deleted": True}
                     for price_id, item in existing.items() if price_id not in wanted)
        params: JSON = {"metadata": {"syncline_id": subscription.id}}
        if items:
            params["items"] = items
        if subscription.cancel_at is not None and not canceled:
            params["cancel_at"] = _unix(subscription.cancel_at)
        await self.request("POST", f"/v1/subscriptions/{sub_id}", form=params, key=key)
        if canceled:
            await self.request("DELETE", f"/v1/subscriptions/{sub_id}")
        return DeliveryResult(external_id=sub_id, object_type="subscription", created=created)

    # -- invoices ----------------------------------------------------------------------------------
    async def upsert_invoice(self, invoice: Invoice, key: str) -> DeliveryResult:
        """Create a draft invoice, add the lines it lacks as invoice items, then move its status.

        Lines are added only while the Stripe invoice is a draft (Stripe freezes them on
        finalizing); a due date makes it a ``send_invoice`` invoice, the only kind Stripe lets have one.
        Taxes are not sent: Stripe computes them from its own tax rates or Stripe Tax.
        """
        customer = await self.resolve("customers", invoice.account_id, field="account_id")
        identity = {"customer": customer, "currency": invoice.currency.lower(),
                    "pending_invoice_items_behavior": "exclude", "auto_advance": False}
        found, created = await self.find_or_create("invoices", invoice, identity)
        stripe_id = str(found["id"])
        if found.get("status") == "draft":
            present = {line.get("metadata", {}).get("syncline_line_id")
                       for line in found.get("lines", {}).get("data", [])}
            for line in invoice.lines:
                if line.id in present:
                    continue
                item: JSON = {
                    "customer": customer, "invoice": stripe_id, "currency": line.amount.currency.lower(),
                    "amount": line.amount.amount, "description": line.description,
                    "metadata": {"syncline_line_id": line.id},
                }
                if line.period is not None:
                    item["period"] = {"start": _unix(line.period.start), "end": _unix(line.period.end)}
                await self.request("POST", "/v1/invoiceitems", form=item,
                                   key=f"syncline-create-{invoice.id}-{line.id}")
        metadata: JSON = {"syncline_id": invoice.id}
        if invoice.number:
            metadata["syncline_number"] = invoice.number
        params: JSON = {"metadata": metadata}
        if invoice.due_date is not None and found.get("status") == "draft":
            params["collection_method"] = "send_invoice"
            params["due_date"] = _unix(invoice.due_date)
        current = await self.request("POST", f"/v1/invoices/{stripe_id}", form=params, key=key)
        await self._move_invoice(current, invoice.status, key)
        return DeliveryResult(external_id=stripe_id, object_type="invoice", created=created)

    async def _move_invoice(self, current: JSON, wanted: InvoiceStatus, key: str) -> None:
        status, stripe_id = current.get("status"), current["id"]
        if wanted is InvoiceStatus.DRAFT or status == wanted.value:
            return
        if status == "draft":
            current = await self.request("POST", f"/v1/invoices/{stripe_id}/finalize",
                                         form={"auto_advance": False}, key=f"{key}:finalize")
            status = current.get("status")
        if status == wanted.value or status in ("paid", "void"):
            return  # a zero invoice is paid on finalizing; paid and void are final at Stripe
        steps = {InvoiceStatus.PAID: ("pay", {"paid_out_of_band": True}),
                 InvoiceStatus.VOID: ("void", {}),
                 InvoiceStatus.UNCOLLECTIBLE: ("mark_uncollectible", {})}
        if wanted in steps and not (wanted is InvoiceStatus.UNCOLLECTIBLE and status != "open"):
            action, form = steps[wanted]
            await self.request("POST", f"/v1/invoices/{stripe_id}/{action}", form=form, key=f"{key}:{action}")

    # -- credit notes ------------------------------------------------------------------------------
    async def create_credit_note(self, memo: CreditMemo, key: str) -> DeliveryResult:
        """Issue the credit note once (found again by listing the invoice's notes), then update its memo."""
        if memo.invoice_id is None:
            raise DataQualityError("a Stripe credit note needs the invoice it credits", code="field_missing",
                                   field="invoice_id")
        invoice = await self.resolve("invoices", memo.invoice_id, field="invoice_id")
        note = await self._find_credit_note(invoice, memo)
        created = note is None
        if note is None:
            params: JSON = {"invoice": invoice, "metadata": {"syncline_id": memo.id}}
            if memo.lines:
                params["lines"] = [{"type": "custom_line_item", "unit_amount": line.amount.amount, "quantity": 1,
                                    "description": line.description} for line in memo.lines]
            else:
                params["amount"] = memo.total.amount
            if memo.reason in _CREDIT_NOTE_REASONS:
                params["reason"] = memo.reason
            # a credit note's amounts are immutable, so the whole note is its identity
            note = await self.request("POST", "/v1/credit_notes", form=params, key=f"syncline-create-{memo.id}")
        await self.request("POST", f"/v1/credit_notes/{note['id']}", key=key,
                           form={"memo": memo.reason, "metadata": {"syncline_id": memo.id}})
        return DeliveryResult(external_id=str(note["id"]), object_type="credit_note", created=created)

    async def _find_credit_note(self, invoice: str, memo: CreditMemo) -> JSON | None:
        if memo.source.system == self.connection:
            return await self.request("GET", f"/v1/credit_notes/{memo.source.external_id}")
        # credit notes have no Search API: list the invoice's notes (few) and match the metadata
        query: dict[str, str | int] = {"invoice": invoice, "limit": 100}
        while True:
            page = await self.request("GET", "/v1/credit_notes", query=query)
            data: Sequence[JSON] = page.get("data") or []
            for note in data:
                if note.get("metadata", {}).get("syncline_id") == memo.id:
                    return note
            if not page.get("has_more") or not data:
                return None
            query["starting_after"] = str(data[-1]["id"])


#: Stripe refuses idempotency keys longer than this.
MAX_IDEMPOTENCY_KEY_LENGTH = 255


def _fit_key(key: str) -> str:
    """Return ``key``, or a digest of it when Stripe would refuse its length (still deterministic)."""
    if len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH:
        return key
    return f"syncline-sha256-{hashlib.sha256(key.encode()).hexdigest()}"


def _flat(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, Mapping):
        return [pair for key, item in value.items() for pair in _flat(item, f"{prefix}{key}.")]
    return [(prefix, str(value))]


def _price_terms(price: Mapping[str, Any]) -> JSON:
    """Return the immutable terms of a Stripe price in the shape :meth:`StripeWriter.upsert_price` builds."""
    terms: JSON = {"product": price.get("product"), "currency": price.get("currency"),
                   "unit_amount": price.get("unit_amount")}
    recurring = price.get("recurring")
    if isinstance(recurring, Mapping):
        terms["recurring"] = {"interval": recurring.get("interval"), "interval_count": recurring.get("interval_count")}
    return terms


_MODELS: Mapping[str, type[BaseModel]] = {
    "upsert_customer": Account, "upsert_product": Product, "upsert_price": Price,
    "upsert_subscription": Subscription, "upsert_invoice": Invoice, "create_credit_note": CreditMemo,
}


async def deliver(
    connection: str, http: httpx.AsyncClient, operation: str, payload: Mapping[str, Any], *, idempotency_key: str
) -> DeliveryResult:
    """Apply ``operation`` to the canonical ``payload``; raise a DeliveryError subclass on failure."""
    model = _MODELS.get(operation)
    if model is None:
        raise DataQualityError(f"Stripe has no operation {operation!r} (known: {', '.join(sorted(OPERATIONS))})",
                               code="operation_unknown")
    canonical = _parse(model, payload, operation)
    writer = StripeWriter(connection, http)
    method = getattr(writer, operation)
    try:
        result: DeliveryResult = await method(canonical, idempotency_key)
    except DeliveryError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        # an answer without the fields every Stripe object has: not retryable, a person must look
        raise DataQualityError(f"Stripe answered {operation} in an unexpected shape: {exc!r}",
                               code="response_invalid") from exc
    return result
