"""A stateful, in-memory emulator of HubSpot's CRM v3 API, for tests and the demo.

It speaks HubSpot's wire format where Syncline relies on it:

* ``POST /crm/v3/objects/{type}/batch/upsert`` by a unique property (``200``, or ``207`` with
  per-input ``errors`` naming ``context.ids``), ``batch/update``, ``batch/read``, ``search``
  (filters, ascending/descending sorts, ``after`` paging), ``GET /crm/v3/objects/{type}/{id}``;
  deals answer under ``0-3`` and ``deals``;
* ``POST /crm/v4/associations/{from}/{to}/batch/associate/default`` and ``.../batch/read``;
* error bodies ``{"status": "error", "message", "correlationId", "category", "errors"}``;
  bearer-token checks (401 ``INVALID_AUTHENTICATION``); unique values (409 ``CONFLICT`` when a
  write would give a second record the same unique value); invalid emails and numbers
  (``VALIDATION_ERROR``);
* the rolling ten-second limit (429 ``RATE_LIMITS`` / ``TEN_SECONDLY_ROLLING`` without
  Retry-After, and the ``X-HubSpot-RateLimit-*`` headers on every answer) and the search
  limit of 5 requests per second;
* signed webhooks: with ``webhook_url`` set, every change is POSTed there as HubSpot does
  (an array of ``<object>.creation`` / ``<object>.propertyChange`` events, signed with
  ``X-HubSpot-Signature-v3`` under ``client_secret``, ``changeSource: INTEGRATION`` and
  ``sourceId`` = ``app_id`` for writes through the API).

Tests reach inside through :meth:`HubSpotSandbox.inject` (fail the next request),
:meth:`records`, :meth:`find`, :meth:`touch` and :attr:`requests` (every API request seen,
for checking it against HubSpot's OpenAPI documents). Every request runs on the server's event
loop, so plain dicts need no lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import httpx
import orjson
from fastapi import FastAPI, Request, Response

from syncline.connectors.hubspot.client import SignatureV3
from syncline.sandbox.faults import Fault, Faults

#: URL segment → object name (deals answer under both their name and their type id).
SEGMENTS = {"companies": "companies", "contacts": "contacts", "deals": "deals", "0-3": "deals",
            "line_items": "line_items", "products": "products", "quotes": "quotes"}
#: Object name → the object type used in webhook subscription types.
WEBHOOK_TYPES = {"companies": "company", "contacts": "contact", "deals": "deal", "line_items": "line_item",
                 "products": "product", "quotes": "quote"}
NUMERIC = {"amount", "price", "quantity"}
DEAL_STAGES = {"appointmentscheduled", "qualifiedtobuy", "presentationscheduled", "decisionmakerboughtin",
               "contractsent", "closedwon", "closedlost"}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
FaultKind = Literal["rate_limit", "server_error", "auth"]


@dataclass
class _Injected:
    kind: FaultKind
    retry_after: float | None = None


@dataclass
class RecordedRequest:
    """One API request the sandbox received, as it came over the wire."""

    method: str
    url: str
    path: str
    headers: dict[str, str]
    body: bytes


class _Refused(Exception):
    """A HubSpot error answer raised inside a handler."""

    def __init__(self, status: int, category: str, message: str, *, sub: str | None = None,
                 ids: list[str] | None = None) -> None:
        super().__init__(message)
        self.status, self.category, self.message, self.sub, self.ids = status, category, message, sub, ids

    def standard(self) -> dict[str, Any]:
        """Return this refusal as a batch ``StandardError``."""
        return {"status": "error", "category": self.category, "message": self.message,
                "context": {"ids": self.ids or []}, "links": {},
                "errors": [{"message": self.message, **({"code": self.sub} if self.sub else {})}]}


def error_response(status: int, category: str, message: str, *, sub: str | None = None,
                   headers: Mapping[str, str] | None = None, **extra: Any) -> Response:
    """Return a HubSpot error answer."""
    body: dict[str, Any] = {"status": "error", "message": message, "correlationId": str(uuid.uuid4()),
                            "category": category, **extra}
    if sub:
        body["errors"] = [{"message": message, "code": sub}]
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


@dataclass
class _Record:
    id: str
    properties: dict[str, str]
    created_ms: int
    updated_ms: int
    #: Contacts call their last-modified property ``lastmodifieddate``; every other object
    #: ``hs_lastmodifieddate``.
    modified_property: str = "hs_lastmodifieddate"

    def public(self, names: list[str] | None = None) -> dict[str, Any]:
        props = self.properties if names is None else {k: v for k, v in self.properties.items() if k in names}
        props = {**props, "hs_object_id": self.id, "createdate": _iso(self.created_ms),
                 self.modified_property: _iso(self.updated_ms)}
        return {"id": self.id, "properties": props, "createdAt": _iso(self.created_ms),
                "updatedAt": _iso(self.updated_ms), "archived": False}


@dataclass
class HubSpotSandbox:
    """An in-memory HubSpot portal behind a FastAPI ``app``; use with ``ServerThread``.

    ``access_token`` is the private app token it accepts; ``burst_limit`` requests per
    ``burst_window_seconds`` (HubSpot: 100 or 190 per 10 s); ``unique_properties`` are the
    properties whose values may belong to one record per object type.
    """

    access_token: str = "pat-sandbox"  # noqa: S105 - the sandbox's own fake token
    portal_id: int = 62515
    app_id: int = 1160452
    client_secret: str = "sandbox-client-secret"  # noqa: S105 - the sandbox's own fake secret
    webhook_url: str | None = None
    burst_limit: int = 100
    burst_window_seconds: float = 10.0
    search_limit_per_second: int = 5
    unique_properties: tuple[str, ...] = ("syncline_id",)
    faults: Faults | None = None
    #: The latest API requests, as they arrived (bounded, so a long demo run does not grow it forever).
    requests: deque[RecordedRequest] = field(default_factory=lambda: deque(maxlen=10_000))
    sent_webhooks: list[list[dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._records: dict[str, dict[str, _Record]] = {name: {} for name in WEBHOOK_TYPES}
        self._associations: set[tuple[str, str, str, str]] = set()
        self._ids = itertools.count(1001)
        self._events = itertools.count(1)
        self._clock = 0
        self._burst: deque[float] = deque()
        self._searches: deque[float] = deque()
        self._injected: deque[_Injected] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.over_limit = 0
        self.app = self._build_app()

    # -- test hooks -------------------------------------------------------------------------
    def inject(self, kind: FaultKind, *, retry_after: float | None = None) -> None:
        """Make the next API request fail: 429 (with Retry-After if given), 502, or 401."""
        self._injected.append(_Injected(kind, retry_after))

    def reset(self) -> None:
        """Forget every record, association, request, fault and limit window."""
        for records in self._records.values():
            records.clear()
        self._associations.clear()
        self.requests.clear()
        self.sent_webhooks.clear()
        self._burst.clear()
        self._searches.clear()
        self._injected.clear()
        self.over_limit = 0

    def records(self, object_name: str) -> list[dict[str, Any]]:
        """Return every record of an object type as the API shows it."""
        return [record.public() for record in self._records[object_name].values()]

    def find(self, object_name: str, value: str, id_property: str = "syncline_id") -> dict[str, Any] | None:
        """Return the record whose unique property holds ``value``, or None."""
        record = self._by_unique(object_name, id_property, value)
        return None if record is None else record.public()

    def associated(self, from_object: str, from_id: str, to_object: str) -> list[str]:
        """Return ids of ``to_object`` records associated with one record."""
        return sorted(b_id for a, a_id, b, b_id in self._associations
                      if a == from_object and a_id == from_id and b == to_object)

    def create(self, object_name: str, properties: Mapping[str, str]) -> str:
        """Create a record as a HubSpot user would (no API call, no rate limit); return its id."""
        record = self._insert(object_name, dict(properties))
        self._emit([self._event(object_name, record.id, "creation", None, None, source="CRM_UI")])
        return record.id

    def touch(self, object_name: str, record_id: str, properties: Mapping[str, str]) -> None:
        """Change a record as a HubSpot user would (its modification time moves forward)."""
        record = self._records[object_name][record_id]
        record.properties.update(properties)
        record.updated_ms = self._tick()
        self._emit([self._event(object_name, record_id, "propertyChange", k, v, source="CRM_UI")
                    for k, v in properties.items()])

    def associate(self, from_object: str, from_id: str, to_object: str, to_id: str) -> None:
        """Associate two records both ways, as HubSpot does."""
        self._associations.add((from_object, from_id, to_object, to_id))
        self._associations.add((to_object, to_id, from_object, from_id))

    # -- the HTTP application -----------------------------------------------------------------
    def _build_app(self) -> FastAPI:
        @asynccontextmanager
        async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
            self._loop = asyncio.get_running_loop()
            yield
            self._loop = None
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)

        app = FastAPI(title="HubSpot sandbox", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

        @app.post("/crm/v3/objects/{segment}/batch/{action}")
        async def batch(segment: str, action: str, request: Request) -> Response:
            return await self._serve(request, lambda body: self._batch(segment, action, body))

        @app.post("/crm/v3/objects/{segment}/search")
        async def search(segment: str, request: Request) -> Response:
            return await self._serve(request, lambda body: self._search(segment, body), search=True)

        @app.get("/crm/v3/objects/{segment}/{record_id}")
        async def read(segment: str, record_id: str, request: Request) -> Response:
            return await self._serve(request, lambda _: self._read(segment, record_id))

        @app.post("/crm/v4/associations/{from_object}/{to_object}/batch/{action:path}")
        async def associations(from_object: str, to_object: str, action: str, request: Request) -> Response:
            return await self._serve(request, lambda body: self._associations_batch(from_object, to_object,
                                                                                     action, body))

        return app

    async def _serve(self, request: Request, work: Callable[[Any], tuple[int, Any]], *, search: bool = False
                     ) -> Response:
        raw = await request.body()
        self.requests.append(RecordedRequest(request.method, str(request.url), request.url.path,
                                             dict(request.headers), raw))
        if request.headers.get("authorization") != f"Bearer {self.access_token}":
            return error_response(401, "INVALID_AUTHENTICATION",
                                  "Authentication credentials not found. This API supports OAuth 2.0 authentication.")
        limited = self._limit(search)
        if limited is not None:
            return limited
        injected = self._injected.popleft() if self._injected else None
        fault = self.faults.draw() if self.faults is not None else Fault.NONE
        if self.faults is not None and self.faults.latency_seconds > 0:
            await asyncio.sleep(self.faults.latency_seconds)
        if injected is not None and injected.kind == "auth":
            return error_response(401, "INVALID_AUTHENTICATION", "The access token is expired or invalid.")
        if (injected is not None and injected.kind == "server_error") or fault is Fault.SERVER_ERROR:
            return error_response(502, "INTERNAL_ERROR", "Bad Gateway (sandbox fault)")
        if (injected is not None and injected.kind == "rate_limit") or fault is Fault.RATE_LIMITED:
            wait = injected.retry_after if injected is not None else (
                self.faults.retry_after_seconds if self.faults is not None else None)
            headers = self._limit_headers(0)
            if wait is not None:
                headers["Retry-After"] = str(int(wait)) if float(wait).is_integer() else str(wait)
            return error_response(429, "RATE_LIMITS", "You have reached your daily limit.",
                                  headers=headers, errorType="RATE_LIMIT", policyName="DAILY")
        try:
            body = orjson.loads(raw) if raw else {}
            status, answer = work(body)
        except orjson.JSONDecodeError:
            return error_response(400, "VALIDATION_ERROR", "Invalid input JSON on line 1")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # A body of the wrong shape: HubSpot answers these with a validation error too.
            return error_response(400, "VALIDATION_ERROR", f"Invalid input JSON: {type(exc).__name__} {exc}")
        except _Refused as exc:
            return error_response(exc.status, exc.category, exc.message, sub=exc.sub,
                                  headers=self._limit_headers(self._remaining()))
        if fault is Fault.TIMEOUT and self.faults is not None:
            await asyncio.sleep(self.faults.hang_seconds)
        return Response(orjson.dumps(answer), status_code=status, media_type="application/json",
                        headers=self._limit_headers(self._remaining()))

    # -- limits -------------------------------------------------------------------------------
    def _remaining(self) -> int:
        return max(0, self.burst_limit - len(self._burst))

    def _limit_headers(self, remaining: int) -> dict[str, str]:
        return {"X-HubSpot-RateLimit-Max": str(self.burst_limit), "X-HubSpot-RateLimit-Remaining": str(remaining),
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(self.burst_window_seconds * 1000))}

    def _limit(self, search: bool) -> Response | None:
        now = time.monotonic()
        if search:
            # Search has its own per-second limit and is exempt from the ten-secondly one.
            while self._searches and now - self._searches[0] >= 1.0:
                self._searches.popleft()
            if len(self._searches) >= self.search_limit_per_second:
                self.over_limit += 1
                return error_response(429, "RATE_LIMITS", "You have reached your secondly limit.",
                                      headers={"X-HubSpot-RateLimit-Interval-Milliseconds": "1000",
                                               "X-HubSpot-RateLimit-Remaining": "0"},
                                      errorType="RATE_LIMIT", policyName="SECONDLY")
            self._searches.append(now)
            return None
        while self._burst and now - self._burst[0] >= self.burst_window_seconds:
            self._burst.popleft()
        if len(self._burst) >= self.burst_limit:
            self.over_limit += 1
            return error_response(429, "RATE_LIMITS", "You have reached your ten_secondly_rolling limit.",
                                  headers=self._limit_headers(0), errorType="RATE_LIMIT",
                                  policyName="TEN_SECONDLY_ROLLING")
        self._burst.append(now)
        return None

    # -- objects ------------------------------------------------------------------------------
    def _object(self, segment: str) -> str:
        name = SEGMENTS.get(segment)
        if name is None:
            raise _Refused(400, "VALIDATION_ERROR", f"Unable to infer object type from: {segment}")
        return name

    def _tick(self) -> int:
        # Strictly increasing: two changes never share a modification time, so sorting is total.
        self._clock = max(int(time.time() * 1000), self._clock + 1)
        return self._clock

    def _by_unique(self, object_name: str, prop: str, value: str) -> _Record | None:
        return next((r for r in self._records[object_name].values() if r.properties.get(prop) == value), None)

    def _insert(self, object_name: str, properties: dict[str, str]) -> _Record:
        now = self._tick()
        modified = "lastmodifieddate" if object_name == "contacts" else "hs_lastmodifieddate"
        record = _Record(str(next(self._ids)), properties, now, now, modified)
        self._records[object_name][record.id] = record
        return record

    def _validate(self, object_name: str, key: str, properties: Mapping[str, Any]) -> None:
        for name, value in properties.items():
            if not isinstance(value, str | int | float):
                raise _Refused(400, "VALIDATION_ERROR", f"Property values were not valid: {name}",
                               sub="INVALID_OPTION", ids=[key])
        email = properties.get("email")
        if object_name == "contacts" and email is not None and not _EMAIL.match(str(email)):
            raise _Refused(400, "VALIDATION_ERROR",
                           f'Property values were not valid: [{{"isValid":false,"message":"Email address {email} '
                           f'is invalid","error":"INVALID_EMAIL","name":"email"}}]', sub="INVALID_EMAIL", ids=[key])
        for name in NUMERIC & properties.keys():
            try:
                Decimal(str(properties[name]))
            except InvalidOperation:
                raise _Refused(400, "VALIDATION_ERROR", f"Property values were not valid: {name} "
                               f"{properties[name]!r} is not a number", sub="INVALID_DECIMAL", ids=[key]) from None
        stage = properties.get("dealstage")
        if object_name == "deals" and stage is not None and stage not in DEAL_STAGES:
            raise _Refused(400, "VALIDATION_ERROR", f"Property values were not valid: dealstage {stage!r} is not a "
                           "valid pipeline stage", sub="INVALID_OPTION", ids=[key])

    def _check_unique(self, object_name: str, record_id: str | None, properties: Mapping[str, str], key: str) -> None:
        for prop in self.unique_properties:
            value = properties.get(prop)
            other = self._by_unique(object_name, prop, value) if value is not None else None
            if other is not None and other.id != record_id:
                raise _Refused(409, "CONFLICT", f"A {object_name[:-1]} with {prop}={value} already exists "
                               f"(id {other.id})", sub="OBJECT_ALREADY_EXISTS", ids=[key])

    def _batch(self, segment: str, action: str, body: Any) -> tuple[int, Any]:
        object_name = self._object(segment)
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list):
            raise _Refused(400, "VALIDATION_ERROR", "Invalid input JSON: inputs is required")
        if len(inputs) > 100:
            raise _Refused(400, "VALIDATION_ERROR", "Batch input limit exceeded: max 100 inputs")
        started = _iso(int(time.time() * 1000))
        if action == "read":
            return self._batch_read(object_name, body, inputs, started)
        if action not in ("upsert", "update"):
            raise _Refused(404, "OBJECT_NOT_FOUND", f"Unknown batch action {action}")
        keys = [str(item.get("id")) for item in inputs if isinstance(item, dict)]
        if len(keys) != len(set(keys)):
            raise _Refused(400, "VALIDATION_ERROR", "Duplicate IDs found in batch input")
        results: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for item in inputs:
            try:
                results.append(self._write_one(object_name, action, item, events))
            except _Refused as exc:
                errors.append(exc.standard())
        self._emit(events)
        answer: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started,
                                  "completedAt": _iso(int(time.time() * 1000))}
        if errors and not results:
            first = errors[0]
            raise _Refused(404 if first["category"] == "OBJECT_NOT_FOUND" else (
                409 if first["category"] == "CONFLICT" else 400), first["category"], first["message"],
                sub=(first["errors"][0].get("code")))
        if errors:
            answer["errors"] = errors
            answer["numErrors"] = len(errors)
            return 207, answer
        return 200, answer

    def _write_one(self, object_name: str, action: str, item: Any, events: list[dict[str, Any]]) -> dict[str, Any]:
        if not isinstance(item, dict) or "id" not in item or not isinstance(item.get("properties"), dict):
            raise _Refused(400, "VALIDATION_ERROR", "Each input needs id and properties")
        key = str(item["id"])
        id_property = item.get("idProperty")
        properties = {k: str(v) for k, v in item["properties"].items()}
        self._validate(object_name, key, item["properties"])
        if id_property is None:
            record = self._records[object_name].get(key)
        elif id_property in self.unique_properties:
            record = self._by_unique(object_name, id_property, key)
        else:
            raise _Refused(400, "VALIDATION_ERROR", f"{id_property} is not a unique property", ids=[key])
        if record is None and (action == "update" or id_property is None):
            raise _Refused(404, "OBJECT_NOT_FOUND", f"Object not found. objectId are usually numeric. ({key})",
                           ids=[key])
        self._check_unique(object_name, record.id if record else None, properties, key)
        if record is None:
            assert id_property is not None
            record = self._insert(object_name, {**properties, id_property: key})
            events.append(self._event(object_name, record.id, "creation", None, None))
            created = True
        else:
            changed = {k: v for k, v in properties.items() if record.properties.get(k) != v}
            if changed:
                record.properties.update(changed)
                record.updated_ms = self._tick()
                events.extend(self._event(object_name, record.id, "propertyChange", k, v) for k, v in changed.items())
            created = False
        answer = record.public()
        if action == "upsert":
            answer["new"] = created
        return answer

    def _batch_read(self, object_name: str, body: dict[str, Any], inputs: list[Any], started: str) -> tuple[int, Any]:
        id_property = body.get("idProperty")
        names = body.get("properties") or None
        results, errors = [], []
        for item in inputs:
            key = str(item.get("id")) if isinstance(item, dict) else ""
            record = (self._by_unique(object_name, id_property, key) if id_property
                      else self._records[object_name].get(key))
            if record is None:
                errors.append(_Refused(404, "OBJECT_NOT_FOUND", f"Could not get some {object_name} objects, "
                                       "they may be deleted or not exist.", ids=[key]).standard())
            else:
                results.append(record.public([*(names or []), *( [id_property] if id_property else [])]
                                             if names else None))
        answer: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": started,
                                  "completedAt": _iso(int(time.time() * 1000))}
        if errors:
            answer["errors"], answer["numErrors"] = errors, len(errors)
            return 207, answer
        return 200, answer

    def _read(self, segment: str, record_id: str) -> tuple[int, Any]:
        record = self._records[self._object(segment)].get(record_id)
        if record is None:
            raise _Refused(404, "OBJECT_NOT_FOUND", "Object not found.  objectId are usually numeric.")
        return 200, record.public()

    def _search(self, segment: str, body: Any) -> tuple[int, Any]:
        object_name = self._object(segment)
        if not isinstance(body, dict):
            raise _Refused(400, "VALIDATION_ERROR", "Invalid input JSON")
        records = list(self._records[object_name].values())
        groups = body.get("filterGroups") or []
        if groups:
            records = [r for r in records if any(all(_matches(r, f) for f in g.get("filters") or []) for g in groups)]
        for sort in reversed(body.get("sorts") or []):
            name = sort if isinstance(sort, str) else sort.get("propertyName", "")
            descending = (isinstance(sort, str) and name.startswith("-")) or (
                isinstance(sort, dict) and sort.get("direction") == "DESCENDING")
            prop = name.lstrip("-")
            records.sort(key=functools.partial(_sort_key, name=prop), reverse=descending)
        limit = min(int(body.get("limit") or 10), 200)
        offset = int(body.get("after") or 0)
        if offset + limit > 10_000:
            raise _Refused(400, "VALIDATION_ERROR", "Search results are limited to 10,000 records")
        names = list(body.get("properties") or [])
        page = records[offset:offset + limit]
        answer: dict[str, Any] = {"total": len(records),
                                  "results": [r.public(names or None) for r in page]}
        if offset + limit < len(records):
            answer["paging"] = {"next": {"after": str(offset + limit), "link": f"?after={offset + limit}"}}
        return 200, answer

    def _associations_batch(self, from_object: str, to_object: str, action: str, body: Any) -> tuple[int, Any]:
        a, b = SEGMENTS.get(from_object), SEGMENTS.get(to_object)
        if a is None or b is None:
            raise _Refused(400, "VALIDATION_ERROR", f"Unknown object type {from_object} or {to_object}")
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, list):
            raise _Refused(400, "VALIDATION_ERROR", "Invalid input JSON: inputs is required")
        started = _iso(int(time.time() * 1000))
        results: list[dict[str, Any]] = []
        if action == "associate/default":
            for item in inputs:
                from_id, to_id = str(item["from"]["id"]), str(item["to"]["id"])
                missing = [i for i, n in ((from_id, a), (to_id, b)) if i not in self._records[n]]
                if missing:
                    raise _Refused(400, "VALIDATION_ERROR", f"No object found with id {missing[0]}",
                                   ids=missing)
                self.associate(a, from_id, b, to_id)
                results.append({"from": {"id": from_id}, "to": {"id": to_id},
                                "associationSpec": {"associationCategory": "HUBSPOT_DEFINED",
                                                    "associationTypeId": 1}})
        elif action == "read":
            for item in inputs:
                from_id = str(item["id"])
                linked = self.associated(a, from_id, b)
                if linked:
                    results.append({"from": {"id": from_id}, "to": [
                        {"toObjectId": to_id, "associationTypes": [
                            {"category": "HUBSPOT_DEFINED", "typeId": 1, "label": None}]} for to_id in linked]})
        else:
            raise _Refused(404, "OBJECT_NOT_FOUND", f"Unknown association action {action}")
        return 200, {"status": "COMPLETE", "results": results, "startedAt": started,
                     "completedAt": _iso(int(time.time() * 1000))}

    # -- webhooks -----------------------------------------------------------------------------
    def _event(self, object_name: str, record_id: str, action: str, prop: str | None, value: str | None,
               *, source: str = "INTEGRATION") -> dict[str, Any]:
        event: dict[str, Any] = {
            "eventId": next(self._events), "subscriptionId": 1000 + list(WEBHOOK_TYPES).index(object_name),
            "portalId": self.portal_id, "appId": self.app_id, "occurredAt": self._clock or self._tick(),
            "subscriptionType": f"{WEBHOOK_TYPES[object_name]}.{action}", "attemptNumber": 0,
            "objectId": int(record_id), "changeSource": source,
        }
        if source == "INTEGRATION":
            event["sourceId"] = str(self.app_id)
        if prop is not None:
            event["propertyName"], event["propertyValue"] = prop, value
        return event

    def signed(self, events: list[dict[str, Any]], *, timestamp_ms: int | None = None) -> tuple[bytes, dict[str, str]]:
        """Return the body and headers HubSpot would POST to ``webhook_url`` for ``events``."""
        if self.webhook_url is None:
            raise ValueError("the sandbox has no webhook_url")
        body = orjson.dumps(events)
        stamp = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        headers = SignatureV3(self.client_secret).headers("POST", self.webhook_url, body, stamp)
        return body, {**headers, "Content-Type": "application/json"}

    def _emit(self, events: list[dict[str, Any]]) -> None:
        if not events or self.webhook_url is None:
            return
        self.sent_webhooks.append(events)
        loop = self._loop
        if loop is None:
            return  # not serving: recorded in sent_webhooks only
        # Changes made from a test's thread are posted from the server's loop all the same.
        loop.call_soon_threadsafe(self._spawn, events)

    def _spawn(self, events: list[dict[str, Any]]) -> None:
        task = asyncio.get_running_loop().create_task(self._post(events))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, events: list[dict[str, Any]]) -> None:
        assert self.webhook_url is not None
        body, headers = self.signed(events)
        async with httpx.AsyncClient(timeout=5) as client:
            # HubSpot would retry later; the sandbox only records the attempt.
            with contextlib.suppress(httpx.HTTPError):
                await client.post(self.webhook_url, content=body, headers=headers)


def _property_ms(record: _Record, name: str) -> str | None:
    if name == record.modified_property:
        return str(record.updated_ms)
    if name == "createdate":
        return str(record.created_ms)
    if name == "hs_object_id":
        return record.id
    return record.properties.get(name)


def _sort_key(record: _Record, name: str) -> tuple[int, Decimal | str]:
    value = _property_ms(record, name)
    if value is None:
        return (1, "")
    try:
        return (0, Decimal(value))
    except InvalidOperation:
        return (0, value)


def _matches(record: _Record, flt: Mapping[str, Any]) -> bool:
    value = _property_ms(record, str(flt.get("propertyName")))
    operator = flt.get("operator")
    if operator == "HAS_PROPERTY":
        return value is not None
    if operator == "NOT_HAS_PROPERTY":
        return value is None
    if value is None:
        return False
    wanted = str(flt.get("value"))
    if operator == "EQ":
        return value == wanted
    if operator == "NEQ":
        return value != wanted
    if operator == "IN":
        return value in [str(v) for v in flt.get("values") or []]
    try:
        left, right = Decimal(value), Decimal(wanted)
    except InvalidOperation:
        return False
    return {"GT": left > right, "GTE": left >= right, "LT": left < right, "LTE": left <= right}.get(str(operator),
                                                                                                  False)
