"""HubSpot inbound: webhook batches and catch-up snapshots → canonical events.

Two payload shapes reach :func:`identify` and :func:`decode`:

* a **webhook batch**, exactly as HubSpot POSTs it — a JSON array of events::

      [{"eventId": 3816279340, "subscriptionId": 25, "portalId": 33, "appId": 1160452,
        "occurredAt": 1732370000000, "subscriptionType": "deal.propertyChange", "attemptNumber": 0,
        "objectId": 1246965, "propertyName": "dealstage", "propertyValue": "closedwon",
        "changeSource": "CRM_UI", "sourceId": "userId:1274"}]

  One inbox row holds the whole array (HubSpot signs the array, and may batch up to 100
  events). Its identity is a hash of the sorted event keys, so HubSpot retrying the same batch
  is a duplicate. :func:`decode` emits one canonical event per element it routes.

  HubSpot webhooks carry ids and the one changed property, never the record, and the
  canonical objects need fields no webhook has (a deal's company and currency). Decoding stays
  fetch-free (it runs inside the normalizer's database transaction, where a network call does
  not belong), so each element becomes a ``record.changed`` event: a
  :class:`~syncline.canonical.objects.RecordChange` with the record's canonical id and type,
  created/updated/deleted, and the changed property and value (``dealstage`` → ``closedwon``
  for a won deal). Whole objects, and so ``opportunity.closed_won`` and the other object
  events, come from catch-up, which reads records through the search API: run it on a schedule
  where the data is needed. The trade-off: webhooks give fast, cheap notice; catch-up gives the
  data.

* a **catch-up snapshot**, one record as the search API returned it, tagged with its type::

      {"objectType": "deals", "id": "1246965", "properties": {...}, "createdAt": "...",
       "updatedAt": "2024-11-23T14:00:00.000Z",
       "associations": {"companies": [{"id": "8812", "key": "account_4f1c..."}]}}

  identified by type, id and ``updatedAt`` (one inbox row per version) and decoded into a
  complete canonical object. ``key`` is the associated record's ``syncline_id`` when Syncline
  wrote it, so references keep the canonical ids Syncline already knows.

Loop prevention: an element whose ``changeSource`` is ``INTEGRATION`` and whose ``sourceId``
(or, when HubSpot leaves it out, ``appId``) is this connection's ``options.app_id`` is Syncline's
own write echoed back, and decodes to nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import httpx
from pydantic import BaseModel

from syncline.canonical import CloudEvent, make_event
from syncline.canonical import objects as o
from syncline.canonical.events import canonical_id
from syncline.connectors.base import CatchUpPage, Identity
from syncline.connectors.hubspot import mapping
from syncline.connectors.hubspot.client import ASSOCIATION_NAMES, WEBHOOK_OBJECTS, objects_path
from syncline.connectors.hubspot.errors import error_body, error_from_response, transport_errors
from syncline.errors import DataQualityError

#: Object name → canonical kind, for the objects Syncline reads from HubSpot.
KINDS: Final[Mapping[str, str]] = {
    "companies": "account", "contacts": "contact", "deals": "opportunity", "products": "product", "quotes": "quote",
}
#: Properties catch-up asks the search API for, per object.
SEARCH_PROPERTIES: Final[Mapping[str, tuple[str, ...]]] = {
    "companies": ("name", "phone", "address", "address2", "city", "state", "zip", "country"),
    "contacts": ("firstname", "lastname", "email"),
    "deals": ("dealname", "dealstage", "amount", "deal_currency_code", "closedate", "syncline_status"),
    "products": ("name", "hs_sku"),
    "quotes": ("hs_title", "hs_status", "hs_currency", "hs_expiration_date"),
}
#: Associations catch-up reads for each object, because the canonical object needs them.
SEARCH_ASSOCIATIONS: Final[Mapping[str, tuple[str, ...]]] = {
    "contacts": ("companies",), "deals": ("companies",), "quotes": ("deals", "companies"),
}
DEFAULT_CATCH_UP_OBJECTS: Final = ("companies", "contacts", "products", "deals", "quotes")
#: HubSpot's search API refuses to page past 10,000 results of one query.
SEARCH_RESULT_CEILING: Final = 10_000
#: The last-modified property per object: contacts name it differently from every other object.
LAST_MODIFIED: Final[Mapping[str, str]] = {"contacts": "lastmodifieddate"}
DEFAULT_LAST_MODIFIED: Final = "hs_lastmodifieddate"


def last_modified(object_name: str) -> str:
    """Return the property holding the last modification time of ``object_name`` records."""
    return LAST_MODIFIED.get(object_name, DEFAULT_LAST_MODIFIED)


@dataclass(frozen=True)
class InboundOptions:
    """Per-connection inbound settings."""

    mapping: mapping.MappingOptions
    #: The app id Syncline writes as (private app id): its own changes are not re-imported.
    app_id: str | None = None
    catch_up_objects: tuple[str, ...] = DEFAULT_CATCH_UP_OBJECTS
    page_size: int = 100
    #: HubSpot's search endpoints allow 5 requests per second per account; stay under it.
    search_rate_per_second: float = 4.0


# -- identity ---------------------------------------------------------------------------------


def _is_snapshot(payload: Any) -> bool:
    return isinstance(payload, Mapping) and "objectType" in payload and "properties" in payload


def _element_key(event: Mapping[str, Any]) -> str:
    # eventId alone "is not guaranteed to be unique" (HubSpot's words): qualify it.
    return f"{event.get('subscriptionId')}/{event.get('eventId')}/{event.get('objectId')}/{event.get('occurredAt')}"


def _elements(payload: Any) -> list[Mapping[str, Any]]:
    if not isinstance(payload, list) or not payload:
        raise DataQualityError("HubSpot webhook body is not a non-empty JSON array", code="not_a_hubspot_event")
    for index, event in enumerate(payload):
        if not isinstance(event, Mapping) or "eventId" not in event or "subscriptionType" not in event:
            raise DataQualityError(f"HubSpot webhook element {index} has no eventId/subscriptionType",
                                   code="not_a_hubspot_event", field=f"[{index}]")
    return payload


def identify(payload: Any) -> Identity:
    """Return the inbox identity of a webhook batch or a catch-up snapshot."""
    if _is_snapshot(payload):
        return Identity(
            event_id=f"{payload['objectType']}/{payload.get('id')}/{payload.get('updatedAt')}",
            event_type=f"{payload['objectType']}.snapshot",
        )
    events = _elements(payload)
    keys = sorted(_element_key(event) for event in events)
    digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:40]
    kinds = {str(event["subscriptionType"]) for event in events}
    return Identity(event_id=f"batch:{digest}", event_type=kinds.pop() if len(kinds) == 1 else "batch")


# -- decoding ---------------------------------------------------------------------------------


def decode(connection: str, payload: Any, opts: InboundOptions) -> list[CloudEvent]:
    """Decode a webhook batch (a ``record.changed`` per routed element) or a catch-up snapshot (a whole object)."""
    if _is_snapshot(payload):
        return _decode_snapshot(connection, payload, opts)
    events: list[CloudEvent] = []
    for element in _elements(payload):
        events.extend(_decode_element(connection, element, opts))
    return events


def is_own_change(element: Mapping[str, Any], app_id: str | None) -> bool:
    """Return True when the element reports a change Syncline itself made (loop prevention)."""
    if app_id is None or element.get("changeSource") != "INTEGRATION":
        return False
    source = element.get("sourceId")
    writer = source if source not in (None, "") else element.get("appId")
    return str(writer) == app_id


_ACTIONS: Final[Mapping[str, o.RecordChangeKind]] = {
    "creation": o.RecordChangeKind.CREATED, "propertyChange": o.RecordChangeKind.UPDATED,
    "deletion": o.RecordChangeKind.DELETED,
}


def _decode_element(connection: str, element: Mapping[str, Any], opts: InboundOptions) -> list[CloudEvent]:
    if is_own_change(element, opts.app_id):
        return []
    subscription = str(element["subscriptionType"])
    object_type, _, action = subscription.partition(".")
    kind = KINDS.get(WEBHOOK_OBJECTS.get(object_type, ""))
    change = _ACTIONS.get(action)
    if kind is None or change is None:
        return []  # associations, merges, restores, privacy deletions: recorded, not routed
    object_id, occurred = element.get("objectId"), element.get("occurredAt")
    if object_id is None or isinstance(occurred, bool) or not isinstance(occurred, int):
        raise DataQualityError(f"HubSpot {subscription} event {element.get('eventId')} has no objectId/occurredAt",
                               code="field_missing")
    at = datetime.fromtimestamp(occurred / 1000, UTC)
    prop, value = element.get("propertyName"), element.get("propertyValue")
    notice = o.RecordChange(
        id=canonical_id(connection, kind, f"{WEBHOOK_OBJECTS[object_type]}/{object_id}"),
        source=o.SourceRef(system=connection, object_type=object_type, external_id=str(object_id)),
        record_type=kind, change=change, property_name=str(prop) if prop is not None else None,
        property_value=str(value) if value is not None else None, occurred_at=at,
    )
    return [make_event(
        "record.changed", notice, connection=connection, vendor_event_id=_element_key(element), time=at,
        correlation_id=notice.id, sequence=f"{occurred:020d}",
    )]


def _decode_snapshot(connection: str, snapshot: Mapping[str, Any], opts: InboundOptions) -> list[CloudEvent]:
    object_name = str(snapshot["objectType"])
    kind = KINDS.get(object_name)
    if kind is None:
        return []
    hubspot_id = str(snapshot.get("id"))
    props = snapshot.get("properties")
    if not isinstance(props, Mapping):
        raise DataQualityError(f"HubSpot {object_name} {hubspot_id} snapshot has no properties", code="field_missing")
    associations = snapshot.get("associations")
    linked: Mapping[str, Any] = associations if isinstance(associations, Mapping) else {}
    accounts = _linked(connection, linked, "companies", "account")
    updated = mapping.parse_time(snapshot.get("updatedAt") or props.get(last_modified(object_name)))
    created = snapshot.get("createdAt")
    fresh = created is not None and mapping.parse_time(created) == updated
    m = opts.mapping
    record: BaseModel
    if kind == "account":
        record, name = mapping.to_account(connection, hubspot_id, props, m), "account"
    elif kind == "contact":
        record, name = mapping.to_contact(connection, hubspot_id, props, accounts, m), "contact"
    elif kind == "product":
        record, name = mapping.to_product(connection, hubspot_id, props, m), "product"
    elif kind == "opportunity":
        deal = mapping.to_opportunity(connection, hubspot_id, props, accounts, m)
        record, name = deal, "opportunity"
        if deal.stage.value != "open":
            name = f"opportunity.{deal.stage.value}"
    else:
        opportunities = _linked(connection, linked, "deals", "opportunity")
        quote = mapping.to_quote(connection, hubspot_id, props, opportunities, accounts, m)
        if quote.status.value != "accepted":
            return []
        record, name = quote, "quote.accepted"
    if "." not in name:
        name = f"{name}.{'created' if fresh else 'updated'}"
    ms = int(updated.timestamp() * 1000)
    return [make_event(
        name, record, connection=connection, vendor_event_id=f"{object_name}/{hubspot_id}/{ms}", time=updated,
        sequence=f"{ms:020d}",
    )]


def _linked(connection: str, associations: Mapping[str, Any], object_name: str, kind: str) -> list[str]:
    links = associations.get(object_name) or []
    return [mapping.linked_id(connection, kind, object_name, link) for link in links if isinstance(link, Mapping)]


# -- catch-up ---------------------------------------------------------------------------------


def parse_cursor(cursor: str | None) -> dict[str, int]:
    """Return the per-object last-modified times (ms) of a cursor like ``v1;deals=1732370000000``."""
    if not cursor:
        return {}
    version, *parts = cursor.split(";")
    if version != "v1":
        raise DataQualityError(f"HubSpot catch-up cursor {cursor!r} is not one this connector wrote",
                               code="cursor_unknown")
    state: dict[str, int] = {}
    for part in parts:
        name, _, value = part.partition("=")
        if not value.isdigit():
            raise DataQualityError(f"HubSpot catch-up cursor {cursor!r} is malformed", code="cursor_unknown")
        state[name] = int(value)
    return state


def format_cursor(state: Mapping[str, int]) -> str:
    """Return the cursor text of per-object last-modified times."""
    return ";".join(["v1", *(f"{name}={state[name]}" for name in sorted(state))])


class _SearchPacer:
    """Space search calls so one connection stays under HubSpot's per-second search limit."""

    def __init__(self, rate: float) -> None:
        self.interval = 1 / rate if rate > 0 else 0.0
        self.last = 0.0

    async def wait(self) -> None:
        delay = self.last + self.interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        self.last = time.monotonic()


async def catch_up(http: httpx.AsyncClient, cursor: str | None, opts: InboundOptions) -> AsyncIterator[CatchUpPage]:
    """Yield snapshots of records modified after ``cursor``, per object type, oldest first.

    Each object type is read with ``POST /crm/v3/objects/{type}/search`` filtered on
    ``hs_lastmodifieddate GT <last seen>`` (``lastmodifieddate`` for contacts), sorted
    ascending, paged with ``after``; a query about to pass HubSpot's 10,000-result ceiling
    starts again from the last time seen. A record changed later within the very millisecond
    of the cursor is the one gap of a time cursor (webhooks still report it). Without a cursor the
    whole history of every configured object type is read (the first backfill).
    """
    state = parse_cursor(cursor)
    pacer = _SearchPacer(opts.search_rate_per_second)
    for object_name in opts.catch_up_objects:
        after = "0"
        since = state.get(object_name)
        while True:
            await pacer.wait()
            page, next_after = await _search(http, object_name, since, after, opts)
            if not page:
                break
            await _attach_associations(http, object_name, page, opts.mapping.id_property)
            newest = max(int(mapping.parse_time(item["updatedAt"]).timestamp() * 1000) for item in page)
            state[object_name] = max(state.get(object_name, 0), newest)
            yield CatchUpPage(events=page, cursor=format_cursor(state))
            if next_after is None:
                break
            if int(next_after) + opts.page_size > SEARCH_RESULT_CEILING:
                since, after = state[object_name], "0"
            else:
                after = next_after


async def _search(
    http: httpx.AsyncClient, object_name: str, since: int | None, after: str, opts: InboundOptions
) -> tuple[list[dict[str, Any]], str | None]:
    modified = last_modified(object_name)
    filters = [] if since is None else [
        {"filters": [{"propertyName": modified, "operator": "GT", "value": str(since)}]}]
    idp = opts.mapping.id_property
    body = {
        "filterGroups": filters, "sorts": [modified], "after": after, "limit": opts.page_size,
        "properties": [*SEARCH_PROPERTIES[object_name], idp, modified],
    }
    what = f"catch-up search of {object_name}"
    with transport_errors(what):
        response = await http.post(objects_path(object_name, "search"), json=body)
    if not response.is_success:
        raise error_from_response(response, what)
    answer = error_body(response)
    results = answer.get("results")
    if not isinstance(results, list):
        raise DataQualityError(f"{what}: HubSpot answered without a results list", code="field_missing")
    page = [
        {"objectType": object_name, "id": str(item["id"]), "properties": item.get("properties") or {},
         "createdAt": item.get("createdAt"), "updatedAt": item.get("updatedAt"), "archived": item.get("archived")}
        for item in results
    ]
    paging = answer.get("paging")
    following = paging.get("next") if isinstance(paging, Mapping) else None
    next_after = following.get("after") if isinstance(following, Mapping) else None
    return page, str(next_after) if next_after is not None else None


async def _attach_associations(
    http: httpx.AsyncClient, object_name: str, page: Sequence[dict[str, Any]], id_property: str
) -> None:
    """Add ``associations`` (id and unique key of each associated record) to the snapshots that need them."""
    for target in SEARCH_ASSOCIATIONS.get(object_name, ()):
        path = f"/crm/v4/associations/{ASSOCIATION_NAMES[object_name]}/{ASSOCIATION_NAMES[target]}/batch/read"
        what = f"catch-up associations {object_name}→{target}"
        with transport_errors(what):
            response = await http.post(path, json={"inputs": [{"id": item["id"]} for item in page]})
        if response.status_code not in (200, 207):
            raise error_from_response(response, what)
        linked: dict[str, list[str]] = {}
        for result in error_body(response).get("results") or []:
            source = str((result.get("from") or {}).get("id"))
            linked[source] = [str(to.get("toObjectId")) for to in result.get("to") or []]
        keys = await _unique_keys(http, target, sorted({i for ids in linked.values() for i in ids}), id_property)
        for item in page:
            item.setdefault("associations", {})[target] = [
                {"id": i, "key": keys.get(i)} for i in linked.get(item["id"], [])]


async def _unique_keys(http: httpx.AsyncClient, object_name: str, ids: Sequence[str], id_property: str
                       ) -> dict[str, str]:
    """Return the unique property value (the canonical id) of each record that has one."""
    keys: dict[str, str] = {}
    for start in range(0, len(ids), 100):
        body = {"inputs": [{"id": i} for i in ids[start:start + 100]], "properties": [id_property],
                "propertiesWithHistory": []}
        what = f"catch-up read of {object_name}"
        with transport_errors(what):
            response = await http.post(objects_path(object_name, "batch/read"), json=body)
        if response.status_code not in (200, 207):
            raise error_from_response(response, what)
        for result in error_body(response).get("results") or []:
            value = (result.get("properties") or {}).get(id_property)
            if value:
                keys[str(result["id"])] = str(value)
    return keys
