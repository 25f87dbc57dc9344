"""A stateful, in-memory emulator of NetSuite's REST record API, for tests and the demo.

It speaks NetSuite's wire format where Syncline relies on it: upsert by external id
(``PUT .../<type>/eid:<id>`` → ``204`` + ``Location``), plain create, read by internal or
external id, error bodies with ``o:errorDetails``, OAuth 1.0a header checks, references that
must exist (``Invalid Field Value ... for the following field: entity``), the account's lists
(subsidiaries, currencies, terms, general-ledger accounts), sublist updates that append unless
``?replace=`` names the sublist, balanced journal entries, an accounting calendar with closed
periods answered over SuiteQL (``POST /services/rest/query/v1/suiteql``, see
:mod:`._sandbox_calendar`) and the account-wide concurrency limit (``429``
``SSS_REQUEST_LIMIT_EXCEEDED``).

Admin endpoints (no authentication) let tests look inside:

* ``GET /_sandbox/records?type=invoice&externalId=X`` → ``{"count": n, "records": [...]}``;
* ``GET /_sandbox/stats`` → records per type, creates, updates, requests, over_limit,
  peak_concurrency and faults injected by kind;
* ``POST /_sandbox/faults`` with ``{"timeout_rate": 0.1, ...}`` changes fault settings;
* ``POST /_sandbox/fail-next`` with ``{"fault": "rate_limit", "retry_after": 7}`` makes the
  next API request fail that way (``rate_limit``, ``server_error`` or ``auth``);
* ``POST /_sandbox/reset`` forgets every record and counter.

Every request runs on the server's event loop, so plain dicts and counters need no lock.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Annotated, Any, Literal

import httpx
import orjson
from fastapi import FastAPI, Query, Request, Response

from syncline.connectors._json import dumps, loads
from syncline.connectors.netsuite._sandbox_calendar import Period, QueryError, build_calendar, row, run_query
from syncline.connectors.netsuite.client import (
    parse_authorization,
    realm_for,
    sign,
    signature_base_string,
)
from syncline.sandbox.faults import Fault, Faults

RECORD_PATH = "/services/rest/record/v1"
SUITEQL_PATH = "/services/rest/query/v1/suiteql"
CREATED_HEADER = "X-Sandbox-Created"
RECORD_TYPES = ("customer", "salesOrder", "invoice", "customerPayment", "creditMemo", "customerRefund", "deposit",
                "journalEntry")
#: Records that post to the general ledger, so fall into an accounting period.
TRANSACTIONS = frozenset({"invoice", "customerPayment", "creditMemo", "customerRefund", "deposit", "journalEntry"})
_BY_LOWER = {name.lower(): name for name in RECORD_TYPES}
#: The sublists of each record type; keyed ones (``apply``, by ``doc``) merge lines with the same
#: key on update. (``payment`` is a sublist of a deposit but a body amount on a customer payment.)
_SUBLISTS: dict[str, tuple[str, ...]] = {
    "customer": ("addressBook",), "salesOrder": ("item",), "invoice": ("item",), "customerPayment": ("apply",),
    "creditMemo": ("item", "apply"), "customerRefund": ("apply",), "deposit": ("payment", "other", "cashBack"),
    "journalEntry": ("line",),
}
_SUBLIST_KEYS = {"apply": "doc"}
#: The sublists whose lines carry a general-ledger account.
_ACCOUNT_SUBLISTS = ("line", "other", "cashBack")

#: The account's lists, by internal id. Currencies also match by ``refName`` (the ISO code).
DEFAULT_SUBSIDIARIES = {"1": "Parent Company", "2": "Syncline GmbH", "3": "Syncline Ltd"}
DEFAULT_CURRENCIES = {"1": "USD", "2": "GBP", "3": "CAD", "4": "EUR", "5": "JPY", "6": "KWD", "7": "CHF", "8": "AUD"}
DEFAULT_TERMS = {"1": "Net 15", "2": "Net 30", "3": "Net 60", "4": "Due on receipt"}
DEFAULT_ACCOUNTS = {
    "1": "1000 Operating Bank", "2": "1010 Stripe Clearing", "4": "1200 Undeposited Funds",
    "6": "1100 Accounts Receivable", "54": "4000 Revenue", "58": "2400 Deferred Revenue",
    "67": "2200 Sales Tax Payable", "71": "6100 Merchant Fees",
}
InjectedFault = Literal["rate_limit", "server_error", "auth"]

#: Per record type: (field path, record types it may point at, required on create).
#: ``apply.items`` is a sublist: each line's ``doc`` is checked.
_REFERENCES: dict[str, list[tuple[str, tuple[str, ...], bool]]] = {
    "customer": [],
    "invoice": [("entity", ("customer",), True)],
    "creditMemo": [("entity", ("customer",), True), ("createdFrom", ("invoice",), False)],
    "customerPayment": [("customer", ("customer",), True), ("apply.items.doc", ("invoice",), False)],
    "customerRefund": [
        ("customer", ("customer",), True),
        ("apply.items.doc", ("customerPayment", "creditMemo"), False),
    ],
    "salesOrder": [("entity", ("customer",), True)],
    "deposit": [],
    "journalEntry": [],
}
_OAUTH_REQUIRED = ("oauth_consumer_key", "oauth_token", "oauth_nonce", "oauth_timestamp", "oauth_signature")
_TITLES = {
    400: ("Bad Request", "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.1"),
    401: ("Unauthorized", "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.2"),
    404: ("Not Found", "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.5"),
    429: ("Too Many Requests", "https://www.rfc-editor.org/rfc/rfc6585.html#section-4"),
    500: ("Internal Server Error", "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.6.1"),
}


class SandboxError(Exception):
    """A NetSuite error answer raised inside a handler: status, o:errorCode, detail, o:errorPath."""

    def __init__(self, status: int, code: str, detail: str, path: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.path = status, code, detail, path


def error_response(
    status: int, code: str, detail: str, path: str | None = None, headers: Mapping[str, str] | None = None
) -> Response:
    """Return a NetSuite-style error answer."""
    title, kind = _TITLES.get(status, ("Error", "about:blank"))
    item: dict[str, str] = {"detail": detail, "o:errorCode": code}
    if path is not None:
        item["o:errorPath"] = path
    body = {"type": kind, "title": title, "status": status, "o:errorDetails": [item]}
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


class NetSuiteSandbox:
    """In-memory NetSuite account behind a FastAPI ``app``.

    ``credentials`` (keys ``consumer_key``, ``consumer_secret``, ``token_id``,
    ``token_secret``) turns on full signature checks; without it only the header's shape and
    realm are checked, so any well-formed token-based request gets in.

    ``closed_periods`` holds ``YYYY-MM`` months (``YYYY-13`` for a year's adjustment period)
    and may be changed while the server runs; the calendar spans ``calendar_years``.
    """

    def __init__(
        self,
        concurrency_limit: int = 15,
        faults: Faults | None = None,
        account_id: str = "TSTDRV1",
        closed_periods: Iterable[str] = (),
        credentials: Mapping[str, str] | None = None,
        *,
        calendar_years: tuple[int, int] = (2015, 2035),
        subsidiaries: Mapping[str, str] = DEFAULT_SUBSIDIARIES,
        currencies: Mapping[str, str] = DEFAULT_CURRENCIES,
        terms: Mapping[str, str] = DEFAULT_TERMS,
        accounts: Mapping[str, str] = DEFAULT_ACCOUNTS,
    ) -> None:
        self.concurrency_limit = concurrency_limit
        self.faults = faults
        self.account_id = account_id
        self.realm = realm_for(account_id)
        self.closed_periods = set(closed_periods)
        self.credentials = dict(credentials) if credentials else None
        self.calendar: list[Period] = build_calendar(*calendar_years)
        self._periods_by_id = {period.id: period for period in self.calendar}
        self.lists: dict[str, dict[str, str]] = {
            "subsidiary": dict(subsidiaries), "currency": dict(currencies), "terms": dict(terms),
            "account": dict(accounts),
        }
        # Filled by the test thread, drained by the server's: deque appends and pops are atomic.
        self._next_failures: deque[tuple[InjectedFault, float | None]] = deque()
        # Requests in flight outlive a reset, so this counter is never reset.
        self.in_flight = 0
        self.reset()
        self.app = self._build_app()

    # -- state and accessors ------------------------------------------------------------------
    def reset(self) -> None:
        """Forget every record and counter (fault settings and requests in flight stay)."""
        self._records: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in RECORD_TYPES}
        self._by_eid: dict[str, dict[str, str]] = {name: {} for name in RECORD_TYPES}
        self._ids = itertools.count(101)
        self.creates = 0
        self.updates = 0
        self.requests = 0
        self.over_limit = 0
        self.peak_concurrency = self.in_flight
        self.fault_counts: dict[str, int] = {}

    def records(self, record_type: str) -> list[dict[str, Any]]:
        """Return every record of ``record_type`` (``{"id", "externalId", "fields"}``)."""
        return list(self._records[self._type(record_type)].values())

    def records_with_external_id(self, record_type: str, external_id: str) -> list[dict[str, Any]]:
        """Return the records of a type carrying ``external_id``; more than one would be a bug."""
        # Scan instead of using the index, so the answer proves there is no duplicate.
        return [r for r in self.records(record_type) if r["externalId"] == external_id]

    def find(self, record_type: str, external_id: str) -> dict[str, Any] | None:
        """Return the record of a type with ``external_id``, or None."""
        internal_id = self._by_eid[self._type(record_type)].get(external_id)
        return None if internal_id is None else self._records[self._type(record_type)][internal_id]

    def record(self, record_type: str, internal_id: str) -> dict[str, Any] | None:
        """Return the record of a type with ``internal_id``, or None."""
        return self._records[self._type(record_type)].get(internal_id)

    def seed(self, record_type: str, external_id: str, fields: Mapping[str, Any]) -> str:
        """Create a record directly (validated like an API write); return its internal id."""
        kind = self._type(record_type)
        if external_id in self._by_eid[kind]:
            raise ValueError(f"{kind} with external id {external_id!r} exists")
        body = loads(dumps(dict(fields)))
        self._validate(kind, body)
        return self._insert(kind, external_id, body)

    def fail_next(self, fault: InjectedFault, *, retry_after: float | None = None) -> None:
        """Make the next API request fail: 429 with Retry-After, 500, or 401 INVALID_LOGIN_ATTEMPT.

        Nothing is applied for that request; calls queue up, one failure per request.
        """
        if fault not in ("rate_limit", "server_error", "auth"):
            raise ValueError(f"unknown fault {fault!r}")
        self._next_failures.append((fault, retry_after))

    def period(self, internal_id: str) -> Period | None:
        """Return the calendar period with ``internal_id``, or None."""
        return self._periods_by_id.get(internal_id)

    def period_rows(self) -> list[dict[str, str]]:
        """Return the ``accountingperiod`` table as SuiteQL rows (closedness as of now)."""
        return [row(period, self.closed_periods) for period in self.calendar]

    def stats(self) -> dict[str, Any]:
        """Return counters: records per type, creates, updates, requests, over_limit, peaks, faults."""
        return {
            "records": {name: len(records) for name, records in self._records.items()},
            "creates": self.creates,
            "updates": self.updates,
            "requests": self.requests,
            "over_limit": self.over_limit,
            "in_flight": self.in_flight,
            "peak_concurrency": self.peak_concurrency,
            "faults": dict(self.fault_counts),
        }

    # -- the HTTP application -----------------------------------------------------------------
    def _build_app(self) -> FastAPI:
        app = FastAPI(title="NetSuite sandbox", docs_url=None, redoc_url=None, openapi_url=None)

        @app.put(RECORD_PATH + "/{record_type}/{key}")
        async def upsert(record_type: str, key: str, request: Request) -> Response:
            return await self._serve(request, lambda body: self._upsert(request, record_type, key, body))

        @app.post(RECORD_PATH + "/{record_type}")
        async def create(record_type: str, request: Request) -> Response:
            return await self._serve(request, lambda body: self._create(request, record_type, body))

        @app.get(RECORD_PATH + "/{record_type}/{key}")
        async def read(record_type: str, key: str, request: Request) -> Response:
            return await self._serve(request, lambda _: self._read(request, record_type, key), read_body=False)

        @app.post(SUITEQL_PATH)
        async def query(request: Request) -> Response:
            return await self._serve(request, lambda body: self._suiteql(request, body))

        @app.post("/_sandbox/fail-next")
        async def admin_fail_next(request: Request) -> Response:
            settings = orjson.loads(await request.body() or b"{}")
            try:
                self.fail_next(settings.get("fault"), retry_after=settings.get("retry_after"))
            except (TypeError, ValueError, AttributeError) as exc:
                return error_response(400, "INVALID_CONTENT", str(exc))
            return Response(status_code=204)

        @app.get("/_sandbox/records")
        async def admin_records(
            record_type: Annotated[str, Query(alias="type")],
            external_id: Annotated[str | None, Query(alias="externalId")] = None,
        ) -> Response:
            try:
                found = (self.records(record_type) if external_id is None
                         else self.records_with_external_id(record_type, external_id))
            except SandboxError as exc:
                return error_response(exc.status, exc.code, exc.detail)
            return Response(dumps({"count": len(found), "records": found}), media_type="application/json")

        @app.get("/_sandbox/stats")
        async def admin_stats() -> Response:
            return Response(orjson.dumps(self.stats()), media_type="application/json")

        @app.post("/_sandbox/faults")
        async def admin_faults(request: Request) -> Response:
            settings = orjson.loads(await request.body() or b"{}")
            if self.faults is None:
                self.faults = Faults()
            try:
                self.faults.update(**settings)
            except (TypeError, ValueError) as exc:
                return error_response(400, "INVALID_CONTENT", str(exc))
            faults = self.faults
            return Response(orjson.dumps({
                "server_error_rate": faults.server_error_rate, "rate_limited_rate": faults.rate_limited_rate,
                "timeout_rate": faults.timeout_rate, "latency_seconds": faults.latency_seconds,
                "hang_seconds": faults.hang_seconds, "retry_after_seconds": faults.retry_after_seconds,
            }), media_type="application/json")

        @app.post("/_sandbox/reset")
        async def admin_reset() -> Response:
            self.reset()
            return Response(status_code=204)

        return app

    async def _serve(
        self, request: Request, work: Callable[[Any], Response], *, read_body: bool = True
    ) -> Response:
        """Govern one API request: concurrency limit, login, faults, latency, then ``work``."""
        self.requests += 1
        if self.in_flight >= self.concurrency_limit:
            self.over_limit += 1
            return error_response(
                429, "SSS_REQUEST_LIMIT_EXCEEDED",
                "Request blocked by the concurrency limit of the account. Retry when a request ends.",
            )
        self.in_flight += 1
        self.peak_concurrency = max(self.peak_concurrency, self.in_flight)
        hang = 0.0
        try:
            injected = self._injected_failure()
            if injected is not None:
                return injected
            denied = self._authenticate(request)
            if denied is not None:
                return denied
            faults = self.faults
            fault = faults.draw() if faults is not None else Fault.NONE
            if faults is not None and faults.latency_seconds > 0:
                await asyncio.sleep(faults.latency_seconds)
            if fault is not Fault.NONE:
                self.fault_counts[fault.value] = self.fault_counts.get(fault.value, 0) + 1
            if fault is Fault.SERVER_ERROR:
                return error_response(500, "UNEXPECTED_ERROR", "An unexpected error occurred. (sandbox fault)")
            if fault is Fault.RATE_LIMITED:
                assert faults is not None
                return error_response(
                    429, "SSS_REQUEST_LIMIT_EXCEEDED", "Request limit exceeded. (sandbox fault)",
                    headers={"Retry-After": str(faults.retry_after_seconds)},
                )
            try:
                body = self._body(await request.body()) if read_body else None
                response = work(body)
            except SandboxError as exc:
                response = error_response(exc.status, exc.code, exc.detail, exc.path)
            if fault is Fault.TIMEOUT:
                assert faults is not None
                hang = faults.hang_seconds
        finally:
            self.in_flight -= 1
        if hang:
            # The write is done and the slot released: this models a lost answer, not slow work.
            await asyncio.sleep(hang)
        return response

    def _injected_failure(self) -> Response | None:
        """Return the answer of a queued :meth:`fail_next` failure, or None."""
        try:
            fault, retry_after = self._next_failures.popleft()
        except IndexError:
            return None
        self.fault_counts[f"next_{fault}"] = self.fault_counts.get(f"next_{fault}", 0) + 1
        if fault == "rate_limit":
            wait = 1.0 if retry_after is None else retry_after
            shown = str(int(wait)) if float(wait).is_integer() else str(wait)
            return error_response(429, "SSS_REQUEST_LIMIT_EXCEEDED",
                                  "Request limit exceeded. Try again later. (sandbox fault)",
                                  headers={"Retry-After": shown})
        if fault == "server_error":
            return error_response(500, "UNEXPECTED_ERROR", "An unexpected error occurred. (sandbox fault)")
        return error_response(
            401, "INVALID_LOGIN_ATTEMPT",
            "Invalid login attempt. For more details, see the Login Audit Trail in the NetSuite UI "
            "at Setup > Users/Roles > User Management > View Login Audit Trail. (sandbox fault)",
        )

    def _authenticate(self, request: Request) -> Response | None:
        """Return a 401 answer unless the request carries a valid token-based OAuth header."""
        header = request.headers.get("authorization")
        params = parse_authorization(header) if header else None
        if (
            params is None
            or params.get("realm") != self.realm
            or params.get("oauth_signature_method") != "HMAC-SHA256"
            or any(not params.get(name) for name in _OAUTH_REQUIRED)
        ):
            return self._invalid_login()
        if self.credentials is not None and not self._signature_ok(request, params):
            return self._invalid_login()
        return None

    def _signature_ok(self, request: Request, params: Mapping[str, str]) -> bool:
        assert self.credentials is not None
        creds = self.credentials
        if params["oauth_consumer_key"] != creds["consumer_key"] or params["oauth_token"] != creds["token_id"]:
            return False
        scope = request.scope
        query = scope.get("query_string", b"").decode("ascii")
        raw = f"{scope['scheme']}://{request.headers.get('host', '')}{scope['raw_path'].decode('ascii')}"
        url = httpx.URL(raw + (f"?{query}" if query else ""))
        signed = {k: v for k, v in params.items() if k not in ("realm", "oauth_signature")}
        expected = sign(signature_base_string(request.method, url, signed),
                        creds["consumer_secret"], creds["token_secret"])
        return hmac.compare_digest(expected, params["oauth_signature"])

    def _invalid_login(self) -> Response:
        return error_response(
            401, "INVALID_LOGIN",
            "Invalid login attempt. For more details, see the Login Audit Trail in the NetSuite UI "
            "at Setup > Users/Roles > User Management > View Login Audit Trail.",
        )

    # -- record operations --------------------------------------------------------------------
    def _upsert(self, request: Request, record_type: str, key: str, body: Any) -> Response:
        kind = self._type(record_type)
        if not key.startswith("eid:"):
            raise SandboxError(400, "INVALID_REQUEST",
                               "Upsert requires an external ID in the URL (eid:<externalId>).")
        eid = key[4:]
        fields = self._fields(body)
        internal_id = self._by_eid[kind].get(eid)
        created = internal_id is None
        replace = {name.strip() for name in request.query_params.get("replace", "").split(",") if name.strip()}
        merged = fields if created else _merge(kind, self._records[kind][internal_id or ""]["fields"], fields, replace)
        self._validate(kind, merged)
        if internal_id is None:
            internal_id = self._insert(kind, eid, merged)
        else:
            self._records[kind][internal_id]["fields"] = merged
            self.updates += 1
        return Response(status_code=204, headers={
            "Location": self._location(request, kind, internal_id), CREATED_HEADER: "true" if created else "false",
        })

    def _create(self, request: Request, record_type: str, body: Any) -> Response:
        kind = self._type(record_type)
        fields = self._fields(body)
        eid = fields.pop("externalId", None)
        if eid is not None and eid in self._by_eid[kind]:
            raise SandboxError(400, "DUP_RCRD",
                               f"A record with external ID {eid} already exists. Use a different ID.",
                               "externalId")
        self._validate(kind, fields)
        internal_id = self._insert(kind, None if eid is None else str(eid), fields)
        return Response(status_code=204, headers={
            "Location": self._location(request, kind, internal_id), CREATED_HEADER: "true",
        })

    def _read(self, request: Request, record_type: str, key: str) -> Response:
        kind = self._type(record_type)
        internal_id = self._by_eid[kind].get(key[4:]) if key.startswith("eid:") else key
        record = self._records[kind].get(internal_id or "")
        if record is None:
            raise SandboxError(404, "NONEXISTENT_ID",
                               "The record instance does not exist. Provide a valid record instance ID.", None)
        href = self._location(request, kind, record["id"])
        shown = {"links": [{"rel": "self", "href": href}], **record["fields"],
                 "id": record["id"], "externalId": record["externalId"]}
        return Response(dumps(shown), media_type="application/json")

    def _insert(self, kind: str, eid: str | None, fields: dict[str, Any]) -> str:
        internal_id = str(next(self._ids))
        self._records[kind][internal_id] = {"id": internal_id, "externalId": eid, "type": kind, "fields": fields}
        if eid is not None:
            self._by_eid[kind][eid] = internal_id
        self.creates += 1
        return internal_id

    def _validate(self, kind: str, fields: dict[str, Any]) -> None:
        """Check references, amounts and the posting period the way NetSuite refuses them."""
        for path, targets, required in _REFERENCES[kind]:
            if path == "apply.items.doc":
                for index, line in enumerate(_lines(fields, "apply")):
                    if "doc" in line:
                        line["doc"] = self._resolve(line["doc"], targets, f"apply.items[{index}].doc")
            elif fields.get(path) is not None:
                fields[path] = self._resolve(fields[path], targets, path)
            elif required:
                raise SandboxError(400, "USER_ERROR", f"Please enter value(s) for: {path}", path)
        for name in ("subsidiary", "currency", "terms"):
            if fields.get(name) is not None:
                self._check_list(name, fields[name], name)
        if kind in ("deposit", "customerRefund") and fields.get("account") is not None:
            self._check_list("account", fields["account"], "account")
        for sublist in _SUBLISTS[kind]:
            for index, line in enumerate(_lines(fields, sublist)):
                for number in ("amount", "rate", "debit", "credit"):
                    if number in line:
                        _number(line[number], f"{sublist}.items[{index}].{number}")
                if sublist in _ACCOUNT_SUBLISTS:
                    if line.get("account") is None:
                        raise SandboxError(400, "USER_ERROR", "Please enter value(s) for: Account",
                                           f"{sublist}.items[{index}].account")
                    self._check_list("account", line["account"], f"{sublist}.items[{index}].account")
        if kind == "customerPayment" and "payment" in fields:
            _number(fields["payment"], "payment")
        if kind == "journalEntry":
            _check_journal(fields)
        if kind == "deposit":
            _check_deposit(fields)
        if kind in TRANSACTIONS:
            self._check_period(fields)

    def _check_list(self, name: str, ref: Any, path: str) -> None:
        """Refuse a reference to an entry that is not in the account's list ``name``."""
        values = self.lists[name]
        if isinstance(ref, dict):
            if "id" in ref and str(ref["id"]) in values:
                return
            if "id" not in ref and name == "currency" and ref.get("refName") in values.values():
                return
            shown = ref.get("id", ref.get("refName"))
        else:
            shown = ref
        raise SandboxError(
            400, "INVALID_CONTENT",
            f"Error while accessing a resource. You have entered an Invalid Field Value {shown} "
            f"for the following field: {path.rsplit('.', 1)[-1]}",
            path,
        )

    def _check_period(self, fields: dict[str, Any]) -> None:
        """Refuse a posting period that is not one, or is closed (by id, else by ``tranDate``)."""
        ref = fields.get("postingPeriod")
        if ref is not None:
            period = self.period(str(ref.get("id"))) if isinstance(ref, dict) else None
            if period is None or not period.posting:
                shown = ref.get("id") if isinstance(ref, dict) else ref
                raise SandboxError(
                    400, "INVALID_CONTENT",
                    f"Error while accessing a resource. You have entered an Invalid Field Value {shown} "
                    "for the following field: postingPeriod",
                    "postingPeriod",
                )
            if period.closed(self.closed_periods):
                raise SandboxError(
                    400, "PERIOD_CLOSED",
                    f"The accounting period {period.name} is closed. You cannot post a transaction to it.",
                    "postingPeriod",
                )
            return
        tran_date = fields.get("tranDate")
        if isinstance(tran_date, str) and tran_date[:7] in self.closed_periods:
            raise SandboxError(
                400, "PERIOD_CLOSED",
                f"The accounting period is closed. You cannot post a transaction dated {tran_date} to it.",
                "tranDate",
            )

    def _suiteql(self, request: Request, body: Any) -> Response:
        """Answer one page of a SuiteQL query (``limit``/``offset``) with NetSuite's collection body."""
        if "transient" not in request.headers.get("prefer", "").lower():
            raise SandboxError(400, "INVALID_HEADER",
                               "SuiteQL queries need the request header Prefer: transient.")
        query = self._fields(body).get("q")
        if not isinstance(query, str) or not query.strip():
            raise SandboxError(400, "INVALID_CONTENT", "The request body must have a query in 'q'.", "q")
        limit = _int_param(request, "limit", 1000)
        offset = _int_param(request, "offset", 0)
        if not 1 <= limit <= 1000:
            raise SandboxError(400, "INVALID_PARAMETER", "The limit must be between 1 and 1000.", "limit")
        if offset < 0 or offset % limit:
            raise SandboxError(400, "INVALID_PARAMETER",
                               f"The offset {offset} must be a non-negative multiple of the limit {limit}.", "offset")
        try:
            rows = run_query(query, {"accountingperiod": self.period_rows})
        except QueryError as exc:
            raise SandboxError(400, "INVALID_PARAMETER", str(exc)) from None
        page = rows[offset:offset + limit]
        base = f"{request.scope['scheme']}://{request.headers.get('host', 'localhost')}{SUITEQL_PATH}"
        links = [{"rel": "self", "href": f"{base}?limit={limit}&offset={offset}"}]
        if offset + limit < len(rows):
            links.insert(0, {"rel": "next", "href": f"{base}?limit={limit}&offset={offset + limit}"})
        answer = {
            "links": links,
            "count": len(page),
            "hasMore": offset + limit < len(rows),
            "items": [{"links": [], **item} for item in page],
            "offset": offset,
            "totalResults": len(rows),
        }
        return Response(orjson.dumps(answer), media_type="application/json")

    def _resolve(self, ref: Any, targets: tuple[str, ...], path: str) -> dict[str, Any]:
        """Return the reference with its internal id, or raise NetSuite's Invalid Field Value."""
        if isinstance(ref, dict):
            for target in targets:
                if "id" in ref and str(ref["id"]) in self._records[target]:
                    return {**ref, "id": str(ref["id"])}
                internal_id = self._by_eid[target].get(str(ref.get("externalId")))
                if "externalId" in ref and internal_id is not None:
                    return {**ref, "id": internal_id}
            shown = ref.get("id", ref.get("externalId"))
        else:
            shown = ref
        field = path.rsplit(".", 1)[-1]
        raise SandboxError(
            400, "INVALID_CONTENT",
            f"Error while accessing a resource. You have entered an Invalid Field Value {shown} "
            f"for the following field: {field}",
            path,
        )

    # -- small pieces -------------------------------------------------------------------------
    def _type(self, record_type: str) -> str:
        kind = _BY_LOWER.get(record_type.lower())
        if kind is None:
            raise SandboxError(400, "INVALID_RCRD_TYPE", f"Record type '{record_type}' does not exist.")
        return kind

    @staticmethod
    def _body(raw: bytes) -> Any:
        if not raw:
            return {}
        try:
            return loads(raw)
        except ValueError:
            raise SandboxError(400, "INVALID_CONTENT",
                               "The request could not be understood by the server due to malformed syntax.") from None

    @staticmethod
    def _fields(body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise SandboxError(400, "INVALID_CONTENT", "The request body must be a JSON object.")
        return body

    @staticmethod
    def _location(request: Request, kind: str, internal_id: str) -> str:
        host = request.headers.get("host", "localhost")
        return f"{request.scope['scheme']}://{host}{RECORD_PATH}/{kind}/{internal_id}"


def _lines(fields: Mapping[str, Any], sublist: str) -> list[dict[str, Any]]:
    """Return the lines of a sublist (``{"items": [...]}``), refusing any that is not an object."""
    value = fields.get(sublist)
    if value is None:
        return []
    items = value.get("items") if isinstance(value, dict) else None
    if not isinstance(items, list) or not all(isinstance(line, dict) for line in items):
        raise SandboxError(400, "INVALID_CONTENT", f"The sublist {sublist} must be {{\"items\": [{{...}}]}}.",
                           sublist)
    return items


def _merge(kind: str, old: Mapping[str, Any], new: Mapping[str, Any], replace: set[str]) -> dict[str, Any]:
    """Apply an update the way NetSuite does: body fields replaced, sublists merged unless replaced.

    A non-keyed sublist gets the new lines appended to the old ones; a keyed sublist (``apply``)
    updates the line with the same key and appends the others; a sublist named in ``replace``
    holds exactly the new lines.
    """
    merged = dict(old)
    for name, value in new.items():
        previous = old.get(name)
        if name in _SUBLISTS[kind] and name not in replace and isinstance(value, dict) and isinstance(previous, dict):
            merged[name] = {"items": _merge_lines(name, previous.get("items") or [], value.get("items") or [])}
        else:
            merged[name] = value
    return merged


def _merge_lines(sublist: str, old: list[Any], new: list[Any]) -> list[Any]:
    key = _SUBLIST_KEYS.get(sublist)
    if key is None:
        return [*old, *new]

    def line_key(line: Any) -> Any:
        ref = line.get(key) if isinstance(line, dict) else None
        return (ref.get("externalId") or ref.get("id")) if isinstance(ref, dict) else ref

    incoming = {line_key(line) for line in new}
    return [*(line for line in old if line_key(line) not in incoming), *new]


def _check_journal(fields: Mapping[str, Any]) -> None:
    """Refuse a journal entry without a subsidiary or lines, or whose debits and credits differ."""
    if fields.get("subsidiary") is None:
        raise SandboxError(400, "USER_ERROR", "Please enter value(s) for: Subsidiary", "subsidiary")
    lines = _lines(fields, "line")
    if not lines:
        raise SandboxError(400, "USER_ERROR", "You must enter at least one line item for this transaction.", "line")
    debits = credits = Decimal(0)
    for index, line in enumerate(lines):
        debit, credit = line.get("debit"), line.get("credit")
        if (debit is None) == (credit is None):
            raise SandboxError(400, "USER_ERROR", "Each line needs either a debit or a credit amount.",
                               f"line.items[{index}]")
        debits += debit or 0
        credits += credit or 0
    if debits != credits:
        raise SandboxError(
            400, "USER_ERROR",
            f"This transaction is not in balance. Debits total {debits} and credits total {credits}.", "line",
        )


def _check_deposit(fields: Mapping[str, Any]) -> None:
    """Refuse a deposit without a bank account, or whose cash back is not less than what it deposits."""
    if fields.get("account") is None:
        raise SandboxError(400, "USER_ERROR", "Please enter value(s) for: Account", "account")
    deposited = sum((line.get("amount", 0) for name in ("payment", "other") for line in _lines(fields, name)),
                    Decimal(0))
    cash_back = sum((line.get("amount", 0) for line in _lines(fields, "cashBack")), Decimal(0))
    if deposited - cash_back <= 0:
        raise SandboxError(
            400, "USER_ERROR",
            f"The deposit total must be greater than zero (deposited {deposited}, cash back {cash_back}).", "cashBack",
        )


def _int_param(request: Request, name: str, default: int) -> int:
    value = request.query_params.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise SandboxError(400, "INVALID_PARAMETER", f"The {name} must be an integer, not {value!r}.", name) from None


def _number(value: Any, path: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise SandboxError(400, "INVALID_CONTENT",
                           f"Invalid Field Value {value!r} for the following field: {path}. Expected a number.",
                           path)

