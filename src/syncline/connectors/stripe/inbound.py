"""Stripe inbound: webhook signatures, event identity, decoding to canonical events, catch-up."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from pydantic import BaseModel

from syncline.canonical import CloudEvent, make_event
from syncline.connectors._signatures import TimestampedHmac
from syncline.connectors.base import CatchUpPage, Identity
from syncline.connectors.stripe import mapping
from syncline.connectors.stripe.errors import (
    error_from_response,
    raise_for_stripe,
    translate_transport_errors,
)
from syncline.errors import DataQualityError

SIGNATURE_HEADER = "stripe-signature"
#: Stripe's page size ceiling for List endpoints.
PAGE_LIMIT = 100


class StripeSignature(TimestampedHmac):
    """Check or produce a ``Stripe-Signature`` header (the scheme in :mod:`syncline.connectors._signatures`)."""

    def __init__(self, secret: str, tolerance_seconds: float = 300) -> None:
        super().__init__(secret, SIGNATURE_HEADER, "Stripe-Signature", tolerance_seconds)


def identify_event(payload: Any) -> Identity:
    """Return the id and type of a Stripe event object, or raise DataQualityError."""
    if not isinstance(payload, Mapping) or payload.get("object") != "event":
        raise DataQualityError("payload is not a Stripe event (object != 'event')", code="not_a_stripe_event")
    event_id, kind = payload.get("id"), payload.get("type")
    if not isinstance(event_id, str) or not event_id:
        raise DataQualityError("Stripe event has no id", code="not_a_stripe_event", field="id")
    if not isinstance(kind, str) or not kind:
        raise DataQualityError(f"Stripe event {event_id} has no type", code="not_a_stripe_event",
                               field="type")
    return Identity(event_id=event_id, event_type=kind)


#: Stripe invoice statuses in the order they can follow each other; later wins a tie on time.
INVOICE_STATUS_RANK = {"draft": 0, "open": 1, "uncollectible": 2, "paid": 3, "void": 4}


def sequence_of(created: int, rank: int = 0) -> str:
    """Return the CloudEvents ``sequence`` (20 digits, sorts as text) of one version of an object."""
    return f"{created * 10 + rank:020d}"


@dataclass(frozen=True)
class _Decoded:
    name: str
    data: BaseModel
    correlation_id: str
    rank: int = 0
    #: overrides the vendor event id when one Stripe event carries several records
    vendor_event_id: str | None = None


_Object = Mapping[str, Any]
#: (connection, data.object, event time, data.previous_attributes) → what to emit
Decoder = Callable[[str, _Object, datetime, _Object | None], list[_Decoded]]


def _account(name: str) -> Decoder:
    def decode(conn: str, obj: _Object, _at: datetime, _prev: _Object | None) -> list[_Decoded]:
        account = mapping.to_account(conn, obj, deleted=name == "account.deleted")
        return [_Decoded(name, account, account.id)]
    return decode


def _invoice(name: str) -> Decoder:
    def decode(conn: str, obj: _Object, _at: datetime, _prev: _Object | None) -> list[_Decoded]:
        invoice = mapping.to_invoice(conn, obj)
        return [_Decoded(name, invoice, invoice.id, INVOICE_STATUS_RANK[invoice.status.value])]
    return decode


def _payment(name: str) -> Decoder:
    def decode(conn: str, obj: _Object, _at: datetime, _prev: _Object | None) -> list[_Decoded]:
        payment = mapping.to_payment(conn, obj)
        return [_Decoded(name, payment, payment.invoice_id or payment.id)]
    return decode


def _refunds(conn: str, obj: _Object, _at: datetime, prev: _Object | None) -> list[_Decoded]:
    # a charge.refunded event repeats the charge's earlier refunds: keying each canonical event
    # on the refund (not the Stripe event) makes those repeats exact duplicates downstream
    return [
        _Decoded("refund.succeeded", refund, refund.invoice_id or refund.id,
                 vendor_event_id=f"refund/{refund.source.external_id}")
        for refund in mapping.to_refunds(conn, obj, prev)
    ]


def _credit_memo(conn: str, obj: _Object, _at: datetime, _prev: _Object | None) -> list[_Decoded]:
    memo = mapping.to_credit_memo(conn, obj)
    return [_Decoded("credit_memo.issued", memo, memo.invoice_id or memo.id)]


def _payout(conn: str, obj: _Object, at: datetime, _prev: _Object | None) -> list[_Decoded]:
    payout = mapping.to_payout(conn, obj, paid_at=at)
    return [_Decoded("payout.paid", payout, payout.id)]


def _simple(name: str, to: Callable[[str, _Object], BaseModel], correlation: str = "id", rank: int = 0) -> Decoder:
    """Decode ``data.object`` with ``to`` into one ``name`` event; ``rank`` breaks same-second ties."""
    def decode(conn: str, obj: _Object, _at: datetime, _prev: _Object | None) -> list[_Decoded]:
        data = to(conn, obj)
        return [_Decoded(name, data, str(getattr(data, correlation)), rank)]
    return decode


def _dispute_closed(conn: str, obj: _Object, _at: datetime, _prev: _Object | None) -> list[_Decoded]:
    dispute = mapping.to_dispute(conn, obj)
    if dispute.status.value == "open":
        raise DataQualityError(f"{mapping.label_of(obj)}: charge.dispute.closed with open status {obj.get('status')!r}",
                               code="field_invalid", field="status")
    # closing ranks after opening, so a closed dispute sorts after the opened one of the same second
    return [_Decoded(f"dispute.{dispute.status.value}", dispute, dispute.payment_id, rank=1)]


#: Stripe event type → decoder of its ``data.object``; every other type decodes to ``[]``.
DECODERS: dict[str, Decoder] = {
    "customer.created": _account("account.created"),
    "customer.updated": _account("account.updated"),
    "customer.deleted": _account("account.deleted"),
    "invoice.finalized": _invoice("invoice.issued"),
    "invoice.paid": _invoice("invoice.paid"),
    "invoice.voided": _invoice("invoice.voided"),
    "invoice.marked_uncollectible": _invoice("invoice.uncollectible"),
    "charge.succeeded": _payment("payment.succeeded"),
    "charge.failed": _payment("payment.failed"),
    "charge.refunded": _refunds,
    "credit_note.created": _credit_memo,
    "payout.paid": _payout,
    # Stripe times events to the second: the rank orders a subscription's versions within one
    "customer.subscription.created": _simple("subscription.activated", mapping.to_subscription),
    "customer.subscription.updated": _simple("subscription.updated", mapping.to_subscription, rank=1),
    "customer.subscription.deleted": _simple("subscription.canceled", mapping.to_subscription, rank=2),
    "charge.dispute.created": _simple("dispute.opened", mapping.to_dispute, correlation="payment_id"),
    "charge.dispute.closed": _dispute_closed,
    "product.created": _simple("product.created", mapping.to_product),
    "product.updated": _simple("product.updated", mapping.to_product),
    "price.created": _simple("price.created", mapping.to_price),
    "price.updated": _simple("price.updated", mapping.to_price),
}


def decode_event(connection: str, payload: Any) -> list[CloudEvent]:
    """Decode one Stripe event into canonical events (``[]`` for types Syncline does not route)."""
    identity = identify_event(payload)
    decoder = DECODERS.get(identity.event_type or "")
    if decoder is None:
        return []
    event = mapping.Fields(payload, f"stripe event {identity.event_id} ({identity.event_type})")
    created = event.integer("created")
    at = event.timestamp("created")
    data = event.child("data")
    obj = data.child("object").obj
    previous = data.raw("previous_attributes")
    decoded = decoder(connection, obj, at, previous if isinstance(previous, Mapping) else None)
    return [
        make_event(
            item.name, item.data, connection=connection,
            vendor_event_id=item.vendor_event_id or identity.event_id, time=at,
            correlation_id=item.correlation_id, sequence=sequence_of(created, item.rank),
        )
        for item in decoded
    ]


async def _list_events(
    http: httpx.AsyncClient, params: Mapping[str, str | int]
) -> tuple[list[dict[str, Any]], bool]:
    with translate_transport_errors("List Events"):
        response = await http.get("/v1/events", params=dict(params))
    if response.status_code in (400, 404):
        error = error_from_response(response)
        if error.details.get("param") in ("ending_before", "starting_after"):
            # the cursor event is gone (Stripe keeps 30 days): only a person can choose where to resume
            raise DataQualityError(f"Stripe no longer has catch-up cursor {params.get('ending_before')!r}",
                                   code="cursor_unknown", status=response.status_code)
        raise error
    raise_for_stripe(response)
    body = response.json()
    data = body.get("data")
    if not isinstance(data, list):
        raise DataQualityError("Stripe List Events answered without a data list", code="field_missing",
                               field="data")
    return data, bool(body.get("has_more"))


async def catch_up_events(http: httpx.AsyncClient, cursor: str | None) -> AsyncIterator[CatchUpPage]:
    """Yield the events after ``cursor`` oldest first, a page at a time, through List Events.

    Stripe lists newest first. From a cursor, ``ending_before=<cursor>`` returns the events just
    newer than it, so each page is reversed and its newest id becomes the next cursor. Without a
    cursor the whole retained history (30 days) is walked back with ``starting_after`` and then
    replayed oldest first.
    """
    if cursor is not None:
        while True:
            data, has_more = await _list_events(http, {"limit": PAGE_LIMIT, "ending_before": cursor})
            if not data:
                return
            cursor = str(data[0]["id"])
            yield CatchUpPage(events=list(reversed(data)), cursor=cursor)
            if not has_more:
                return
    history: list[dict[str, Any]] = []
    params: dict[str, str | int] = {"limit": PAGE_LIMIT}
    while True:
        data, has_more = await _list_events(http, params)
        history.extend(data)
        if not data or not has_more:
            break
        params["starting_after"] = str(data[-1]["id"])
    history.reverse()
    for start in range(0, len(history), PAGE_LIMIT):
        page = history[start:start + PAGE_LIMIT]
        yield CatchUpPage(events=page, cursor=str(page[-1]["id"]))
