"""Zendesk inbound: webhook signatures, event identity, decoding, catch-up by incremental export.

Webhooks subscribed to Zendesk events POST one event per request::

    {"type": "zen:event-type:ticket.status_changed", "id": "c6d7e8f9-0a1b-2c3d-4e5f-6a7b8c9d0e1f",
     "time": "2025-01-08T12:15:45.789012345Z", "zendesk_event_version": "2022-11-06",
     "subject": "zen:ticket:5158", "account_id": 22129848,
     "detail": {"id": "5158", "external_id": null, "status": "OPEN", "priority": "URGENT", ...},
     "event": {"previous": "NEW", "current": "OPEN"}}

Webhooks fired by triggers may send any body; Syncline expects trigger payloads written in the
same shape (a ``type``, a unique ``id``, ``time`` and ``detail``).

Catch-up reads the time-based Incremental Organization Export (Zendesk has a cursor-based
export for tickets and users only) and wraps each exported organization in an event of type
:data:`EXPORT_TYPE`, so that it goes through the same inbox, dedupe and decoder as webhooks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from syncline.canonical import CloudEvent, make_event
from syncline.connectors._signatures import header_value
from syncline.connectors.base import CatchUpPage, Identity
from syncline.connectors.zendesk import mapping
from syncline.connectors.zendesk.client import API
from syncline.connectors.zendesk.errors import error_from_response, transport_errors
from syncline.errors import DataQualityError, SignatureError, TransientError

SIGNATURE_HEADER = "X-Zendesk-Webhook-Signature"
TIMESTAMP_HEADER = "X-Zendesk-Webhook-Signature-Timestamp"
#: Signatures older or newer than this are refused as replays (Zendesk gives no window of its
#: own; five minutes covers its retries' clock skew, and a retry is signed afresh).
DEFAULT_TOLERANCE_SECONDS = 300

TICKET_CREATED = "zen:event-type:ticket.created"
TICKET_STATUS_CHANGED = "zen:event-type:ticket.status_changed"
ORGANIZATION_FIELD_CHANGED = "zen:event-type:organization.custom_field_changed"
#: The type of the events catch-up builds from exported organizations (not a Zendesk type).
EXPORT_TYPE = "syncline:zendesk:organization.exported"


@dataclass(frozen=True)
class WebhookSignature:
    """Check or produce Zendesk's webhook signature headers.

    Zendesk sends ``X-Zendesk-Webhook-Signature: EiqWE3SXTPQpPulBV6OSuuGziIishZNc1VwNZYqZrHU=`` and
    ``X-Zendesk-Webhook-Signature-Timestamp: 2021-03-25T05:09:27Z``; the signature is
    ``base64(HMAC-SHA256(signing_secret, timestamp + raw_body))``, the timestamp string exactly as
    sent, with no separator.
    """

    secret: str
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS

    def _digest(self, timestamp: str, body: bytes) -> str:
        mac = hmac.new(self.secret.encode(), timestamp.encode() + body, hashlib.sha256)
        return base64.b64encode(mac.digest()).decode("ascii")

    def sign(self, body: bytes, timestamp: float) -> dict[str, str]:
        """Return the headers Zendesk would send for ``body`` at unix time ``timestamp``."""
        stamp = datetime.fromtimestamp(int(timestamp), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {SIGNATURE_HEADER: self._digest(stamp, body), TIMESTAMP_HEADER: stamp}

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
        """Raise SignatureError unless the signature matches and its timestamp is recent."""
        signature = header_value(headers, SIGNATURE_HEADER)
        stamp = header_value(headers, TIMESTAMP_HEADER)
        if not signature or not stamp:
            missing = SIGNATURE_HEADER if not signature else TIMESTAMP_HEADER
            raise SignatureError(f"{missing} header is missing", code="signature_missing")
        expected = self._digest(stamp, body)
        if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
            raise SignatureError("X-Zendesk-Webhook-Signature does not match the body", code="signature_mismatch")
        try:
            signed_at = mapping.parse_time(stamp, "webhook signature timestamp").timestamp()
        except DataQualityError:
            raise SignatureError(f"{TIMESTAMP_HEADER} is not an ISO 8601 time", code="signature_malformed") from None
        age = now - signed_at
        if abs(age) > self.tolerance_seconds:
            raise SignatureError(
                f"webhook signed {int(age)} s from now (tolerance {int(self.tolerance_seconds)} s)",
                code="signature_stale",
            )


def identify_event(payload: Any) -> Identity:
    """Return the id and type of a Zendesk event payload, or raise DataQualityError."""
    if not isinstance(payload, Mapping):
        raise DataQualityError("Zendesk webhook body is not a JSON object", code="not_a_zendesk_event")
    event_id, kind = payload.get("id"), payload.get("type")
    if not isinstance(event_id, str | int) or isinstance(event_id, bool) or str(event_id) == "":
        raise DataQualityError("Zendesk event has no id", code="not_a_zendesk_event", field="id")
    if not isinstance(kind, str) or not kind:
        raise DataQualityError(f"Zendesk event {event_id} has no type", code="not_a_zendesk_event", field="type")
    return Identity(event_id=str(event_id), event_type=kind)


def decode_event(connection: str, payload: Any, options: mapping.MappingOptions) -> list[CloudEvent]:
    """Decode one Zendesk event into canonical events (``[]`` for types Syncline does not route).

    * ``ticket.created`` and ``ticket.status_changed`` → ``support_ticket.created``;
    * ``organization.custom_field_changed`` of the support level field → ``entitlement.changed``;
    * an exported organization (catch-up) with a support level → ``entitlement.changed``.
    """
    identity = identify_event(payload)
    kind = identity.event_type
    what = f"zendesk event {identity.event_id} ({kind})"
    detail = payload.get("detail")
    if kind in (TICKET_CREATED, TICKET_STATUS_CHANGED, ORGANIZATION_FIELD_CHANGED, EXPORT_TYPE) and not isinstance(
        detail, Mapping
    ):
        raise DataQualityError(f"{what} has no detail object", code="field_missing", field="detail")
    if kind in (TICKET_CREATED, TICKET_STATUS_CHANGED):
        at = mapping.parse_time(payload.get("time"), what)
        ticket = mapping.to_support_ticket(connection, detail)
        return [_event("support_ticket.created", ticket, connection, identity.event_id, at, detail)]
    if kind == ORGANIZATION_FIELD_CHANGED:
        event = payload.get("event")
        if not isinstance(event, Mapping) or not _names_support_level(event, options):
            return []
        at = mapping.parse_time(payload.get("time"), what)
        entitlement = mapping.to_entitlement(connection, detail, event.get("current"), None)
        return [_event("entitlement.changed", entitlement, connection, identity.event_id, at, detail)]
    if kind == EXPORT_TYPE:
        fields = detail.get("organization_fields")
        level = fields.get(options.support_level_field) if isinstance(fields, Mapping) else None
        if level in (None, ""):
            return []
        at = mapping.parse_time(detail.get("updated_at"), what)
        active = fields.get(options.entitlement_active_field) if isinstance(fields, Mapping) else None
        entitlement = mapping.to_entitlement(connection, detail, level, active)
        return [_event("entitlement.changed", entitlement, connection, identity.event_id, at, detail)]
    return []


def _names_support_level(event: Mapping[str, Any], options: mapping.MappingOptions) -> bool:
    """Return True when an ``organization.custom_field_changed`` event is about the support level.

    The field is named in ``event.field`` (or ``event.custom_field`` in the older format) by
    ``key``, ``title`` or ``id``; the key, the title written as a key ("Support level" →
    ``support_level``) and ``options.support_level_field_id`` all count.
    """
    field = event.get("field") or event.get("custom_field")
    if not isinstance(field, Mapping):
        return False
    wanted = options.support_level_field
    if options.support_level_field_id is not None and str(field.get("id")) == options.support_level_field_id:
        return True
    key, title = field.get("key"), field.get("title")
    if isinstance(key, str) and key == wanted:
        return True
    return isinstance(title, str) and re.sub(r"\W+", "_", title.strip().lower()) == wanted


def _event(
    name: str, data: Any, connection: str, vendor_event_id: str, at: datetime, record: Mapping[str, Any]
) -> CloudEvent:
    # Zendesk's updated_at orders versions of one record; the event time breaks no ties.
    updated = record.get("updated_at")
    stamp = mapping.parse_time(updated, "record") if isinstance(updated, str) and updated else at
    return make_event(name, data, connection=connection, vendor_event_id=vendor_event_id, time=at,
                      correlation_id=data.account_id or data.id, sequence=f"{int(stamp.timestamp()):020d}")


# -- catch-up ------------------------------------------------------------------------------------
def export_event_id(organization: Mapping[str, Any]) -> str:
    """Return the event id of one exported organization version: ``organization/<id>@<updated_at>``."""
    return f"organization/{organization.get('id')}@{organization.get('updated_at')}"


def export_event(organization: Mapping[str, Any]) -> dict[str, Any]:
    """Wrap one exported organization in the event envelope :func:`decode_event` reads."""
    return {"type": EXPORT_TYPE, "id": export_event_id(organization), "time": organization.get("updated_at"),
            "detail": dict(organization)}


@dataclass(frozen=True)
class ExportCursor:
    """Where an incremental organization export resumes.

    The time-based export answers every organization with ``updated_at >= start_time``, so the
    page after ``end_time`` starts with the organizations updated in that very second again.
    The cursor keeps their ids (``"1700000000:12,13"``) so those already seen are skipped.
    """

    start_time: int
    seen_ids: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str | None) -> ExportCursor:
        """Read a stored cursor; ``None`` starts at the beginning of the account's history."""
        if not text:
            return cls(0)
        head, _, ids = text.partition(":")
        try:
            start = int(head)
        except ValueError:
            raise DataQualityError(f"Zendesk catch-up cursor {text!r} is not '<unix time>[:<ids>]'",
                                   code="cursor_unknown") from None
        return cls(start, frozenset(part for part in ids.split(",") if part))

    def __str__(self) -> str:
        return f"{self.start_time}:{','.join(sorted(self.seen_ids))}" if self.seen_ids else str(self.start_time)


async def catch_up_organizations(http: httpx.AsyncClient, cursor: str | None) -> AsyncIterator[CatchUpPage]:
    """Yield exported organizations changed since ``cursor``, oldest first, a page at a time.

    ``GET /api/v2/incremental/organizations?start_time=<unix>`` answers
    ``{"organizations": [...], "end_time": 1700000123, "next_page": "...", "count": 1000,
    "end_of_stream": false}``; the next page starts at ``end_time``. Zendesk allows 10 export
    requests a minute: a 429 ends the walk with RateLimitedError, and the pipeline resumes from
    the cursor of the last page it stored.
    """
    position = ExportCursor.parse(cursor)
    while True:
        with transport_errors("incremental organization export"):
            response = await http.get(f"{API}/incremental/organizations", params={"start_time": position.start_time})
        if response.status_code != 200:
            raise error_from_response(response, "incremental organization export")
        try:
            body = response.json()
        except ValueError:
            raise TransientError("Zendesk export answered 200 with a body that is not JSON",
                                 code="bad_answer") from None
        organizations = body.get("organizations") if isinstance(body, dict) else None
        if not isinstance(organizations, list):
            raise DataQualityError("Zendesk export answered without an organizations list",
                                   code="field_missing", field="organizations")
        end_time = body.get("end_time")
        if not isinstance(end_time, int) or isinstance(end_time, bool):
            # an empty export may omit end_time: nothing changed since start_time
            end_time = position.start_time
        fresh = [org for org in organizations
                 if not (_epoch(org) == position.start_time and str(org.get("id")) in position.seen_ids)]
        at_end = frozenset(str(org.get("id")) for org in organizations if _epoch(org) == end_time)
        carried = position.seen_ids if end_time == position.start_time else frozenset()
        following = ExportCursor(end_time, at_end | carried)
        end_of_stream = bool(body.get("end_of_stream"))
        if not fresh and following == position and not end_of_stream:
            # a full page of one second's records, all seen: asking again would loop forever
            raise TransientError(f"Zendesk export is stuck at start_time={position.start_time}",
                                 code="export_stalled")
        yield CatchUpPage(events=[export_event(org) for org in fresh], cursor=str(following))
        if end_of_stream:
            return
        position = following


def _epoch(organization: Mapping[str, Any]) -> int | None:
    updated = organization.get("updated_at")
    if not isinstance(updated, str):
        return None
    return int(mapping.parse_time(updated, "exported organization").timestamp())
