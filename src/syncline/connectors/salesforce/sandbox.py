"""A stateful, in-memory emulator of a Salesforce org's REST API, for tests and the demo.

It speaks Salesforce's wire format where Syncline relies on it:

* ``POST /services/oauth2/token``: client credentials and JWT bearer (RS256, checked against
  ``jwt_public_key`` when given) grants; ``400 invalid_client`` / ``invalid_grant`` refusals;
* ``PATCH|GET /services/data/v61.0/sobjects/<Object>/<ExtIdField>/<value>``: upsert (``201``
  created, ``200`` updated, ``300`` with the matching URLs when the external id is not unique,
  ``?updateOnly=true`` → ``404 NOT_FOUND``), lookups by external id in bodies
  (``{"Account": {"Syncline_Id__c": "..."}}``), required fields, unknown fields, string lengths,
  one validation rule (``Amount`` may not be negative), error lists ``[{"message", "errorCode",
  "fields"}]``;
* ``POST /services/data/v61.0/sobjects/<Object>`` (plain create: the external id is not a
  unique index here, so duplicates can be made on purpose) and ``GET .../sobjects/<Object>/<Id>``;
* ``PATCH /services/data/v61.0/composite/sobjects/<Object>/<ExtIdField>``: sObject Collections
  upsert, ``allOrNone`` honoured (rolled back, ``ALL_OR_NONE_OPERATION_ROLLED_BACK``);
* ``GET /services/data/v61.0/query?q=`` for the catch-up SOQL Syncline sends, paged by
  ``Sforce-Query-Options: batchSize=N`` with ``nextRecordsUrl``;
* the daily API allowance (``Sforce-Limit-Info: api-usage=n/limit``, ``403
  REQUEST_LIMIT_EXCEEDED`` once spent, refilled every ``day_seconds``);
* Change Data Capture: each API change of an Account, Contact or Opportunity becomes a change
  event (``changeOrigin`` from the caller's ``Sforce-Call-Options: client=...``; compound
  ``Name``/``BillingAddress`` fields; every field enriched), kept in :attr:`change_events` and,
  with ``webhook_url``, POSTed as a signed relay envelope (see :mod:`.inbound`);
* Outbound Messages: with ``outbound_messages={"Opportunity": url}``, each change of that
  object is POSTed as a SOAP ``notifications`` envelope; the Ack answers are recorded.

:meth:`inject` makes the next API call fail (rate limit, 503, revoked credentials) for the
conformance suite; :meth:`ui_create` / :meth:`ui_update` change records as a person in the
UI would (another user, no call-options client).

Every request runs on the server's event loop, so plain dicts and counters need no lock.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import itertools
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

import httpx
import orjson
from fastapi import FastAPI, Request, Response

from syncline.connectors._json import dumps, loads
from syncline.connectors.salesforce.client import (
    API_VERSION,
    CALL_OPTIONS_HEADER,
    CLIENT_CREDENTIALS_GRANT,
    JWT_BEARER_GRANT,
    LIMIT_HEADER,
)
from syncline.connectors.salesforce.inbound import OUTBOUND_NS, SOAP_ENVELOPE, XSI_NS, RelaySignature
from syncline.sandbox import ServerThread

DATA = f"/services/data/{API_VERSION}"
EXTERNAL_ID_FIELD = "Syncline_Id__c"
UI_USER_ID = "0055g00000UiUsrAAA"
_TEXT_LIMIT = 255
_LONG_TEXT = frozenset({"Description", "BillingStreet"})
_DATE_FIELDS = frozenset({"CloseDate", "StartDate", "ServiceDate", "SBQQ__ExpirationDate__c"})
_NUMBER_FIELDS = frozenset({"Amount", "UnitPrice", "Quantity", "ContractTerm"})


@dataclass(frozen=True)
class SObjectType:
    """What the sandbox knows of one object: id prefix, writable fields, fields required on create."""

    prefix: str
    fields: frozenset[str]
    required: frozenset[str] = frozenset()


OBJECTS: Mapping[str, SObjectType] = {
    "Account": SObjectType("001", frozenset({
        "Name", "Phone", "BillingStreet", "BillingCity", "BillingState", "BillingPostalCode", "BillingCountry",
        "CurrencyIsoCode", "Description"}), frozenset({"Name"})),
    "Contact": SObjectType("003", frozenset({"FirstName", "LastName", "Email", "AccountId"}), frozenset({"LastName"})),
    "Opportunity": SObjectType("006", frozenset({
        "Name", "StageName", "CloseDate", "Amount", "AccountId", "CurrencyIsoCode", "Syncline_Status__c",
        "Syncline_Billing_Id__c", "Syncline_ERP_Id__c"}), frozenset({"Name", "StageName", "CloseDate"})),
    "OpportunityLineItem": SObjectType("00k", frozenset({
        "OpportunityId", "PricebookEntryId", "Quantity", "UnitPrice", "Description", "ServiceDate"}),
        frozenset({"OpportunityId", "PricebookEntryId", "Quantity", "UnitPrice"})),
    "PricebookEntry": SObjectType("01u", frozenset({"Product2Id", "Pricebook2Id", "UnitPrice", "IsActive"})),
    "Contract": SObjectType("800", frozenset({"AccountId", "StartDate", "ContractTerm", "Status"}),
                            frozenset({"AccountId"})),
    "SBQQ__Quote__c": SObjectType("a0x", frozenset({
        "SBQQ__Account__c", "SBQQ__Opportunity2__c", "SBQQ__Status__c", "SBQQ__ExpirationDate__c",
        "SBQQ__Primary__c", "CurrencyIsoCode"})),
}
#: Relationship name in a body → (lookup field, object it points at).
RELATIONSHIPS: Mapping[str, tuple[str, str]] = {
    "Account": ("AccountId", "Account"),
    "Opportunity": ("OpportunityId", "Opportunity"),
    "PricebookEntry": ("PricebookEntryId", "PricebookEntry"),
    "SBQQ__Account__r": ("SBQQ__Account__c", "Account"),
    "SBQQ__Opportunity2__r": ("SBQQ__Opportunity2__c", "Opportunity"),
}
#: Objects with Change Data Capture turned on.
CDC_OBJECTS = ("Account", "Contact", "Opportunity")
_SYSTEM_FIELDS = ("Id", "CreatedDate", "CreatedById", "LastModifiedDate", "LastModifiedById", "SystemModstamp")
_CATCH_UP_SOQL = re.compile(
    r"^SELECT (?P<fields>[\w, ]+) FROM (?P<object>\w+)"
    r"(?: WHERE SystemModstamp > (?P<after>\S+) OR \(SystemModstamp = (?P<same>\S+) AND Id > '(?P<id>\w+)'\))?"
    r" ORDER BY SystemModstamp ASC, Id ASC$"
)

Fault = Literal["rate_limit", "server_error", "auth"]


class SandboxError(Exception):
    """A Salesforce error answer raised inside a handler."""

    def __init__(self, status: int, code: str, message: str, fields: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, list(fields)

    def item(self) -> dict[str, Any]:
        """Return the error as an sObject Collections result item's error."""
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}


def error_response(status: int, code: str, message: str, fields: Sequence[str] = (),
                   headers: Mapping[str, str] | None = None) -> Response:
    """Return a Salesforce REST error answer: a JSON list with one error."""
    body = [{"message": message, "errorCode": code, "fields": list(fields)}]
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


@dataclass
class _Change:
    """One committed change, turned into a change event and Outbound Messages once the call succeeds."""

    entity: str
    record_id: str
    change_type: str
    changed: list[str]
    origin: str


@dataclass
class SandboxStats:
    """Counters tests read."""

    api_calls: int = 0
    refused_over_limit: int = 0
    token_requests: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    relay_posts: int = 0
    outbound_message_posts: int = 0
    acks: list[bool] = field(default_factory=list)


class SalesforceSandbox:
    """In-memory Salesforce org behind a FastAPI ``app``; ``with SalesforceSandbox() as sf:`` serves it."""

    def __init__(
        self,
        *,
        client_id: str = "3MVG9sandbox.connected.app",
        client_secret: str = "sandbox-client-secret",  # noqa: S107  (the fake org's own test credential)
        organization_id: str = "00D5g000004Ej6JEAS",
        user_id: str = "0055g00000DnWcLAAV",
        daily_limit: int = 15000,
        day_seconds: float = 86400.0,
        query_batch_size: int = 2000,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        outbound_messages: Mapping[str, str] | None = None,
        jwt_public_key: str | None = None,
        jwt_username: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.organization_id = organization_id
        self.user_id = user_id
        self.daily_limit = daily_limit
        self.day_seconds = day_seconds
        self.query_batch_size = query_batch_size
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.outbound_messages = dict(outbound_messages or {})
        self.jwt_public_key = jwt_public_key
        self.jwt_username = jwt_username
        self.clock = clock
        #: Answer updates by external id ``204 No Content``, as API versions before 46.0 did.
        self.updates_answer_no_content = False
        self._server: ServerThread | None = None
        self._http: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._posts_in_flight = 0
        self.reset()
        self.app = self._build_app()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> SalesforceSandbox:
        """Serve the app on a free localhost port (see :attr:`url`)."""
        self._server = ServerThread(self.app).start()
        return self

    def stop(self) -> None:
        """Stop serving (pending change-event posts are abandoned)."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def url(self) -> str:
        """The base URL the sandbox serves on (the org's "My Domain")."""
        if self._server is None:
            raise RuntimeError("the sandbox is not started")
        return self._server.url

    def __enter__(self) -> SalesforceSandbox:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every record, token, counter and pending fault."""
        self.records: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in OBJECTS}
        self.change_events: list[dict[str, Any]] = []
        self.sent_outbound_messages: list[bytes] = []
        self.stats = SandboxStats()
        self._tokens: set[str] = set()
        self._ids = itertools.count(1)
        self._replay = itertools.count(1)
        self._commits = itertools.count(10_000)
        self._notifications = itertools.count(1)
        self._last_ms = 0
        self._day_start = self.clock()
        self.api_used = 0
        self._next_fault: tuple[Fault, float | None] | None = None
        self._refuse_next_token = False
        self._cursors: dict[str, list[dict[str, Any]]] = {}
        self._pending: list[_Change] = []

    # -- test controls ------------------------------------------------------------------------
    def inject(self, fault: Fault, *, retry_after: float | None = None) -> None:
        """Make the next API call fail: ``rate_limit`` (403 REQUEST_LIMIT_EXCEEDED + Retry-After),
        ``server_error`` (503 SERVER_UNAVAILABLE) or ``auth`` (every session revoked and the next
        token request refused, as when an admin resets the connected app's secret)."""
        if fault == "auth":
            self._tokens.clear()
            self._refuse_next_token = True
        else:
            self._next_fault = (fault, retry_after)

    def expire_sessions(self) -> None:
        """Invalidate every access token (the next call answers 401 INVALID_SESSION_ID)."""
        self._tokens.clear()

    def ui_create(self, entity: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Create a record as a person in the UI would (change event without a client)."""
        record = self._write(entity, None, dict(fields), user=UI_USER_ID, origin="", changes=None)
        return dict(record)

    def ui_update(self, entity: str, record_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Update a record as a person in the UI would."""
        if record_id not in self.records[entity]:
            raise KeyError(record_id)
        record = self._write(entity, record_id, dict(fields), user=UI_USER_ID, origin="", changes=None)
        return dict(record)

    def find(self, entity: str, external_id: str) -> list[dict[str, Any]]:
        """Return every record of ``entity`` whose external id field is ``external_id``."""
        return [dict(r) for r in self.records[entity].values() if r.get(EXTERNAL_ID_FIELD) == external_id]

    def outbound_message(self, entity: str, record_ids: Sequence[str]) -> bytes:
        """Return the SOAP ``notifications`` envelope Salesforce would post for these records."""
        notifications = []
        for record_id in record_ids:
            record = self.records[entity][record_id]
            values = "".join(
                f'<sf:{name} xsi:nil="true"/>' if value is None
                else f"<sf:{name}>{escape(_soap_text(value))}</sf:{name}>"
                for name, value in record.items()
            )
            notification_id = f"04l5g{next(self._notifications):013d}"
            notifications.append(
                f"<Notification><Id>{notification_id}</Id>"
                f'<sObject xsi:type="sf:{entity}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">{values}'
                f"</sObject></Notification>"
            )
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENVELOPE}" xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
            f'xmlns:xsi="{XSI_NS}"><soapenv:Body><notifications xmlns="{OUTBOUND_NS}">'
            f"<OrganizationId>{self.organization_id}</OrganizationId><ActionId>04k5g000000KzBXAA0</ActionId>"
            '<SessionId xsi:nil="true"/>'
            f"<EnterpriseUrl>https://sandbox.my.salesforce.com/services/Soap/c/{API_VERSION[1:]}/"
            f"{self.organization_id}</EnterpriseUrl>"
            f"<PartnerUrl>https://sandbox.my.salesforce.com/services/Soap/u/{API_VERSION[1:]}/"
            f"{self.organization_id}</PartnerUrl>"
            + "".join(notifications)
            + "</notifications></soapenv:Body></soapenv:Envelope>"
        ).encode()

    async def _drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def wait_for_deliveries(self, timeout: float = 5.0) -> None:
        """Block (in the test's thread) until every change event / Outbound Message post is answered."""
        deadline = time.monotonic() + timeout
        while self._posts_in_flight:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self._posts_in_flight} sandbox posts still pending")
            time.sleep(0.01)

    # -- the HTTP application -----------------------------------------------------------------
    @asynccontextmanager
    async def _lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=10) as client:
            self._http = client
            self._loop = asyncio.get_running_loop()
            try:
                yield
            finally:
                await self._drain()
                self._http = None
                self._loop = None

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="Salesforce sandbox", docs_url=None, redoc_url=None, openapi_url=None,
                      lifespan=self._lifespan)

        @app.post("/services/oauth2/token")
        async def token(request: Request) -> Response:
            return self._token(dict(parse_qsl((await request.body()).decode("utf-8", "replace"))))

        @app.patch(DATA + "/sobjects/{entity}/{field_name}/{value}")
        async def upsert(entity: str, field_name: str, value: str, request: Request) -> Response:
            return await self._api(request, lambda body: self._upsert_one(request, entity, field_name, value, body))

        @app.get(DATA + "/sobjects/{entity}/{field_name}/{value}")
        async def read_by_external_id(entity: str, field_name: str, value: str, request: Request) -> Response:
            return await self._api(request, lambda _: self._read_external(request, entity, field_name, value),
                                   read_body=False)

        @app.get(DATA + "/sobjects/{entity}/{record_id}")
        async def read(entity: str, record_id: str, request: Request) -> Response:
            return await self._api(request, lambda _: self._read(entity, record_id), read_body=False)

        @app.post(DATA + "/sobjects/{entity}")
        async def create(entity: str, request: Request) -> Response:
            return await self._api(request, lambda body: self._create(request, entity, body))

        @app.patch(DATA + "/composite/sobjects/{entity}/{field_name}")
        async def collection(entity: str, field_name: str, request: Request) -> Response:
            return await self._api(request, lambda body: self._collection(request, entity, field_name, body))

        @app.get(DATA + "/query")
        async def query(request: Request) -> Response:
            return await self._api(request, lambda _: self._query(request), read_body=False)

        @app.get(DATA + "/query/{locator}")
        async def query_more(locator: str, request: Request) -> Response:
            return await self._api(request, lambda _: self._query_more(locator), read_body=False)

        return app

    def _token(self, form: Mapping[str, str]) -> Response:
        self.stats.token_requests += 1
        grant = form.get("grant_type")
        if self._refuse_next_token:
            self._refuse_next_token = False
            return _oauth_error("invalid_client", "invalid client credentials")
        if grant == CLIENT_CREDENTIALS_GRANT:
            if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
                return _oauth_error("invalid_client", "invalid client credentials")
        elif grant == JWT_BEARER_GRANT:
            refusal = self._check_assertion(form.get("assertion", ""))
            if refusal:
                return _oauth_error("invalid_grant", refusal)
        else:
            return _oauth_error("unsupported_grant_type", "grant type not supported")
        token = f"{self.organization_id}!{secrets.token_urlsafe(24)}"
        self._tokens.add(token)
        issued = str(int(self.clock() * 1000))
        signature = base64.b64encode(hmac.new(self.client_secret.encode(), (self.url + issued).encode(),
                                              hashlib.sha256).digest()).decode()
        body = {"access_token": token, "instance_url": self.url, "token_type": "Bearer", "issued_at": issued,
                "id": f"{self.url}/id/{self.organization_id}/{self.user_id}", "signature": signature}
        return Response(orjson.dumps(body), media_type="application/json")

    def _check_assertion(self, assertion: str) -> str | None:
        """Return why a JWT bearer assertion is refused, or None."""
        if not self.jwt_public_key:
            return "the connected app has no certificate for the JWT bearer flow"
        import jwt  # the optional dependency is needed for this flow only

        try:
            claims = jwt.decode(assertion, self.jwt_public_key, algorithms=["RS256"],
                                options={"verify_aud": False, "require": ["exp", "iss", "sub", "aud"]})
        except jwt.PyJWTError as exc:
            return f"invalid assertion ({type(exc).__name__})"
        if claims.get("iss") != self.client_id:
            return "invalid client id in assertion"
        if self.jwt_username and claims.get("sub") != self.jwt_username:
            return "user hasn't approved this consumer"
        if claims.get("aud") not in (self.url, "https://login.salesforce.com", "https://test.salesforce.com"):
            return "audience is invalid"
        return None

    async def _api(self, request: Request, work: Callable[[Any], Response], *, read_body: bool = True) -> Response:
        """Govern one API call: session, faults, daily allowance, then ``work``; emit its changes."""
        # Read first: from here to the end there is no await, so calls never interleave their changes.
        raw = await request.body() if read_body else b""
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer ") or header[7:] not in self._tokens:
            return error_response(401, "INVALID_SESSION_ID", "Session expired or invalid")
        if self._next_fault is not None:
            fault, retry_after = self._next_fault
            self._next_fault = None
            self.stats.faults[fault] = self.stats.faults.get(fault, 0) + 1
            if fault == "rate_limit":
                headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else None
                return error_response(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.",
                                      headers=headers)
            return error_response(503, "SERVER_UNAVAILABLE", "Server temporarily unavailable. (sandbox fault)")
        now = self.clock()
        if now >= self._day_start + self.day_seconds:
            self._day_start, self.api_used = now, 0
        if self.api_used >= self.daily_limit:
            self.stats.refused_over_limit += 1
            return error_response(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        self.api_used += 1
        self.stats.api_calls += 1
        self._pending = []
        try:
            response = work(_parse_json(raw) if read_body else None)
        except SandboxError as exc:
            response = error_response(exc.status, exc.code, exc.message, exc.fields)
            self._pending = []
        response.headers[LIMIT_HEADER] = f"api-usage={self.api_used}/{self.daily_limit}"
        for change in self._pending:
            self._emit(change)
        self._pending = []
        return response

    # -- records ------------------------------------------------------------------------------
    def _type(self, entity: str) -> SObjectType:
        kind = OBJECTS.get(entity)
        if kind is None:
            raise SandboxError(404, "NOT_FOUND", "The requested resource does not exist")
        return kind

    def _matches(self, entity: str, field_name: str, value: str) -> list[dict[str, Any]]:
        self._type(entity)
        # Salesforce also upserts by the record's own Id ("PATCH .../sobjects/Account/Id/001...").
        if field_name not in (EXTERNAL_ID_FIELD, "Id"):
            raise SandboxError(404, "NOT_FOUND",
                               f"Provided external ID field does not exist or is not accessible: {field_name}")
        return [r for r in self.records[entity].values() if r.get(field_name) == value]

    def _url(self, entity: str, record_id: str) -> str:
        return f"{DATA}/sobjects/{entity}/{record_id}"

    def _shown(self, entity: str, record: Mapping[str, Any]) -> dict[str, Any]:
        return {"attributes": {"type": entity, "url": self._url(entity, record["Id"])}, **record}

    def _read(self, entity: str, record_id: str) -> Response:
        self._type(entity)
        record = self.records[entity].get(record_id)
        if record is None:
            raise SandboxError(404, "NOT_FOUND", "The requested resource does not exist")
        return Response(dumps(self._shown(entity, record)), media_type="application/json")

    def _read_external(self, request: Request, entity: str, field_name: str, value: str) -> Response:
        matches = self._matches(entity, field_name, value)
        if len(matches) > 1:
            return _multiple(entity, matches, self._url)
        if not matches:
            raise SandboxError(404, "NOT_FOUND", "The requested resource does not exist")
        wanted = request.query_params.get("fields")
        record = matches[0]
        if wanted:
            record = {name: record.get(name) for name in ["Id", *wanted.split(",")]}
        return Response(dumps(self._shown(entity, record)), media_type="application/json")

    def _upsert_one(self, request: Request, entity: str, field_name: str, value: str, body: Any) -> Response:
        matches = self._matches(entity, field_name, value)
        if len(matches) > 1:
            return _multiple(entity, matches, self._url)
        if not matches and request.query_params.get("updateOnly") == "true":
            raise SandboxError(404, "NOT_FOUND", "The requested resource does not exist")
        fields = _object(body)
        if field_name == EXTERNAL_ID_FIELD:
            if fields.get(EXTERNAL_ID_FIELD, value) != value:
                raise SandboxError(400, "INVALID_FIELD", f"{EXTERNAL_ID_FIELD} in the body differs from the URL",
                                   [EXTERNAL_ID_FIELD])
            fields[EXTERNAL_ID_FIELD] = value
        existing = matches[0]["Id"] if matches else None
        record = self._write(entity, existing, fields, user=self.user_id, origin=self._origin(request),
                             changes=self._pending)
        if existing and self.updates_answer_no_content:
            return Response(status_code=204)
        answer = {"id": record["Id"], "success": True, "errors": [], "created": existing is None}
        return Response(orjson.dumps(answer), status_code=200 if existing else 201, media_type="application/json")

    def _create(self, request: Request, entity: str, body: Any) -> Response:
        record = self._write(entity, None, _object(body), user=self.user_id, origin=self._origin(request),
                             changes=self._pending)
        answer = {"id": record["Id"], "success": True, "errors": []}
        return Response(orjson.dumps(answer), status_code=201, media_type="application/json")

    def _collection(self, request: Request, entity: str, field_name: str, body: Any) -> Response:
        request_body = _object(body)
        records = request_body.get("records")
        if not isinstance(records, list) or not records:
            raise SandboxError(400, "JSON_PARSER_ERROR", "records must be a non-empty list")
        if len(records) > 200:
            raise SandboxError(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than 200 records "
                                                          "into this call")
        all_or_none = bool(request_body.get("allOrNone", False))
        before = copy.deepcopy(self.records) if all_or_none else None
        results: list[dict[str, Any]] = []
        for item in records:
            try:
                fields = _object(item)
                attributes = fields.pop("attributes", None)
                if not isinstance(attributes, dict) or attributes.get("type") != entity:
                    raise SandboxError(400, "INVALID_FIELD", f"each record needs attributes.type {entity}")
                value = fields.get(field_name)
                if not isinstance(value, str) or not value:
                    raise SandboxError(400, "MISSING_ARGUMENT", f"{field_name} not specified", [field_name])
                matches = self._matches(entity, field_name, value)
                if len(matches) > 1:
                    raise SandboxError(300, "DUPLICATE_EXTERNAL_ID",
                                       f"{field_name}: more than one record found for external id field: "
                                       + str([m["Id"] for m in matches]), [field_name])
                existing = matches[0]["Id"] if matches else None
                record = self._write(entity, existing, fields, user=self.user_id, origin=self._origin(request),
                                     changes=self._pending)
                results.append({"id": record["Id"], "success": True, "errors": [], "created": existing is None})
            except SandboxError as exc:
                results.append({"success": False, "errors": [exc.item()]})
        if before is not None and any(not result["success"] for result in results):
            self.records = before
            self._pending = []
            rolled_back = {"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                           "message": "Record rolled back because not all records were valid and the request "
                                      "was using AllOrNone header", "fields": []}
            results = [result if not result["success"] else {"success": False, "errors": [rolled_back]}
                       for result in results]
        return Response(orjson.dumps(results), media_type="application/json")

    def _write(self, entity: str, record_id: str | None, fields: dict[str, Any], *, user: str, origin: str,
               changes: list[_Change] | None) -> dict[str, Any]:
        """Validate and store a create (``record_id`` None) or an update; queue its change event."""
        kind = self._type(entity)
        fields = self._resolve(fields)
        for name, value in fields.items():
            if name not in kind.fields and name != EXTERNAL_ID_FIELD:
                raise SandboxError(400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {entity}",
                                   [name])
            _check_value(name, value)
        if record_id is None:
            missing = sorted(name for name in kind.required if fields.get(name) in (None, ""))
            if missing:
                raise SandboxError(400, "REQUIRED_FIELD_MISSING", f"Required fields are missing: {missing}", missing)
        amount = fields.get("Amount")
        if isinstance(amount, int | Decimal) and amount < 0:
            raise SandboxError(400, "FIELD_CUSTOM_VALIDATION_EXCEPTION", "Amount must not be negative.", ["Amount"])
        stamp = self._stamp()
        if record_id is None:
            record_id = f"{kind.prefix}5g{next(self._ids):010d}AAA"
            record: dict[str, Any] = {"Id": record_id, "CreatedDate": stamp, "CreatedById": user}
            changed = sorted(fields)
            self.records[entity][record_id] = record
        else:
            record = self.records[entity][record_id]
            changed = sorted(name for name, value in fields.items() if record.get(name) != value)
        record.update(fields)
        record.update({"LastModifiedDate": stamp, "LastModifiedById": user, "SystemModstamp": stamp})
        change = _Change(entity, record_id, "CREATE" if record["CreatedDate"] == stamp else "UPDATE",
                         [*changed, "LastModifiedDate"], origin)
        if changes is None:
            self._emit(change)
        else:
            changes.append(change)
        return record

    def _resolve(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Replace ``{"Account": {"Syncline_Id__c": "x"}}`` by ``AccountId``, as Salesforce does."""
        resolved: dict[str, Any] = {}
        for name, value in fields.items():
            if isinstance(value, dict) and name in RELATIONSHIPS:
                lookup, target = RELATIONSHIPS[name]
                key = value.get(EXTERNAL_ID_FIELD)
                found = [r for r in self.records[target].values()
                         if key is not None and r.get(EXTERNAL_ID_FIELD) == key]
                if len(found) != 1:
                    raise SandboxError(400, "INVALID_FIELD",
                                       f"Foreign key external ID: {key} not found for field {EXTERNAL_ID_FIELD} "
                                       f"in entity {target}", [name])
                resolved[lookup] = found[0]["Id"]
            else:
                resolved[name] = value
        return resolved

    def _stamp(self) -> str:
        # Strictly increasing milliseconds, so the modstamp orders changes as they happened.
        ms = max(int(self.clock() * 1000), self._last_ms + 1)
        self._last_ms = ms
        moment = datetime.fromtimestamp(ms // 1000, tz=UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}+0000"

    def _origin(self, request: Request) -> str:
        options = request.headers.get(CALL_OPTIONS_HEADER.lower(), "")
        client = next((part.strip()[7:] for part in options.split(",") if part.strip().startswith("client=")), "")
        origin = f"com/salesforce/api/rest/{API_VERSION[1:]}"
        return f"{origin};client={client}" if client else origin

    # -- query ---------------------------------------------------------------------------------
    def _query(self, request: Request) -> Response:
        soql = request.query_params.get("q", "")
        match = _CATCH_UP_SOQL.match(soql)
        if match is None:
            raise SandboxError(400, "MALFORMED_QUERY",
                               f"the sandbox understands only Syncline's catch-up query: {soql}")
        entity = match["object"]
        self._type(entity)
        names = [name.strip() for name in match["fields"].split(",")]
        rows = sorted(self.records[entity].values(), key=lambda r: (_ms(r["SystemModstamp"]), r["Id"]))
        if match["after"]:
            after, last_id = _ms(match["after"]), match["id"]
            rows = [r for r in rows if (_ms(r["SystemModstamp"]), r["Id"]) > (after, last_id)]
        shown = [{"attributes": {"type": entity, "url": self._url(entity, r["Id"])},
                  **{name: r.get(name) for name in names}} for r in rows]
        options = request.headers.get("sforce-query-options", "")
        size = self.query_batch_size
        batch = re.search(r"batchSize=(\d+)", options)
        if batch:
            size = max(1, min(size, int(batch.group(1))))
        return self._page(f"01g{uuid.uuid4().hex[:12]}", shown, size)

    def _page(self, locator: str, rows: list[dict[str, Any]], size: int) -> Response:
        page, rest = rows[:size], rows[size:]
        body: dict[str, Any] = {"totalSize": len(rows), "done": not rest, "records": page}
        if rest:
            self._cursors[locator] = rest
            body["nextRecordsUrl"] = f"{DATA}/query/{locator}-{size}"
        return Response(dumps(body), media_type="application/json")

    def _query_more(self, locator: str) -> Response:
        key, _, size = locator.rpartition("-")
        rows = self._cursors.pop(key, None)
        if rows is None or not size.isdigit():
            raise SandboxError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(key, rows, int(size))

    # -- change events and Outbound Messages ------------------------------------------------------
    def _emit(self, change: _Change) -> None:
        record = self.records[change.entity].get(change.record_id)
        if record is None:
            return
        if change.entity in CDC_OBJECTS:
            event = self._change_event(change, record)
            self.change_events.append(event)
            if self.webhook_url and self.webhook_secret:
                body = orjson.dumps(event)
                signature = RelaySignature(self.webhook_secret).sign(body, int(time.time()))
                self._post(self.webhook_url, body, {"Content-Type": "application/json",
                                                    "X-Syncline-Signature": signature}, kind="relay")
        url = self.outbound_messages.get(change.entity)
        if url:
            body = self.outbound_message(change.entity, [change.record_id])
            self.sent_outbound_messages.append(body)
            self._post(url, body, {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}, kind="om")

    def _change_event(self, change: _Change, record: Mapping[str, Any]) -> dict[str, Any]:
        ms = _ms(record["SystemModstamp"])
        header = {
            "entityName": change.entity, "recordIds": [change.record_id], "changeType": change.change_type,
            "changedFields": [] if change.change_type == "CREATE" else change.changed,
            "changeOrigin": change.origin, "transactionKey": str(uuid.uuid4()), "sequenceNumber": 1,
            "commitTimestamp": ms, "commitNumber": next(self._commits), "commitUser": record["LastModifiedById"],
        }
        # Every field is enriched, as the channel Syncline's docs ask for; compound fields as CDC sends them.
        fields = {name: value for name, value in record.items() if name not in ("Id", "SystemModstamp")}
        if change.entity == "Contact":
            fields["Name"] = {"FirstName": fields.pop("FirstName", None), "LastName": fields.pop("LastName", None)}
        if change.entity == "Account":
            fields["BillingAddress"] = {part: fields.pop(f"Billing{part}", None)
                                        for part in ("Street", "City", "State", "PostalCode", "Country")}
        return {"schema": f"sandbox-{change.entity}-v1", "payload": {"ChangeEventHeader": header, **fields},
                "event": {"replayId": next(self._replay)}}

    def _post(self, url: str, body: bytes, headers: Mapping[str, str], *, kind: str) -> None:
        """Send in the background on the server's loop (changes made from a test thread included)."""
        loop = self._loop
        if loop is None or self._http is None:
            return
        self._posts_in_flight += 1

        def spawn() -> None:
            task = loop.create_task(self._send(url, body, headers, kind))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            spawn()
        else:
            loop.call_soon_threadsafe(spawn)

    async def _send(self, url: str, body: bytes, headers: Mapping[str, str], kind: str) -> None:
        assert self._http is not None
        try:
            response = await self._http.post(url, content=body, headers=dict(headers))
        except httpx.HTTPError:
            return
        finally:
            self._posts_in_flight -= 1
        if kind == "relay":
            self.stats.relay_posts += 1
        else:
            self.stats.outbound_message_posts += 1
            self.stats.acks.append(response.status_code == 200 and b"<Ack>true</Ack>" in response.content)


def _multiple(entity: str, matches: list[dict[str, Any]], url: Callable[[str, str], str]) -> Response:
    return Response(orjson.dumps([url(entity, m["Id"]) for m in matches]), status_code=300,
                    media_type="application/json")


def _oauth_error(error: str, description: str) -> Response:
    return Response(orjson.dumps({"error": error, "error_description": description}), status_code=400,
                    media_type="application/json")


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return {}
    try:
        return loads(raw)
    except ValueError:
        raise SandboxError(400, "JSON_PARSER_ERROR", "Unexpected character: was expecting a JSON value") from None


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise SandboxError(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of sObject from a non-object")
    return dict(body)


def _check_value(name: str, value: Any) -> None:
    if value is None:
        return
    if name in _NUMBER_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int | Decimal):
            raise SandboxError(400, "JSON_PARSER_ERROR", f"Cannot deserialize instance of double from {value!r}",
                               [name])
    elif name in _DATE_FIELDS:
        try:
            date.fromisoformat(str(value))
        except ValueError:
            raise SandboxError(400, "JSON_PARSER_ERROR", f"Cannot deserialize instance of date from {value!r}",
                               [name]) from None
    elif isinstance(value, str) and name not in _LONG_TEXT and len(value) > _TEXT_LIMIT:
        raise SandboxError(400, "STRING_TOO_LONG", f"{name}: data value too large: {value[:20]}... "
                                                   f"(max length={_TEXT_LIMIT})", [name])


def _ms(value: str) -> int:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return int(moment.timestamp() * 1000)


def _soap_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
