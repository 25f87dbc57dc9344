"""The Salesforce connector: upserts by external id over the REST API, change events in.

Each delivery is ``PATCH /services/data/v61.0/sobjects/<Object>/Syncline_Id__c/<canonical id>``:
Salesforce creates the record (``201``) or updates the one carrying that external id (``200``
with ``"created": false``; ``204`` before API 46.0), so a retry after a timeout or crash never
makes a second record. Batches go through sObject Collections,
``PATCH /services/data/v61.0/composite/sobjects/<Object>/Syncline_Id__c`` with up to 200
records and ``allOrNone: false``, answered item by item::

    [{"id": "0015g00000AbCdEAAA", "success": true, "errors": [], "created": true},
     {"success": false, "errors": [{"statusCode": "REQUIRED_FIELD_MISSING",
                                    "message": "Required fields are missing: [Name]", "fields": ["Name"]}]}]

Every request carries ``Sforce-Call-Options: client=syncline`` (option ``call_options_client``)
so the org's change events name Syncline as their origin and :mod:`.inbound` can drop its own
echoes.

What the org needs: a text field ``Syncline_Id__c`` marked *External ID* and *Unique* on
Account, Contact, Opportunity, OpportunityLineItem, PricebookEntry (for lines with a
``price_id``), Contract and ``SBQQ__Quote__c`` (Unique makes duplicates, and so ``300``
answers, impossible; without it the integration user needs "View All Data"); text fields
``Syncline_Status__c``, ``Syncline_Billing_Id__c`` and ``Syncline_ERP_Id__c`` on Opportunity; a
connected app with the client credentials (or JWT bearer) flow whose run-as user can edit
those objects; Change Data Capture on Account, Contact and Opportunity with the enriched fields
listed in :mod:`.inbound`. ``base_url`` must be the org's My Domain URL (the ``instance_url``
the token endpoint reports): requests go there, not to the login host.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

import httpx
import orjson
import structlog
from pydantic import ValidationError

from syncline.canonical import Account, CloudEvent
from syncline.canonical.objects import Contact, Contract, Opportunity, Quote
from syncline.connectors._json import dumps
from syncline.connectors.base import (
    CatchUpPage,
    ConnectionSettings,
    Connector,
    DeliveryResult,
    Identity,
    Limits,
    Operation,
)
from syncline.connectors.salesforce import inbound, mapping
from syncline.connectors.salesforce.client import (
    CALL_OPTIONS_HEADER,
    TOKEN_PATH,
    ApiBudget,
    ClientCredentials,
    Grant,
    JwtBearer,
    TokenAuth,
    data_path,
)
from syncline.connectors.salesforce.errors import error_for, error_from_response, first_error, transport_errors
from syncline.errors import ConfigError, DataQualityError, DeliveryError, SignatureError, SynclineError, TransientError

log = structlog.get_logger("syncline.connectors.salesforce")

#: sObject Collections take at most 200 records a call.
COLLECTION_LIMIT = 200
IDEMPOTENCY_HEADER = "X-Syncline-Idempotency-Key"
ROLLED_BACK = "ALL_OR_NONE_OPERATION_ROLLED_BACK"


class SalesforceConnector(Connector):
    """Sync accounts, contacts, opportunities (with lines), CPQ quotes and contracts with Salesforce.

    Settings: ``base_url`` (the org's My Domain URL, e.g. ``https://acme.my.salesforce.com``);
    secrets ``client_id`` plus ``client_secret`` (client credentials flow) or ``private_key``
    (PEM, JWT bearer flow, with ``options.username``), and ``webhook_secret`` for the change
    event relay. Options:

    * ``auth``: ``client_credentials`` (default) or ``jwt_bearer``; ``login_url``: token host
      and JWT audience (default ``base_url``);
    * ``call_options_client``: the ``Sforce-Call-Options`` client name that marks Syncline's
      own changes (default ``syncline``);
    * ``organization_id``, ``outbound_message_action_ids``: which Outbound Messages to accept;
    * ``api_reserve``: daily API calls left for the org's other integrations (default 1000);
      ``budget_probe_seconds``: how long to wait before trying again (default 3600);
    * ``query_batch_size`` (catch-up page size, default 2000), ``tolerance_seconds`` (relay
      signature age, default 300), and the mapping options of :class:`~.mapping.MappingOptions`.
    """

    vendor: ClassVar[str] = "salesforce"
    # Salesforce allows 25 concurrent long-running requests per org, shared with every other
    # integration; short upserts are not long-running, so 4 at a time leaves room for others.
    default_limits: ClassVar[Limits] = Limits(concurrency=4, rate_per_second=None, batch_size=COLLECTION_LIMIT,
                                              timeout_seconds=60)
    operations: ClassVar[Mapping[str, Operation]] = {
        op.name: op
        for op in [
            Operation("upsert_account", "account", "Account by external id", batchable=True),
            Operation("upsert_contact", "contact", "Contact with its Account lookup", batchable=True),
            Operation("upsert_opportunity", "opportunity", "Opportunity, then its OpportunityLineItems"),
            Operation("upsert_quote", "quote", "Salesforce CPQ quote (SBQQ__Quote__c) header"),
            Operation("upsert_contract", "contract", "Contract by external id", batchable=True),
            Operation("write_back_status", "opportunity",
                      "Syncline status and other systems' ids on an existing Opportunity"),
        ]
    }

    def __init__(self, settings: ConnectionSettings) -> None:
        super().__init__(settings)
        options = settings.options
        #: Sent as ``Sforce-Call-Options: client=<name>``; change events with it in changeOrigin are ours.
        self.call_client = str(options.get("call_options_client", "syncline"))
        self.mapping_options = mapping.MappingOptions.from_options(options)
        self.organization_id = _optional(options.get("organization_id"))
        self.action_ids = [str(action) for action in options.get("outbound_message_action_ids") or []]
        self.auth_kind = str(options.get("auth", "client_credentials"))
        if self.auth_kind not in ("client_credentials", "jwt_bearer"):
            raise ConfigError(f"connection {self.name!r}: options.auth must be client_credentials or jwt_bearer")
        self.login_url = str(options.get("login_url") or settings.base_url).rstrip("/")
        self.tolerance_seconds = _positive(options, "tolerance_seconds", 300, self.name)
        self.query_batch_size = int(_positive(options, "query_batch_size", 2000, self.name))
        reserve = options.get("api_reserve", 1000)
        if isinstance(reserve, bool) or not isinstance(reserve, int) or reserve < 0:
            raise ConfigError(f"connection {self.name!r}: options.api_reserve must be a whole number >= 0")
        self.budget = ApiBudget(
            reserve=reserve,
            probe_seconds=_positive(options, "budget_probe_seconds", 3600, self.name),
        )
        self._auth: TokenAuth | None = None

    # -- HTTP ---------------------------------------------------------------------------------
    def auth(self) -> TokenAuth:
        """Return the token cache shared by every HTTP client of this connection."""
        if self._auth is None:
            self._auth = TokenAuth(self.login_url + TOKEN_PATH, self._grant())
        return self._auth

    def _grant(self) -> Grant:
        client_id = self.settings.secret("client_id")
        if self.auth_kind == "jwt_bearer":
            username = self.settings.options.get("username")
            if not username:
                raise ConfigError(f"connection {self.name!r}: the JWT bearer flow needs options.username")
            return JwtBearer(client_id, str(username), self.login_url, self.settings.secret("private_key"))
        return ClientCredentials(client_id, self.settings.secret("client_secret"))

    def http_client(self, limits: Limits) -> httpx.AsyncClient:
        """Return the HTTP client: base client, bearer tokens, and Syncline's call-options client name."""
        client = super().http_client(limits)
        client.auth = self.auth()
        client.headers[CALL_OPTIONS_HEADER] = f"client={self.call_client}"
        return client

    # -- inbound ------------------------------------------------------------------------------
    def verify_webhook(self, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
        """Check the relay's HMAC signature, or an Outbound Message's org (see :mod:`.inbound`)."""
        if inbound.is_soap(body):
            try:
                message = inbound.parse_outbound_message(body)[inbound.OUTBOUND_MESSAGE]
            except DataQualityError as exc:
                raise SignatureError(f"cannot authenticate the Outbound Message: {exc}",
                                     code="signature_unverifiable") from None
            inbound.verify_outbound_message(message, self.organization_id, self.action_ids)
            return
        try:
            secret = self.settings.secret("webhook_secret")
        except ConfigError as exc:
            # An unconfigured relay refuses what it cannot check rather than failing the request.
            raise SignatureError(str(exc), code="signature_unconfigured") from None
        inbound.RelaySignature(secret, self.tolerance_seconds).verify(headers, body, now=now)

    def parse_body(self, body: bytes) -> Any:
        """Parse relay JSON, or an Outbound Message's SOAP into its dict form."""
        if inbound.is_soap(body):
            return inbound.parse_outbound_message(body)
        return orjson.loads(body)

    def webhook_response(self, body: bytes) -> tuple[bytes, str] | None:
        """Answer Outbound Messages with the SOAP Ack Salesforce waits for; relays get the JSON default."""
        if inbound.is_soap(body):
            return inbound.ACK_ENVELOPE, "text/xml; charset=utf-8"
        return None

    def identify(self, payload: Any) -> Identity:
        """Return the event id (replay id, transaction key or Notification Id) and type."""
        return inbound.identify_event(payload)

    def decode(self, payload: Any) -> list[CloudEvent]:
        """Decode one change event or Outbound Message; Syncline's own changes decode to ``[]``."""
        try:
            return inbound.Decoder(self.name, self.mapping_options, self.call_client).decode(payload)
        except ValidationError as exc:
            # A value Salesforce accepts but the canonical model does not (a currency code, say).
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "(record)"
            raise DataQualityError(f"Salesforce record does not fit the canonical model at {where}: "
                                   f"{first['msg']}", code="field_invalid", field=where) from None

    def catch_up(self, http: httpx.AsyncClient, cursor: str | None) -> AsyncIterator[CatchUpPage]:
        """Yield records changed after ``cursor`` through SOQL, shaped like change events."""
        auth = self.auth()
        return inbound.catch_up_events(
            http, cursor, options=self.mapping_options, budget=self.budget, batch_size=self.query_batch_size,
            own_user_id=lambda: auth.token.user_id if auth.token else None, client_id=self.call_client,
        )

    # -- outbound -----------------------------------------------------------------------------
    async def deliver(
        self, http: httpx.AsyncClient, operation: str, payload: Mapping[str, Any], *, idempotency_key: str
    ) -> DeliveryResult:
        """Apply ``operation`` to the canonical ``payload``; safe to repeat (upsert by external id).

        ``write_back_status`` takes a canonical Opportunity plus an optional ``external_ids``
        object naming the record in the other systems::

            {...Opportunity.model_dump(mode="json"), "sync_status": "active in billing and ERP",
             "external_ids": {"billing": "sub_1Q2w3E", "erp": "SO-1042"}}

        and PATCHes only ``Syncline_Status__c``, ``Syncline_Billing_Id__c`` and
        ``Syncline_ERP_Id__c`` (the ids only when given) of the existing Opportunity
        (``?updateOnly=true``: a missing Opportunity is ``DataQualityError`` ``not_found``,
        never a new record).
        """
        op = self._operation(operation, payload)
        options = self.mapping_options
        log.debug("salesforce deliver", operation=operation, idempotency_key=idempotency_key)
        if operation == "write_back_status":
            body = dict(payload)
            external_ids = body.pop("external_ids", None) or {}
            if not isinstance(external_ids, Mapping):
                raise DataQualityError("external_ids must be an object", field="external_ids")
            opportunity = mapping.parse(Opportunity, body)
            fields = mapping.write_back_fields(opportunity, external_ids, options)
            source = opportunity.source
            if source.system == self.name and source.external_id:
                # A deal that started in this org carries no Syncline id yet: address it by its
                # Salesforce Id and stamp the id, so later upserts find this record, not a new one.
                fields = {**fields, options.external_id_field: mapping.external_id(opportunity.id)}
                return await self._upsert(http, "Opportunity", mapping.external_id(source.external_id), fields,
                                          op, idempotency_key, update_only=True, by_field="Id")
            return await self._upsert(http, "Opportunity", opportunity.id, fields, op, idempotency_key,
                                      update_only=True)
        sobject, record_id, fields = self._record(op, payload)
        result = await self._upsert(http, sobject, record_id, fields, op, idempotency_key)
        if operation == "upsert_opportunity":
            opportunity = mapping.parse(Opportunity, payload)
            lines = mapping.line_item_records(opportunity, options)
            if lines:
                await self._upsert_lines(http, opportunity.id, lines, idempotency_key)
        return result

    async def deliver_batch(
        self, http: httpx.AsyncClient, operation: str, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[DeliveryResult | DeliveryError]:
        """Upsert up to 200 records a call through sObject Collections; one result or error per item.

        Operations that are not batchable (opportunities with their lines, the write-back) go
        one by one through :meth:`deliver`.
        """
        op = self.operations.get(operation)
        if op is None or not op.batchable:
            return await super().deliver_batch(http, operation, items)
        results: list[DeliveryResult | DeliveryError | None] = [None] * len(items)
        pending: list[tuple[int, dict[str, Any]]] = []
        sobject = ""
        for index, (_key, payload) in enumerate(items):
            try:
                self._operation(operation, payload)
                sobject, record_id, fields = self._record(op, payload)
                record = {"attributes": {"type": sobject}, self.mapping_options.external_id_field: record_id,
                          **fields}
                pending.append((index, record))
            except DeliveryError as exc:
                results[index] = exc
        for start in range(0, len(pending), COLLECTION_LIMIT):
            chunk = pending[start:start + COLLECTION_LIMIT]
            try:
                answers = await self._collection(http, sobject, [record for _, record in chunk],
                                                 all_or_none=False, what=f"{operation} batch")
            except DeliveryError as exc:
                for index, _ in chunk:
                    results[index] = exc
                continue
            for (index, _), answer in zip(chunk, answers, strict=True):
                results[index] = answer if isinstance(answer, DeliveryError) else DeliveryResult(
                    external_id=answer[0], object_type=op.accepts, created=answer[1])
        assert all(result is not None for result in results), "every item has a result or an error"
        return [result for result in results if result is not None]

    def _operation(self, operation: str, payload: Mapping[str, Any]) -> Operation:
        op = self.operations.get(operation)
        if op is None:
            raise SynclineError(f"salesforce has no operation {operation!r}", code="operation_unknown")
        kind = payload.get("object_type", op.accepts)
        if kind != op.accepts:
            raise DataQualityError(f"{operation} takes {op.accepts}, not {kind}", field="object_type")
        return op

    def _record(self, op: Operation, payload: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
        """Return (sObject, external id value, fields) for a single-record operation."""
        options = self.mapping_options
        if op.name == "upsert_account":
            account = mapping.parse(Account, payload)
            return "Account", mapping.external_id(account.id), mapping.account_fields(account, options)
        if op.name == "upsert_contact":
            contact = mapping.parse(Contact, payload)
            return "Contact", mapping.external_id(contact.id), mapping.contact_fields(contact, options)
        if op.name == "upsert_opportunity":
            opportunity = mapping.parse(Opportunity, payload)
            return ("Opportunity", mapping.external_id(opportunity.id),
                    mapping.opportunity_fields(opportunity, options))
        if op.name == "upsert_quote":
            quote = mapping.parse(Quote, payload)
            return options.quote_object, mapping.external_id(quote.id), mapping.quote_fields(quote, options)
        if op.name == "upsert_contract":
            contract = mapping.parse(Contract, payload)
            return "Contract", mapping.external_id(contract.id), mapping.contract_fields(contract, options)
        raise SynclineError(f"salesforce operation {op.name!r} has no record mapping", code="operation_unknown")

    async def _upsert(
        self, http: httpx.AsyncClient, sobject: str, record_id: str, fields: Mapping[str, Any], op: Operation,
        idempotency_key: str, *, update_only: bool = False, by_field: str | None = None,
    ) -> DeliveryResult:
        what = f"{op.name} {record_id}"
        path = data_path(f"sobjects/{sobject}/{by_field or self.mapping_options.external_id_field}/{record_id}")
        response = await self._send(http, "PATCH", path, fields, what, idempotency_key,
                                    params={"updateOnly": "true"} if update_only else None)
        if response.status_code == 204:
            # API versions before 46.0 answer an update with no body: read the id back.
            return DeliveryResult(await self._read_id(http, path, what), op.accepts, created=False)
        if response.status_code not in (200, 201):
            raise error_from_response(response, what=what)
        body = response.json()
        if not isinstance(body, Mapping) or not body.get("id"):
            raise TransientError(f"{what}: Salesforce answered {response.status_code} without a record id",
                                 code="salesforce_no_id", status=response.status_code)
        created = body.get("created")
        return DeliveryResult(str(body["id"]), op.accepts,
                              created=bool(created) if created is not None else response.status_code == 201)

    async def _read_id(self, http: httpx.AsyncClient, path: str, what: str) -> str:
        response = await self._send(http, "GET", path, None, what, None, params={"fields": "Id"})
        if response.status_code != 200:
            raise error_from_response(response, what=what)
        return str(response.json()["Id"])

    async def _upsert_lines(self, http: httpx.AsyncClient, opportunity_id: str, lines: list[dict[str, Any]],
                            idempotency_key: str) -> None:
        """Upsert an opportunity's lines, all or none, so a half-written deal never shows."""
        what = f"upsert_opportunity {opportunity_id} lines"
        for start in range(0, len(lines), COLLECTION_LIMIT):
            answers = await self._collection(http, "OpportunityLineItem", lines[start:start + COLLECTION_LIMIT],
                                             all_or_none=True, what=what)
            failures = [answer for answer in answers if isinstance(answer, DeliveryError)]
            # Records rolled back only because another failed say nothing; raise the cause.
            causes = [error for error in failures if error.details.get("vendor_code") != ROLLED_BACK]
            if failures:
                raise (causes or failures)[0]

    async def _collection(
        self, http: httpx.AsyncClient, sobject: str, records: list[dict[str, Any]], *, all_or_none: bool, what: str
    ) -> list[tuple[str, bool | None] | DeliveryError]:
        """PATCH one sObject Collections upsert; return (id, created) or the error per record."""
        path = data_path(f"composite/sobjects/{sobject}/{self.mapping_options.external_id_field}")
        response = await self._send(http, "PATCH", path, {"allOrNone": all_or_none, "records": records}, what, None)
        if response.status_code != 200:
            raise error_from_response(response, what=what)
        answers = response.json()
        if not isinstance(answers, list) or len(answers) != len(records):
            raise TransientError(f"{what}: Salesforce answered {len(answers) if isinstance(answers, list) else 0} "
                                 f"results for {len(records)} records", code="salesforce_bad_collection")
        results: list[tuple[str, bool | None] | DeliveryError] = []
        for record, answer in zip(records, answers, strict=True):
            label = f"{what}: {record.get(self.mapping_options.external_id_field)}"
            if isinstance(answer, Mapping) and answer.get("success") and answer.get("id"):
                created = answer.get("created")
                results.append((str(answer["id"]), bool(created) if created is not None else None))
                continue
            errors = answer.get("errors") if isinstance(answer, Mapping) else None
            code, message, fields = first_error(errors or [])
            results.append(error_for(400, code, message, fields, what=label))
        return results

    async def _send(
        self, http: httpx.AsyncClient, method: str, path: str, body: Any, what: str, idempotency_key: str | None,
        *, params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one API call inside the daily budget; no httpx exception escapes."""
        self.budget.check()
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if idempotency_key:
            headers[IDEMPOTENCY_HEADER] = idempotency_key
        with transport_errors(what):
            response = await http.request(method, path, content=None if body is None else dumps(body),
                                          headers=headers, params=params)
        self.budget.observe(response)
        return response


def _optional(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _positive(options: Mapping[str, Any], key: str, default: float, connection: str) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"connection {connection!r}: options.{key} must be a positive number")
    return float(value)
