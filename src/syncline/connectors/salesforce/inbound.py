"""Salesforce inbound: Change Data Capture through a signed relay, Outbound Messages, catch-up.

**Change Data Capture.** Change events reach subscribers over the Pub/Sub API (gRPC) or CometD
streaming, not as webhooks. A relay (a small subscriber process, or the sandbox) posts each
event to ``POST /v1/webhooks/{connection}`` as the JSON it decodes to::

    {"schema": "IeRuaY6cbI_HsV8Rv1Mc5g",
     "payload": {"ChangeEventHeader": {"entityName": "Opportunity", "recordIds": ["0065g00000XyZ1AAAR"],
                                       "changeType": "UPDATE", "changedFields": ["StageName", "LastModifiedDate"],
                                       "changeOrigin": "com/salesforce/api/rest/61.0;client=syncline",
                                       "transactionKey": "0002a1b2-...", "sequenceNumber": 1,
                                       "commitTimestamp": 1732370000000, "commitNumber": 10850, "commitUser": "005..."},
                 "StageName": "Closed Won", "AccountId": "0015g00000AbCdEAAA", "Name": "Acme renewal", ...},
     "event": {"replayId": 4711}}

signed with ``X-Syncline-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`` under
the connection's ``secrets.webhook_secret``; signatures older than 300 s are refused.

Update events carry only the changed fields. Syncline maps whole objects, so the org must
enrich the change events of the channel with the fields it reads (``Name``, ``AccountId``,
``StageName``, ``CloseDate``, ``Amount``, ``CurrencyIsoCode``, ``Syncline_Id__c``, ...);
a field that is absent reads as empty.

Decoding: ``CREATE`` → ``<type>.created``; ``UPDATE``/``UNDELETE`` → ``<type>.updated``;
``DELETE`` of an Account → ``account.deleted``. An Opportunity event that sets ``StageName`` to
the closed-won (closed-lost) stage yields ``opportunity.closed_won`` (``closed_lost``) *after*
``opportunity.updated``/``created``, so routes that sync every change and the onboarding flow
both see it. Events whose ``changeOrigin`` names Syncline's client id (``client=syncline``,
option ``call_options_client``) are Syncline's own writes and decode to ``[]``: no echo loops. Gap events
(``GAP_*``) carry no fields and decode to ``[]``; catch-up fetches what they stand for.
Event id: ``tx:<transactionKey>/<sequenceNumber>`` (the change itself, whichever channel
relayed it), or ``replay:<entity>/<replayId>`` when a relay drops the header's key.

**Outbound Messages.** A workflow rule posts SOAP to the same endpoint::

    <soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" ...>
     <soapenv:Body><notifications xmlns="http://soap.sforce.com/2005/09/outbound">
      <OrganizationId>00D5g000004Ej6JEAS</OrganizationId><ActionId>04k5g000000KzBXAA0</ActionId>
      <SessionId xsi:nil="true"/><EnterpriseUrl>...</EnterpriseUrl><PartnerUrl>...</PartnerUrl>
      <Notification><Id>04l5g00000B5ChdAAF</Id>
       <sObject xsi:type="sf:Opportunity" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
        <sf:Id>0065g00000XyZ1AAAR</sf:Id><sf:StageName>Closed Won</sf:StageName>...</sObject>
      </Notification></notifications></soapenv:Body></soapenv:Envelope>

Salesforce cannot sign Outbound Messages, and the endpoint URL (which could carry a secret)
is not visible to the connector, so a message is accepted when its ``OrganizationId`` is the
connection's ``options.organization_id`` (and its ``ActionId`` is in
``options.outbound_message_action_ids`` when that list is set). That only stops mistakes, not
forgeries: put the endpoint behind TLS client-certificate checks for Salesforce's certificate
(or an IP allow-list) in production. The answer is the ``notificationsResponse`` Ack envelope,
sent only after the message is stored. Each Notification decodes to ``<type>.updated`` (or
``opportunity.closed_won``/``closed_lost`` for a closed deal); event id
``om:<Notification Id>``, one Notification per message being the usual case.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus
from xml.etree import ElementTree

import httpx

from syncline.canonical import CloudEvent, make_event
from syncline.canonical.objects import OpportunityStage
from syncline.connectors._signatures import TimestampedHmac
from syncline.connectors.base import CatchUpPage, Identity
from syncline.connectors.salesforce import mapping
from syncline.connectors.salesforce.client import API_VERSION, ApiBudget, data_path
from syncline.connectors.salesforce.errors import error_from_response, transport_errors
from syncline.errors import DataQualityError, SignatureError

SIGNATURE_HEADER = "x-syncline-signature"
SOAP_ENVELOPE = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
ACK_ENVELOPE = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
    b"<soapenv:Body><notificationsResponse xmlns=\"http://soap.sforce.com/2005/09/outbound\">"
    b"<Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"
)
#: Key of the parsed form of an Outbound Message (see :func:`parse_outbound_message`).
OUTBOUND_MESSAGE = "outboundMessage"
#: Entities Syncline decodes, with their canonical object type.
ENTITIES: Mapping[str, str] = {"Account": "account", "Contact": "contact", "Opportunity": "opportunity"}
#: Fields read by catch-up, per entity (compound fields are queried through their parts).
CATCH_UP_FIELDS: Mapping[str, tuple[str, ...]] = {
    "Account": ("Name", "Phone", "BillingStreet", "BillingCity", "BillingState", "BillingPostalCode",
                "BillingCountry"),
    "Contact": ("FirstName", "LastName", "Email", "AccountId"),
    "Opportunity": ("Name", "StageName", "CloseDate", "Amount", "AccountId"),
}


# -- authenticity -----------------------------------------------------------------------------
class RelaySignature(TimestampedHmac):
    """Check or produce the relay's ``X-Syncline-Signature: t=<ts>,v1=<hex>`` header (Stripe's scheme)."""

    def __init__(self, secret: str, tolerance_seconds: float = 300) -> None:
        super().__init__(secret, SIGNATURE_HEADER, "X-Syncline-Signature", tolerance_seconds)


def verify_outbound_message(message: Mapping[str, Any], organization_id: str | None,
                            action_ids: Sequence[str]) -> None:
    """Raise SignatureError unless the message comes from the configured org (and action)."""
    if not organization_id:
        raise SignatureError("Outbound Messages need options.organization_id on the connection",
                             code="signature_unconfigured")
    # Salesforce shows 15- and 18-character forms of the same id; the first 15 are the id.
    if str(message.get("organizationId", ""))[:15] != organization_id[:15]:
        raise SignatureError("Outbound Message comes from another Salesforce org", code="signature_mismatch")
    if action_ids and str(message.get("actionId", ""))[:15] not in {action[:15] for action in action_ids}:
        raise SignatureError("Outbound Message comes from an action that is not allowed",
                             code="signature_mismatch")


def is_soap(body: bytes) -> bool:
    """Return True when ``body`` is XML (an Outbound Message) rather than relay JSON."""
    return body.lstrip()[:1] == b"<"


def parse_outbound_message(body: bytes) -> dict[str, Any]:
    """Return ``{"outboundMessage": {organizationId, actionId, notifications: [{id, entity, fields}]}}``.

    DTDs and entity declarations are refused before parsing: Salesforce never sends them, and
    they are how XML bombs and external-entity reads arrive.
    """
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise DataQualityError("Outbound Message contains a DTD or entity declaration", code="xml_refused")
    try:
        root = ElementTree.fromstring(body)  # noqa: S314  (DTDs refused above; expat resolves no external entities)
    except ElementTree.ParseError as exc:
        raise DataQualityError(f"Outbound Message is not well-formed XML: {exc}", code="xml_invalid") from None
    notifications = root.find(f"{{{SOAP_ENVELOPE}}}Body/{{{OUTBOUND_NS}}}notifications")
    if notifications is None:
        raise DataQualityError("SOAP body has no notifications element", code="not_an_outbound_message")
    items: list[dict[str, Any]] = []
    for notification in notifications.findall(f"{{{OUTBOUND_NS}}}Notification"):
        sobject = notification.find(f"{{{OUTBOUND_NS}}}sObject")
        notification_id = notification.findtext(f"{{{OUTBOUND_NS}}}Id")
        if sobject is None or not notification_id:
            raise DataQualityError("Notification without Id or sObject", code="not_an_outbound_message")
        entity = sobject.get(f"{{{XSI_NS}}}type", "").rpartition(":")[2]
        fields: dict[str, Any] = {}
        for child in sobject:
            name = child.tag.rpartition("}")[2]
            nil = child.get(f"{{{XSI_NS}}}nil") == "true"
            fields[name] = None if nil else (child.text or "")
        items.append({"id": notification_id, "entity": entity, "fields": fields})
    if not items:
        raise DataQualityError("Outbound Message has no Notification", code="not_an_outbound_message")
    return {OUTBOUND_MESSAGE: {
        "organizationId": notifications.findtext(f"{{{OUTBOUND_NS}}}OrganizationId") or "",
        "actionId": notifications.findtext(f"{{{OUTBOUND_NS}}}ActionId") or "",
        "notifications": items,
    }}


# -- identity and decoding --------------------------------------------------------------------
def identify_event(payload: Any) -> Identity:
    """Return the event id and type of a relayed change event or a parsed Outbound Message."""
    if isinstance(payload, Mapping) and isinstance(payload.get(OUTBOUND_MESSAGE), Mapping):
        notifications = payload[OUTBOUND_MESSAGE].get("notifications") or []
        ids = sorted(str(item.get("id")) for item in notifications if isinstance(item, Mapping))
        entity = str(notifications[0].get("entity")) if notifications else "unknown"
        if len(ids) == 1:
            return Identity(f"om:{ids[0]}", f"outbound_message.{entity}")
        digest = hashlib.sha256(",".join(ids).encode()).hexdigest()[:32]
        return Identity(f"om:{digest}", f"outbound_message.{entity}")
    header = _change_header(payload)
    entity = str(header.get("entityName") or "")
    kind = f"{entity}ChangeEvent.{header.get('changeType')}"
    if payload.get("catchUp"):
        record_ids = header.get("recordIds") or []
        return Identity(f"catchup:{entity}/{record_ids[0] if record_ids else ''}/{payload.get('catchUp')}", kind)
    # transactionKey + sequenceNumber names the change itself, whichever channel relayed it;
    # replay ids are only unique within one channel.
    key = header.get("transactionKey")
    if key:
        return Identity(f"tx:{key}/{header.get('sequenceNumber', 0)}", kind)
    event = payload.get("event") if isinstance(payload.get("event"), Mapping) else {}
    replay = event.get("replayId")
    if replay in (None, ""):
        raise DataQualityError("change event has neither ChangeEventHeader.transactionKey nor event.replayId",
                               code="not_a_change_event", field="transactionKey")
    return Identity(f"replay:{entity}/{replay}", kind)


def own_change(change_origin: str | None, client_id: str) -> bool:
    """Return True when ``changeOrigin`` (``com/salesforce/api/rest/61.0;client=syncline``) is ours."""
    return f"client={client_id}" in (part.strip() for part in (change_origin or "").split(";"))


@dataclass(frozen=True)
class Decoder:
    """Decode change events and Outbound Messages of one connection."""

    connection: str
    options: mapping.MappingOptions
    client_id: str

    def decode(self, payload: Any) -> list[CloudEvent]:
        """Return the canonical events of one relayed change event or Outbound Message."""
        if isinstance(payload, Mapping) and isinstance(payload.get(OUTBOUND_MESSAGE), Mapping):
            return self._outbound_message(payload[OUTBOUND_MESSAGE])
        identity = identify_event(payload)
        header = _change_header(payload)
        if own_change(_optional_text(header.get("changeOrigin")), self.client_id):
            return []
        entity = str(header.get("entityName") or "")
        change = str(header.get("changeType") or "")
        object_type = ENTITIES.get(entity)
        if object_type is None or change.startswith("GAP_"):
            return []
        at, sequence = _commit_time(header)
        fields = {key: value for key, value in payload["payload"].items() if key != "ChangeEventHeader"}
        record_ids = [str(record_id) for record_id in header.get("recordIds") or []]
        if not record_ids:
            raise DataQualityError(f"{identity.event_id}: ChangeEventHeader.recordIds is empty",
                                   code="field_missing", field="recordIds")
        changed = set(header.get("changedFields") or [])
        events: list[CloudEvent] = []
        for record_id in record_ids:
            record = mapping.Record(self.connection, entity, record_id, fields, self.options)
            vendor_event_id = identity.event_id if len(record_ids) == 1 else f"{identity.event_id}/{record_id}"
            for name, data in self._events(object_type, change, record, changed):
                events.append(make_event(name, data, connection=self.connection, vendor_event_id=vendor_event_id,
                                         time=at, sequence=sequence))
        return events

    def _events(self, object_type: str, change: str, record: mapping.Record,
                changed: set[str]) -> list[tuple[str, Any]]:
        if change == "DELETE":
            return [("account.deleted", mapping.to_account(record, deleted=True))] if object_type == "account" else []
        verb = "created" if change == "CREATE" else "updated"
        if object_type == "account":
            return [(f"account.{verb}", mapping.to_account(record))]
        if object_type == "contact":
            return [(f"contact.{verb}", mapping.to_contact(record))]
        opportunity = mapping.to_opportunity(record)
        decoded: list[tuple[str, Any]] = [(f"opportunity.{verb}", opportunity)]
        if change == "CREATE" or "StageName" in changed:
            decoded.extend(_closed(opportunity))
        return decoded

    def _outbound_message(self, message: Mapping[str, Any]) -> list[CloudEvent]:
        events: list[CloudEvent] = []
        for item in message.get("notifications") or []:
            entity = str(item.get("entity"))
            object_type = ENTITIES.get(entity)
            fields = item.get("fields") or {}
            record_id = str(fields.get("Id") or "")
            if object_type is None or not record_id:
                continue
            record = mapping.Record(self.connection, entity, record_id, fields, self.options)
            at = _soap_time(fields.get("SystemModstamp") or fields.get("LastModifiedDate"))
            sequence = f"{int(at.timestamp() * 1000):020d}"
            decoded: list[tuple[str, Any]]
            if object_type == "account":
                decoded = [("account.updated", mapping.to_account(record))]
            elif object_type == "contact":
                decoded = [("contact.updated", mapping.to_contact(record))]
            else:
                opportunity = mapping.to_opportunity(record)
                decoded = _closed(opportunity) or [("opportunity.updated", opportunity)]
            events.extend(
                make_event(name, data, connection=self.connection, vendor_event_id=f"om:{item['id']}",
                           time=at, sequence=sequence)
                for name, data in decoded
            )
        return events


def _closed(opportunity: Any) -> list[tuple[str, Any]]:
    if opportunity.stage is OpportunityStage.CLOSED_WON:
        return [("opportunity.closed_won", opportunity)]
    if opportunity.stage is OpportunityStage.CLOSED_LOST:
        return [("opportunity.closed_lost", opportunity)]
    return []


# -- catch-up ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Watermark:
    modstamp: str
    record_id: str


def _cursor_text(marks: Mapping[str, _Watermark]) -> str:
    # "Account=2026-11-23T14:00:00.000Z~001..|Opportunity=..."; compact and readable in the console
    return "|".join(f"{entity}={mark.modstamp}~{mark.record_id}" for entity, mark in sorted(marks.items()))


def _parse_cursor(cursor: str | None) -> dict[str, _Watermark]:
    marks: dict[str, _Watermark] = {}
    for part in (cursor or "").split("|"):
        if not part:
            continue
        entity, _, rest = part.partition("=")
        modstamp, _, record_id = rest.partition("~")
        if entity not in CATCH_UP_FIELDS or not modstamp or not record_id:
            raise DataQualityError(f"Salesforce catch-up cursor {cursor!r} is malformed", code="cursor_unknown")
        marks[entity] = _Watermark(modstamp, record_id)
    return marks


def catch_up_query(entity: str, external_id_field: str, status_field: str, mark: _Watermark | None) -> str:
    """Return the SOQL for records of ``entity`` changed after ``mark``, oldest first.

    ``SystemModstamp`` ties are broken by ``Id`` so a page boundary inside one millisecond
    neither repeats nor skips a record.
    """
    fields = ["Id", "SystemModstamp", "CreatedDate", "LastModifiedById", external_id_field,
              *CATCH_UP_FIELDS[entity]]
    if entity == "Opportunity":
        fields.append(status_field)
    where = ""
    if mark is not None:
        where = (f" WHERE SystemModstamp > {mark.modstamp} OR "
                 f"(SystemModstamp = {mark.modstamp} AND Id > '{mark.record_id}')")
    return f"SELECT {', '.join(fields)} FROM {entity}{where} ORDER BY SystemModstamp ASC, Id ASC"


async def catch_up_events(
    http: httpx.AsyncClient, cursor: str | None, *, options: mapping.MappingOptions, budget: ApiBudget,
    batch_size: int, own_user_id: Callable[[], str | None], client_id: str,
) -> AsyncIterator[CatchUpPage]:
    """Yield change-event-shaped snapshots of records changed after ``cursor``, a query batch a page.

    Each entity is queried in turn (Account, Contact, Opportunity), oldest first within it;
    the cursor holds one watermark per entity. A snapshot carries every field it was queried
    with and lists them all as changed, so a won deal found by catch-up yields
    ``opportunity.closed_won`` (flows key on the opportunity, so a repeat is harmless). Records
    last changed by Syncline's own integration user carry ``changeOrigin`` ``client=<client_id>``
    so decode ignores them, as it does their change events.
    """
    marks = _parse_cursor(cursor)
    for entity in CATCH_UP_FIELDS:
        soql = catch_up_query(entity, options.external_id_field, options.status_field, marks.get(entity))
        url: str | None = data_path("query") + "?q=" + quote_plus(soql)
        while url is not None:
            budget.check()
            with transport_errors(f"catch-up query of {entity}"):
                response = await http.get(url, headers={"Sforce-Query-Options": f"batchSize={batch_size}"})
            budget.observe(response)
            if response.status_code != 200:
                raise error_from_response(response, what=f"catch-up query of {entity}")
            body = response.json()
            records = body.get("records") if isinstance(body, Mapping) else None
            if not isinstance(records, list):
                raise DataQualityError("Salesforce query answered without records", code="field_missing")
            user = own_user_id()
            if records:
                last = records[-1]
                marks[entity] = _Watermark(_soql_time(str(last["SystemModstamp"])), str(last["Id"]))
                yield CatchUpPage(events=[_snapshot(entity, record, user, client_id) for record in records],
                                  cursor=_cursor_text(marks))
            next_url = body.get("nextRecordsUrl")
            url = str(next_url) if next_url and not body.get("done", True) else None


def _snapshot(entity: str, record: Mapping[str, Any], user_id: str | None, client_id: str) -> dict[str, Any]:
    fields = {key: value for key, value in record.items() if key != "attributes"}
    modstamp = str(record.get("SystemModstamp"))
    at = _sf_time(modstamp)
    ours = user_id is not None and record.get("LastModifiedById") == user_id
    header = {
        "entityName": entity,
        "recordIds": [str(record.get("Id"))],
        "changeType": "CREATE" if record.get("CreatedDate") == modstamp else "UPDATE",
        "changedFields": sorted(fields),
        "changeOrigin": f"com/salesforce/api/rest/{API_VERSION[1:]};client={client_id}" if ours else "",
        "transactionKey": f"catchup/{record.get('Id')}/{modstamp}",
        "sequenceNumber": 0,
        "commitTimestamp": int(at.timestamp() * 1000),
    }
    return {"schema": "catch-up", "catchUp": modstamp, "payload": {"ChangeEventHeader": header, **fields},
            "event": {"replayId": None}}


# -- small pieces -----------------------------------------------------------------------------
def _change_header(payload: Any) -> Mapping[str, Any]:
    body = payload.get("payload") if isinstance(payload, Mapping) else None
    header = body.get("ChangeEventHeader") if isinstance(body, Mapping) else None
    if not isinstance(header, Mapping):
        raise DataQualityError("payload is neither a relayed change event (payload.ChangeEventHeader) nor an "
                               "Outbound Message", code="not_a_change_event", field="payload.ChangeEventHeader")
    return header


def _commit_time(header: Mapping[str, Any]) -> tuple[datetime, str]:
    """Return the commit time and the CloudEvents sequence (commit milliseconds) of a change."""
    value = header.get("commitTimestamp")
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataQualityError("ChangeEventHeader.commitTimestamp must be milliseconds since the epoch",
                               code="field_invalid", field="commitTimestamp")
    return datetime.fromtimestamp(value / 1000, tz=UTC), f"{value:020d}"


def _sf_time(value: str) -> datetime:
    """Parse Salesforce's ``2026-11-23T14:00:00.000+0000`` (or ``...Z``)."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise DataQualityError(f"{value!r} is not a Salesforce datetime", code="field_invalid") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _soql_time(value: str) -> str:
    """Return a SOQL datetime literal in UTC with milliseconds: ``2026-11-23T14:00:00.000Z``."""
    moment = _sf_time(value).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _soap_time(value: Any) -> datetime:
    return _sf_time(value) if isinstance(value, str) and value else datetime.fromtimestamp(0, tz=UTC)


def _optional_text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
