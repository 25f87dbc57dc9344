"""A stateful in-memory Stripe emulator (FastAPI) that sends signed webhooks like Stripe does.

Wire format as Stripe's: form-encoded POST bodies with nested ``a[b][0]=x`` keys, JSON answers
with ``object`` fields, prefixed ids, unix times, ``{"error": {...}}`` bodies, bearer auth,
``Idempotency-Key`` replay, newest-first lists. Webhooks go out from a background task, signed,
retried with backoff, and optionally duplicated, shuffled or dropped to exercise the consumer.

Deviations, on purpose: ``POST /v1/invoices`` includes the customer's pending invoice items by
default (Stripe's 2024-06-20 default is ``pending_invoice_items_behavior=exclude``); charges in
``charge.refunded`` events carry ``refunds.data`` (Stripe leaves it out unless expanded);
credit notes carry no tax; subscriptions neither invoice nor charge (they stay ``active`` and
keep their first period); the Search API matches only ``field:'value'`` clauses joined by
``AND``; idempotency keys are kept 24 h by the sandbox clock, and, as at Stripe, only requests
that started executing are stored (a validation error can be retried with the same key).

Admin endpoints (no auth, no faults): ``GET /_sandbox/stats``, ``GET /_sandbox/webhooks/idle``,
``POST /_sandbox/webhooks/config``, ``POST /_sandbox/webhooks/endpoints``, ``POST /_sandbox/faults``.
"""

from __future__ import annotations

import asyncio
import random
import re
import string
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

import httpx
import orjson
from fastapi import FastAPI, Request, Response
from starlette.requests import ClientDisconnect

from syncline.connectors.stripe.client import API_VERSION
from syncline.connectors.stripe.inbound import StripeSignature
from syncline.sandbox.faults import Fault, Faults

__all__ = [
    "SANDBOX_API_KEY", "StripeApiError", "StripeSandbox", "WebhookSettings", "WebhookStats", "form_decode",
]

JSON = dict[str, Any]
SANDBOX_API_KEY = "sk_test_sandbox"  # a fake key: what a default sandbox accepts
_ALPHABET = string.ascii_letters + string.digits
#: How long a shuffling dispatcher waits for its window to fill before sending what it has.
_SHUFFLE_LINGER_SECONDS = 0.02


class StripeApiError(Exception):
    """An error the sandbox answers in Stripe's format."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        error: JSON = {"type": type_, "message": message, **extra}
        if code:
            error["code"] = code
        if param:
            error["param"] = param
        self.body: JSON = {"error": error}


def form_decode(body: str) -> JSON:
    """Parse a Stripe form body: ``lines[0][amount]=5&tax_rates[]=txr_1`` → nested dicts and lists."""
    root: JSON = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        head, _, rest = key.partition("[")
        parts = [head] + ([part.rstrip("]") for part in rest.split("[")] if rest else [])
        node: Any = root
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            if part == "":  # a[] appends
                part = str(len(node))
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise StripeApiError(400, f"Invalid array or hash: {key}", param=key)
    result: JSON = _listify(root)
    return result


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    items = {key: _listify(value) for key, value in node.items()}
    if items and all(key.isdigit() for key in items):
        return [items[key] for key in sorted(items, key=int)]
    return items


# -- parameter readers ---------------------------------------------------------------------------

def _allow(params: Mapping[str, Any], allowed: set[str]) -> None:
    for key in params:
        if key not in allowed:
            raise StripeApiError(400, f"Received unknown parameter: {key}", param=key)


def _string(params: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = params.get(key)
    if value is None or value == "":
        if required:
            raise StripeApiError(400, f"Missing required param: {key}.", code="parameter_missing", param=key)
        return None
    if not isinstance(value, str):
        raise StripeApiError(400, f"Invalid string: {key}", param=key)
    return value


def _integer(
    params: Mapping[str, Any], key: str, *, required: bool = False, minimum: int | None = None
) -> int | None:
    text = _string(params, key, required=required)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise StripeApiError(400, f"Invalid integer: {text}", code="parameter_invalid_integer",
                             param=key) from None
    if minimum is not None and value < minimum:
        raise StripeApiError(400, f"This value must be greater than or equal to {minimum}.", param=key)
    return value


def _currency(params: Mapping[str, Any], key: str = "currency", *, required: bool = True) -> str | None:
    text = _string(params, key, required=required)
    if text is None:
        return None
    if len(text) != 3 or not text.isalpha() or not text.isascii():
        raise StripeApiError(400, f"Invalid currency: {text.lower()}.", param=key)
    return text.lower()


def _metadata(params: Mapping[str, Any]) -> dict[str, str]:
    value = params.get("metadata", {})
    if value == "":
        return {}
    if not isinstance(value, dict):
        raise StripeApiError(400, "Invalid object", param="metadata")
    return {str(k): str(v) for k, v in value.items()}


def _hash(params: Mapping[str, Any], key: str) -> JSON:
    value = params.get(key, {})
    if not isinstance(value, dict):
        raise StripeApiError(400, "Invalid object", param=key)
    return value


def _list_param(params: Mapping[str, Any], key: str) -> list[Any]:
    value = params.get(key, [])
    if value == "":
        return []
    if not isinstance(value, list):
        raise StripeApiError(400, "Invalid array", param=key)
    return value


def _snapshot(obj: JSON) -> JSON:
    """Return a deep copy (events must not change when the object changes later)."""
    copy: JSON = orjson.loads(orjson.dumps(obj))
    return copy


def _round(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


# -- webhooks ------------------------------------------------------------------------------------

@dataclass
class WebhookSettings:
    """How the sandbox delivers webhooks; change at run time with ``POST /_sandbox/webhooks/config``."""

    concurrency: int = 8
    duplicate_rate: float = 0.0
    shuffle_window: int = 0
    drop_rate: float = 0.0
    max_attempts: int = 8
    retry_backoff_seconds: float = 0.05
    timeout_seconds: float = 10.0


@dataclass
class WebhookStats:
    """Counters of webhook deliveries (each attempt of each copy counts once in ``attempted``)."""

    attempted: int = 0
    succeeded: int = 0
    failed_attempts: int = 0
    given_up: int = 0
    duplicates: int = 0
    dropped: int = 0


@dataclass(frozen=True)
class _Endpoint:
    id: str
    url: str
    secret: str


@dataclass
class _Delivery:
    endpoint: _Endpoint
    event: JSON
    duplicate: bool = False
    attempts: int = 0


@dataclass
class _Call:
    """The context of one API request, recorded in the events it creates."""

    request_id: str
    idempotency_key: str | None
    path: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Stored:
    fingerprint: bytes
    status: int
    body: bytes
    at: float


#: How long Stripe keeps an idempotency key (it prunes keys once they are at least 24 hours old).
IDEMPOTENCY_KEY_TTL_SECONDS = 24 * 3600
#: One-shot faults :meth:`StripeSandbox.fail_next` can queue.
OneShotFault = str
_ONE_SHOT_FAULTS = frozenset({"rate_limit", "server_error", "auth"})


Handler = Callable[[_Call, JSON], JSON]


class StripeSandbox:
    """Emulate the Stripe API in memory: customers, invoices, charges, refunds, credit notes,
    payouts, events and signed webhooks.

    ``StripeSandbox(api_key="sk_test_...", faults=Faults(server_error_rate=0.1), seed=1,
    duplicate_rate=0.05, shuffle_window=4, drop_rate=0.01)``; serve ``.app`` with
    :class:`~syncline.sandbox.ServerThread`. Products, prices, subscriptions, invoices and credit
    notes can be created, updated, listed and (except credit notes, as at Stripe) searched;
    :meth:`fail_next` makes the next request answer 429, 500 or 401.
    """

    def __init__(
        self,
        api_key: str = SANDBOX_API_KEY,
        faults: Faults | None = None,
        seed: int | None = 0,
        *,
        webhook_concurrency: int = 8,
        duplicate_rate: float = 0.0,
        shuffle_window: int = 0,
        drop_rate: float = 0.0,
        max_attempts: int = 8,
        retry_backoff_seconds: float = 0.05,
        clock: Callable[[], float] = time.time,
        search_lag_seconds: float = 0.0,
    ) -> None:
        self.api_key = api_key
        #: Stripe's Search index trails writes (by under a minute, normally); objects younger than
        #: this are not found by the Search endpoints yet.
        self.search_lag_seconds = search_lag_seconds
        self.faults = faults or Faults()
        self.webhooks = WebhookSettings(
            concurrency=webhook_concurrency, duplicate_rate=duplicate_rate, shuffle_window=shuffle_window,
            drop_rate=drop_rate, max_attempts=max_attempts, retry_backoff_seconds=retry_backoff_seconds,
        )
        self.webhook_stats = WebhookStats()
        self._clock = clock
        self._ids = random.Random(seed)
        # a separate stream, so webhook options do not change the ids a seed produces
        self._chance = random.Random(None if seed is None else seed + 1)
        self._objects: dict[str, dict[str, JSON]] = {}
        self._tax_rates: dict[str, Decimal] = {}
        self._events: list[JSON] = []
        self._event_index: dict[str, int] = {}
        self._idempotency: dict[str, _Stored] = {}
        self._one_shot: deque[tuple[OneShotFault, float | None]] = deque()
        self._endpoints: list[_Endpoint] = []
        self._outbox: deque[_Delivery] = deque()
        self._in_flight = 0
        self._waiting = 0  # deliveries sleeping before a retry or a late duplicate
        self._last_enqueue = 0.0
        self._wakeup: asyncio.Event | None = None
        self._slot_freed: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        self.app = self._build_app()

    # -- public helpers ----------------------------------------------------------------------------
    def add_webhook_endpoint(self, url: str, secret: str) -> str:
        """Send every later event to ``url`` signed with ``secret``; return the endpoint id."""
        endpoint = _Endpoint(self._new_id("we"), url, secret)
        self._endpoints.append(endpoint)
        return endpoint.id

    def fail_next(self, fault: OneShotFault, *, retry_after: float | None = None) -> None:
        """Make the next API request fail: ``rate_limit`` (429 with ``Retry-After``), ``server_error``
        (500) or ``auth`` (401), answered the way Stripe answers them, without applying the request."""
        if fault not in _ONE_SHOT_FAULTS:
            raise ValueError(f"unknown fault {fault!r} (one of {sorted(_ONE_SHOT_FAULTS)})")
        self._one_shot.append((fault, retry_after))

    def stats(self) -> JSON:
        """Return object counts, the number of events and webhook delivery counters."""
        return {
            "objects": {kind: len(objects) for kind, objects in sorted(self._objects.items())},
            "events": len(self._events),
            "webhooks": {**asdict(self.webhook_stats), "endpoints": len(self._endpoints),
                         "pending": self.pending_deliveries()},
        }

    def pending_deliveries(self) -> int:
        """Return how many webhook deliveries are queued, in flight or waiting to retry."""
        return len(self._outbox) + self._in_flight + self._waiting

    # -- plumbing ----------------------------------------------------------------------------------
    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_1" + "".join(self._ids.choices(_ALPHABET, k=23))

    def _now(self) -> int:
        return int(self._clock())

    def _store(self, obj: JSON) -> JSON:
        self._objects.setdefault(str(obj["object"]), {})[str(obj["id"])] = obj
        return obj

    def _get(self, kind: str, object_id: str | None, *, param: str = "id", status: int = 404) -> JSON:
        obj = self._objects.get(kind, {}).get(object_id or "")
        if obj is None:
            raise StripeApiError(status, f"No such {kind}: '{object_id}'", code="resource_missing",
                                 param=param)
        return obj

    @asynccontextmanager
    async def _lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        self._wakeup = asyncio.Event()
        self._slot_freed = asyncio.Event()
        pool = max(64, self.webhooks.concurrency)
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(self.webhooks.timeout_seconds),
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
        )
        dispatcher = asyncio.create_task(self._dispatch())
        try:
            yield
        finally:
            dispatcher.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(dispatcher, *self._tasks, return_exceptions=True)
            await self._http.aclose()

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="Stripe sandbox", lifespan=self._lifespan, openapi_url=None, docs_url=None,
                      redoc_url=None)
        routes: list[tuple[str, str, Handler]] = [
            ("POST", "/v1/customers", self._create_customer),
            ("GET", "/v1/customers", self._list_customers),
            # search routes come before "/{id}" routes, which would otherwise take "search" as an id
            ("GET", "/v1/customers/search", self._search("customer")),
            ("GET", "/v1/products/search", self._search("product")),
            ("GET", "/v1/prices/search", self._search("price")),
            ("GET", "/v1/subscriptions/search", self._search("subscription")),
            ("GET", "/v1/invoices/search", self._search("invoice")),
            ("POST", "/v1/products", self._create_product),
            ("GET", "/v1/products", self._list("product", "/v1/products", {"active"})),
            ("GET", "/v1/products/{id}", self._retrieve("product")),
            ("POST", "/v1/products/{id}", self._update_product),
            ("POST", "/v1/prices", self._create_price),
            ("GET", "/v1/prices", self._list("price", "/v1/prices", {"active", "product", "currency"})),
            ("GET", "/v1/prices/{id}", self._retrieve("price")),
            ("POST", "/v1/prices/{id}", self._update_price),
            ("POST", "/v1/subscriptions", self._create_subscription),
            ("GET", "/v1/subscriptions",
             self._list("subscription", "/v1/subscriptions", {"customer", "price", "status"})),
            ("GET", "/v1/subscriptions/{id}", self._retrieve("subscription")),
            ("POST", "/v1/subscriptions/{id}", self._update_subscription),
            ("DELETE", "/v1/subscriptions/{id}", self._cancel_subscription),
            ("GET", "/v1/invoices", self._list("invoice", "/v1/invoices", {"customer", "status", "subscription"})),
            ("POST", "/v1/invoices/{id}", self._update_invoice),
            ("GET", "/v1/invoiceitems", self._list("invoiceitem", "/v1/invoiceitems", {"customer", "invoice"})),
            ("GET", "/v1/invoiceitems/{id}", self._retrieve("invoiceitem")),
            ("GET", "/v1/credit_notes", self._list("credit_note", "/v1/credit_notes", {"customer", "invoice"})),
            ("GET", "/v1/credit_notes/{id}", self._retrieve("credit_note")),
            ("POST", "/v1/credit_notes/{id}", self._update_credit_note),
            ("POST", "/v1/customers/{id}", self._update_customer),
            ("GET", "/v1/customers/{id}", self._retrieve("customer")),
            ("DELETE", "/v1/customers/{id}", self._delete_customer),
            ("POST", "/v1/tax_rates", self._create_tax_rate),
            ("POST", "/v1/invoiceitems", self._create_invoice_item),
            ("POST", "/v1/invoices", self._create_invoice),
            ("GET", "/v1/invoices/{id}", self._retrieve("invoice")),
            ("POST", "/v1/invoices/{id}/finalize", self._finalize_invoice),
            ("POST", "/v1/invoices/{id}/pay", self._pay_invoice),
            ("POST", "/v1/invoices/{id}/void", self._void_invoice),
            ("POST", "/v1/invoices/{id}/mark_uncollectible", self._mark_uncollectible),
            ("GET", "/v1/charges/{id}", self._retrieve("charge")),
            ("POST", "/v1/refunds", self._create_refund),
            ("POST", "/v1/credit_notes", self._create_credit_note),
            ("POST", "/v1/payouts", self._create_payout),
            ("GET", "/v1/events", self._list_events),
            ("GET", "/v1/events/{id}", self._retrieve_event),
        ]
        for method, path, handler in routes:
            app.add_api_route(path, self._endpoint(handler), methods=[method], include_in_schema=False)
        app.add_api_route("/_sandbox/stats", self._admin_stats, methods=["GET"])
        app.add_api_route("/_sandbox/webhooks/idle", self._admin_idle, methods=["GET"])
        app.add_api_route("/_sandbox/webhooks/config", self._admin_webhook_config, methods=["POST"])
        app.add_api_route("/_sandbox/webhooks/endpoints", self._admin_add_endpoint, methods=["POST"])
        app.add_api_route("/_sandbox/faults", self._admin_faults, methods=["POST"])
        return app

    def _endpoint(self, handler: Handler) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            return await self._call(request, handler)
        return endpoint

    @staticmethod
    def _json(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> Response:
        return Response(content=body, status_code=status, media_type="application/json", headers=headers)

    async def _call(self, request: Request, handler: Handler) -> Response:
        request_id = self._new_id("req")
        headers = {"Request-Id": request_id, "Stripe-Version": API_VERSION}
        if self._one_shot:
            return self._one_shot_response(headers)
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            supplied = request.headers.get("authorization", "")
            message = "Invalid API Key provided" if supplied else (
                "You did not provide an API key. Provide it in the Authorization header as Bearer <key>."
            )
            error = StripeApiError(401, message)
            return self._json(401, orjson.dumps(error.body), headers)
        if self.faults.latency_seconds:
            await asyncio.sleep(self.faults.latency_seconds)
        fault = self.faults.draw()
        if fault is Fault.SERVER_ERROR:
            error = StripeApiError(500, "An unknown error occurred", type_="api_error")
            return self._json(500, orjson.dumps(error.body), {**headers, "Stripe-Should-Retry": "true"})
        if fault is Fault.RATE_LIMITED:
            error = StripeApiError(429, "Request rate limit exceeded.", code="rate_limit")
            return self._json(429, orjson.dumps(error.body),
                              {**headers, "Retry-After": str(self.faults.retry_after_seconds)})
        try:
            if request.method == "POST":
                params = form_decode((await request.body()).decode())
            else:
                params = _listify(dict(request.query_params))
        except (StripeApiError, UnicodeDecodeError) as exc:
            error = exc if isinstance(exc, StripeApiError) else StripeApiError(400, "Invalid form body")
            return self._json(error.status, orjson.dumps(error.body), headers)
        except ClientDisconnect:
            # The client went away mid-request (a killed worker): nothing was applied.
            return Response(status_code=499)

        key = request.headers.get("idempotency-key") if request.method == "POST" else None
        fingerprint = orjson.dumps([request.url.path, params], option=orjson.OPT_SORT_KEYS)
        if key is not None and len(key) > 255:
            error = StripeApiError(400, "Idempotency-Key values are limited to 255 characters.",
                                   param="Idempotency-Key")
            return self._json(400, orjson.dumps(error.body), headers)
        if key is not None:
            stored = self._idempotency.get(key)
            if stored is not None and self._clock() - stored.at >= IDEMPOTENCY_KEY_TTL_SECONDS:
                del self._idempotency[key]  # Stripe forgets keys after 24 hours
                stored = None
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    error = StripeApiError(
                        400, f"Keys for idempotent requests can only be used with the same parameters they "
                             f"were first used with. Try using a key other than '{key}' if you meant to "
                             f"execute a different request.", type_="idempotency_error")
                    return self._json(400, orjson.dumps(error.body), headers)
                return self._json(stored.status, stored.body,
                                  {**headers, "Idempotency-Key": key, "Idempotent-Replayed": "true"})
            headers["Idempotency-Key"] = key

        call = _Call(request_id, key, dict(request.path_params))
        try:
            status, body = 200, orjson.dumps(handler(call, params))
            executed = True
        except StripeApiError as exc:
            status, body = exc.status, orjson.dumps(exc.body)
            # Stripe saves results of requests that started executing (a declined card) but not
            # of requests rejected by validation
            executed = exc.body["error"]["type"] == "card_error"
        if key is not None and executed:
            self._idempotency[key] = _Stored(fingerprint, status, body, self._clock())
        if fault is Fault.TIMEOUT:
            await asyncio.sleep(self.faults.hang_seconds)
        return self._json(status, body, headers)

    def _one_shot_response(self, headers: dict[str, str]) -> Response:
        fault, retry_after = self._one_shot.popleft()
        if fault == "rate_limit":
            error = StripeApiError(429, "Request rate limit exceeded. Learn more about rate limits here "
                                        "https://stripe.com/docs/rate-limits.", type_="invalid_request_error",
                                   code="rate_limit")
            wait = self.faults.retry_after_seconds if retry_after is None else retry_after
            return self._json(429, orjson.dumps(error.body), {
                **headers, "Retry-After": f"{wait:g}", "Stripe-Rate-Limited-Reason": "global-rate",
            })
        if fault == "auth":
            error = StripeApiError(401, "Invalid API Key provided: sk_test_****")
            return self._json(401, orjson.dumps(error.body), headers)
        error = StripeApiError(500, "An unknown error occurred", type_="api_error")
        return self._json(500, orjson.dumps(error.body), {**headers, "Stripe-Should-Retry": "true"})

    # -- events and webhooks -----------------------------------------------------------------------
    def _emit(self, call: _Call, kind: str, obj: JSON, previous: JSON | None = None) -> JSON:
        data: JSON = {"object": _snapshot(obj)}
        if previous:
            data["previous_attributes"] = previous
        event: JSON = {
            "id": self._new_id("evt"), "object": "event", "api_version": API_VERSION,
            "created": self._now(), "data": data, "livemode": False,
            "pending_webhooks": len(self._endpoints),
            "request": {"id": call.request_id, "idempotency_key": call.idempotency_key},
            "type": kind,
        }
        self._event_index[event["id"]] = len(self._events)
        self._events.append(event)
        for endpoint in list(self._endpoints):
            if self._chance.random() < self.webhooks.drop_rate:
                self.webhook_stats.dropped += 1
                continue
            self._enqueue(_Delivery(endpoint, event))
            if self._chance.random() < self.webhooks.duplicate_rate:
                self.webhook_stats.duplicates += 1
                # Stripe's duplicates arrive later, not back to back
                copy = _Delivery(endpoint, event, duplicate=True)
                self._enqueue_later(copy, self._chance.uniform(0.0, 0.2))
        return event

    def _enqueue(self, delivery: _Delivery) -> None:
        self._outbox.append(delivery)
        self._last_enqueue = time.monotonic()
        if self._wakeup is not None:
            self._wakeup.set()

    def _enqueue_later(self, delivery: _Delivery, delay: float) -> None:
        self._waiting += 1

        def release() -> None:
            self._waiting -= 1
            self._enqueue(delivery)

        asyncio.get_running_loop().call_later(delay, release)

    async def _dispatch(self) -> None:
        assert self._wakeup is not None and self._slot_freed is not None
        while True:
            if not self._outbox:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            window = self.webhooks.shuffle_window
            if (window > 1 and len(self._outbox) < window
                    and time.monotonic() - self._last_enqueue < _SHUFFLE_LINGER_SECONDS):
                await asyncio.sleep(_SHUFFLE_LINGER_SECONDS / 4)
                continue
            while self._in_flight >= max(1, self.webhooks.concurrency):
                self._slot_freed.clear()
                await self._slot_freed.wait()
            index = self._chance.randrange(min(window, len(self._outbox))) if window > 1 else 0
            delivery = self._outbox[index]
            del self._outbox[index]
            self._in_flight += 1
            task = asyncio.create_task(self._send(delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, delivery: _Delivery) -> None:
        assert self._http is not None and self._slot_freed is not None
        body = orjson.dumps(delivery.event)
        signature = StripeSignature(delivery.endpoint.secret).sign(body, self._now())
        self.webhook_stats.attempted += 1
        delivery.attempts += 1
        try:
            response = await self._http.post(
                delivery.endpoint.url, content=body,
                headers={"Content-Type": "application/json; charset=utf-8", "Stripe-Signature": signature,
                         "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)"},
            )
            delivered = response.is_success
        except httpx.HTTPError:
            delivered = False
        if delivered:
            self.webhook_stats.succeeded += 1
            if not delivery.duplicate:
                delivery.event["pending_webhooks"] = max(0, delivery.event["pending_webhooks"] - 1)
        else:
            self.webhook_stats.failed_attempts += 1
            if delivery.attempts >= self.webhooks.max_attempts:
                self.webhook_stats.given_up += 1
            else:
                backoff = min(2.0, self.webhooks.retry_backoff_seconds * 2 ** (delivery.attempts - 1))
                self._enqueue_later(delivery, backoff)
        # released last, so "pending" never reads zero while a retry is being scheduled
        self._in_flight -= 1
        self._slot_freed.set()

    # -- admin endpoints ---------------------------------------------------------------------------
    async def _admin_stats(self) -> JSON:
        return self.stats()

    async def _admin_idle(self) -> JSON:
        pending = self.pending_deliveries()
        return {"idle": pending == 0, "pending": pending}

    async def _admin_webhook_config(self, request: Request) -> Response:
        changes = orjson.loads(await request.body() or b"{}")
        known = set(asdict(self.webhooks))
        if not isinstance(changes, dict) or not set(changes) <= known:
            return self._json(400, orjson.dumps({"error": f"settings are {sorted(known)}"}))
        for name, value in changes.items():
            setattr(self.webhooks, name, type(getattr(self.webhooks, name))(value))
        return self._json(200, orjson.dumps(asdict(self.webhooks)))

    async def _admin_add_endpoint(self, request: Request) -> JSON:
        body = orjson.loads(await request.body())
        return {"id": self.add_webhook_endpoint(str(body["url"]), str(body["secret"]))}

    async def _admin_faults(self, request: Request) -> Response:
        try:
            self.faults.update(**orjson.loads(await request.body() or b"{}"))
        except (TypeError, ValueError) as exc:
            return self._json(400, orjson.dumps({"error": str(exc)}))
        return self._json(200, orjson.dumps({"ok": True}))

    # -- lists -------------------------------------------------------------------------------------
    def _page(
        self, items: Sequence[JSON], index: Mapping[str, int], params: JSON, url: str, kind: str
    ) -> JSON:
        """Return one newest-first page of ``items`` (held oldest first) the way Stripe pages."""
        limit = _integer(params, "limit") or 10
        if not 1 <= limit <= 100:
            raise StripeApiError(400, "This value must be between 1 and 100.", param="limit")
        after, before = _string(params, "starting_after"), _string(params, "ending_before")
        if after and before:
            raise StripeApiError(
                400, "You may only specify one of these parameters: ending_before, starting_after."
            )
        total = len(items)
        if before is not None:
            position = self._position(index, before, "ending_before", kind)
            start, end = position + 1, min(total, position + 1 + limit)
            has_more = end < total
        else:
            end = total if after is None else self._position(index, after, "starting_after", kind)
            start = max(0, end - limit)
            has_more = start > 0
        return {"object": "list", "data": list(reversed(items[start:end])), "has_more": has_more, "url": url}

    @staticmethod
    def _position(index: Mapping[str, int], object_id: str, param: str, kind: str) -> int:
        if object_id not in index:
            raise StripeApiError(400, f"No such {kind}: '{object_id}'", code="resource_missing", param=param)
        return index[object_id]

    def _list_events(self, _call: _Call, params: JSON) -> JSON:
        _allow(params, {"limit", "starting_after", "ending_before"})
        return self._page(self._events, self._event_index, params, "/v1/events", "event")

    def _retrieve_event(self, call: _Call, _params: JSON) -> JSON:
        position = self._event_index.get(call.path["id"])
        if position is None:
            raise StripeApiError(404, f"No such event: '{call.path['id']}'", code="resource_missing",
                                 param="id")
        return self._events[position]

    def _retrieve(self, kind: str) -> Handler:
        def retrieve(call: _Call, _params: JSON) -> JSON:
            return self._get(kind, call.path["id"])
        return retrieve

    # -- customers ---------------------------------------------------------------------------------
    _CUSTOMER_FIELDS = frozenset({"name", "email", "phone", "description", "currency"})

    def _create_customer(self, call: _Call, params: JSON) -> JSON:
        _allow(params, {*self._CUSTOMER_FIELDS, "address", "metadata", "tax_exempt"})
        customer: JSON = {
            "id": self._new_id("cus"), "object": "customer", "address": None, "balance": 0,
            "created": self._now(), "currency": _currency(params, required=False), "default_source": None,
            "delinquent": False, "description": _string(params, "description"), "discount": None,
            "email": _string(params, "email"),
            "invoice_prefix": "".join(self._ids.choices(string.ascii_uppercase + string.digits, k=8)),
            "invoice_settings": {"custom_fields": None, "default_payment_method": None, "footer": None,
                                 "rendering_options": None},
            "livemode": False, "metadata": _metadata(params), "name": _string(params, "name"),
            "next_invoice_sequence": 1, "phone": _string(params, "phone"), "preferred_locales": [],
            "shipping": None, "tax_exempt": "none", "test_clock": None,
        }
        self._apply_customer_params(customer, params)
        self._store(customer)
        self._emit(call, "customer.created", customer)
        return customer

    def _apply_customer_params(self, customer: JSON, params: JSON) -> JSON:
        previous: JSON = {}
        for key in self._CUSTOMER_FIELDS & params.keys():
            value = _currency(params, required=False) if key == "currency" else _string(params, key)
            if customer.get(key) != value:
                previous[key] = customer.get(key)
                customer[key] = value
        if "address" in params:
            address = _hash(params, "address")
            _allow(address, {"line1", "line2", "city", "state", "postal_code", "country"})
            fields = ("city", "country", "line1", "line2", "postal_code", "state")
            previous["address"] = customer["address"]
            customer["address"] = {key: address.get(key) or None for key in fields}
        if "metadata" in params:
            previous["metadata"], customer["metadata"] = customer["metadata"], _metadata(params)
        if "tax_exempt" in params:
            exempt = _string(params, "tax_exempt") or "none"
            if exempt not in ("none", "exempt", "reverse"):
                raise StripeApiError(400, f"Invalid tax_exempt: {exempt}", param="tax_exempt")
            previous["tax_exempt"], customer["tax_exempt"] = customer["tax_exempt"], exempt
        return previous

    def _update_customer(self, call: _Call, params: JSON) -> JSON:
        _allow(params, {*self._CUSTOMER_FIELDS, "address", "metadata", "tax_exempt"})
        customer = self._get("customer", call.path["id"])
        previous = self._apply_customer_params(customer, params)
        if previous:
            self._emit(call, "customer.updated", customer, previous)
        return customer

    def _delete_customer(self, call: _Call, _params: JSON) -> JSON:
        customer = self._get("customer", call.path["id"])
        del self._objects["customer"][customer["id"]]
        self._emit(call, "customer.deleted", customer)
        return {"id": customer["id"], "object": "customer", "deleted": True}

    def _list_customers(self, _call: _Call, params: JSON) -> JSON:
        _allow(params, {"limit", "starting_after", "ending_before"})
        customers = list(self._objects.get("customer", {}).values())
        index = {customer["id"]: position for position, customer in enumerate(customers)}
        return self._page(customers, index, params, "/v1/customers", "customer")

    # -- tax rates and invoice items ---------------------------------------------------------------
    def _create_tax_rate(self, _call: _Call, params: JSON) -> JSON:
        _allow(params, {"display_name", "percentage", "inclusive", "jurisdiction", "country", "description",
                        "metadata"})
        text = _string(params, "percentage", required=True) or ""
        try:
            percentage = Decimal(text)
        except InvalidOperation:
            raise StripeApiError(400, f"Invalid decimal: {text}", param="percentage") from None
        if not Decimal(0) <= percentage <= Decimal(100):
            raise StripeApiError(400, "percentage must be between 0 and 100", param="percentage")
        inclusive = _string(params, "inclusive", required=True)
        if inclusive not in ("true", "false"):
            raise StripeApiError(400, f"Invalid boolean: {inclusive}", param="inclusive")
        rate: JSON = {
            "id": self._new_id("txr"), "object": "tax_rate", "active": True,
            "country": _string(params, "country"), "created": self._now(),
            "description": _string(params, "description"),
            "display_name": _string(params, "display_name", required=True),
            "inclusive": inclusive == "true", "jurisdiction": _string(params, "jurisdiction"),
            "livemode": False, "metadata": _metadata(params),
            # Stripe sends a JSON number; the Decimal kept aside is what tax is computed with
            "percentage": (
                int(percentage) if percentage == percentage.to_integral_value() else float(percentage)
            ),
            "tax_type": "vat",
        }
        self._tax_rates[rate["id"]] = percentage
        return self._store(rate)

    def _create_invoice_item(self, call: _Call, params: JSON) -> JSON:
        _allow(params, {"customer", "amount", "currency", "description", "period", "quantity", "unit_amount",
                        "tax_rates", "invoice", "metadata"})
        customer_id = _string(params, "customer", required=True)
        customer = self._get("customer", customer_id, param="customer", status=400)
        quantity = _integer(params, "quantity", minimum=1) or 1
        amount = _integer(params, "amount")
        unit_amount = _integer(params, "unit_amount")
        if amount is None:
            if unit_amount is None:
                raise StripeApiError(400, "Missing required param: amount.", code="parameter_missing",
                                     param="amount")
            amount = unit_amount * quantity
        now = self._now()
        period = _hash(params, "period")
        _allow(period, {"start", "end"})
        start = _integer(period, "start") or now
        end = _integer(period, "end") or start
        if end < start:
            raise StripeApiError(400, "The period end must be after the start.", param="period[end]")
        tax_rates = [self._get("tax_rate", rate, param="tax_rates", status=400)
                     for rate in _list_param(params, "tax_rates")]
        invoice_id = _string(params, "invoice")
        if invoice_id is not None:
            invoice = self._get("invoice", invoice_id, param="invoice", status=400)
            if invoice["status"] != "draft":
                raise StripeApiError(400, "Invoice items can only be added to draft invoices.",
                                     code="invoice_not_editable", param="invoice")
            if invoice["customer"] != customer["id"]:
                raise StripeApiError(400, "The invoice belongs to another customer.", param="invoice")
        item: JSON = {
            "id": self._new_id("ii"), "object": "invoiceitem", "amount": amount,
            "currency": _currency(params), "customer": customer["id"], "date": now,
            "description": _string(params, "description"), "discountable": True, "discounts": [],
            "invoice": None, "livemode": False, "metadata": _metadata(params),
            "period": {"start": start, "end": end}, "price": None, "proration": False, "quantity": quantity,
            "subscription": None, "tax_rates": tax_rates, "test_clock": None,
            "unit_amount": amount // quantity if unit_amount is None else unit_amount,
            "unit_amount_decimal": str(amount // quantity if unit_amount is None else unit_amount),
        }
        self._store(item)
        if invoice_id is not None:
            self._attach(self._objects["invoice"][invoice_id], [item])
        self._emit(call, "invoiceitem.created", item)
        return item

    def _line_for(self, item: JSON, invoice_id: str) -> JSON:
        amount = int(item["amount"])
        tax_amounts, exclusive_tax, inclusive_tax = [], 0, 0
        for rate in item["tax_rates"]:
            percentage = self._tax_rates[rate["id"]]
            if rate["inclusive"]:
                tax = amount - _round(Decimal(amount) * 100 / (100 + percentage))
                inclusive_tax += tax
            else:
                tax = _round(Decimal(amount) * percentage / 100)
                exclusive_tax += tax
            tax_amounts.append({"amount": tax, "inclusive": rate["inclusive"], "tax_rate": rate["id"],
                                "taxability_reason": None, "taxable_amount": amount - inclusive_tax})
        return {
            "id": self._new_id("il"), "object": "line_item", "amount": amount,
            "amount_excluding_tax": amount - inclusive_tax, "currency": item["currency"],
            "description": item["description"], "discount_amounts": [], "discountable": True, "discounts": [],
            "invoice": invoice_id, "invoice_item": item["id"], "livemode": False,
            "metadata": item["metadata"],
            "period": item["period"], "price": None, "proration": False, "quantity": item["quantity"],
            "subscription": None, "tax_amounts": tax_amounts, "tax_rates": item["tax_rates"],
            "type": "invoiceitem",
        }

    # -- invoices ----------------------------------------------------------------------------------
    def _create_invoice(self, call: _Call, params: JSON) -> JSON:
        _allow(params, {"customer", "currency", "description", "pending_invoice_items_behavior", "due_date",
                        "collection_method", "auto_advance", "metadata"})
        customer_id = _string(params, "customer", required=True)
        customer = self._get("customer", customer_id, param="customer", status=400)
        behavior = _string(params, "pending_invoice_items_behavior") or "include"
        if behavior not in ("include", "exclude"):
            raise StripeApiError(400, f"Invalid pending_invoice_items_behavior: {behavior}",
                                 param="pending_invoice_items_behavior")
        items = [
            item for item in self._objects.get("invoiceitem", {}).values()
            if behavior == "include" and item["customer"] == customer["id"] and item["invoice"] is None
        ]
        currencies = {item["currency"] for item in items}
        requested = _currency(params, required=False)
        if len(currencies) > 1 or (requested and currencies and requested not in currencies):
            raise StripeApiError(400, "The customer's pending invoice items are in several currencies; pass "
                                      "currency to choose which to invoice.", param="currency")
        currency = requested or (currencies.pop() if currencies else customer["currency"] or "usd")
        now = self._now()
        invoice: JSON = {
            "id": self._new_id("in"), "object": "invoice", "account_country": "US",
            "amount_due": 0, "amount_paid": 0, "amount_remaining": 0, "attempt_count": 0, "attempted": False,
            "auto_advance": False, "billing_reason": "manual", "charge": None,
            "collection_method": _string(params, "collection_method") or "charge_automatically",
            "created": now, "currency": currency, "customer": customer["id"],
            "customer_email": customer["email"], "customer_name": customer["name"],
            "customer_tax_exempt": customer["tax_exempt"], "description": _string(params, "description"),
            "due_date": _integer(params, "due_date"), "effective_at": None, "ending_balance": None,
            "lines": {"object": "list", "data": [], "has_more": False, "total_count": 0, "url": ""},
            "livemode": False, "metadata": _metadata(params), "number": None, "paid": False,
            "paid_out_of_band": False, "period_end": now, "period_start": now,
            "post_payment_credit_notes_amount": 0, "pre_payment_credit_notes_amount": 0,
            "starting_balance": 0, "status": "draft",
            "status_transitions": {"finalized_at": None, "marked_uncollectible_at": None, "paid_at": None,
                                   "voided_at": None},
            "subscription": None, "subtotal": 0, "subtotal_excluding_tax": 0, "tax": None, "total": 0,
            "total_excluding_tax": 0, "total_tax_amounts": [], "webhooks_delivered_at": None,
        }
        invoice["lines"]["url"] = f"/v1/invoices/{invoice['id']}/lines"
        self._attach(invoice, [item for item in items if item["currency"] == currency])
        self._store(invoice)
        self._emit(call, "invoice.created", invoice)
        return invoice

    def _attach(self, invoice: JSON, items: list[JSON]) -> None:
        for item in items:
            if item["currency"] != invoice["currency"]:
                raise StripeApiError(400, f"The invoice is in {invoice['currency']}, the item in "
                                          f"{item['currency']}.", param="currency")
            item["invoice"] = invoice["id"]
            invoice["lines"]["data"].append(self._line_for(item, invoice["id"]))
        lines = invoice["lines"]["data"]
        invoice["lines"]["total_count"] = len(lines)
        subtotal = sum(int(line["amount"]) for line in lines)
        taxes = [tax for line in lines for tax in line["tax_amounts"]]
        tax = sum(int(entry["amount"]) for entry in taxes)
        exclusive = sum(int(entry["amount"]) for entry in taxes if not entry["inclusive"])
        total = subtotal + exclusive
        invoice.update(
            subtotal=subtotal, subtotal_excluding_tax=subtotal - (tax - exclusive), total=total,
            total_excluding_tax=total - tax, tax=tax if taxes else None,
            total_tax_amounts=[{"amount": entry["amount"], "inclusive": entry["inclusive"],
                                "tax_rate": entry["tax_rate"]} for entry in taxes],
        )
        self._recompute_due(invoice)

    @staticmethod
    def _recompute_due(invoice: JSON) -> None:
        invoice["amount_due"] = max(0, invoice["total"] - invoice["pre_payment_credit_notes_amount"])
        invoice["amount_remaining"] = max(0, invoice["amount_due"] - invoice["amount_paid"])

    def _invoice_in(self, call: _Call, statuses: set[str], verb: str) -> JSON:
        invoice = self._get("invoice", call.path["id"])
        if invoice["status"] not in statuses:
            raise StripeApiError(400, f"You can only {verb} an invoice whose status is "
                                      f"{' or '.join(sorted(statuses))}; this one is {invoice['status']}.",
                                 code="invoice_unexpected_status" if invoice["status"] != "draft"
                                 else "invoice_not_editable")
        return invoice

    def _finalize(self, call: _Call, invoice: JSON) -> None:
        customer = self._objects.get("customer", {}).get(invoice["customer"])
        sequence = 1
        prefix = "SANDBOX"
        if customer is not None:
            sequence, prefix = customer["next_invoice_sequence"], customer["invoice_prefix"]
            customer["next_invoice_sequence"] += 1
        now = self._now()
        invoice.update(status="open", number=f"{prefix}-{sequence:04d}", effective_at=now)
        invoice["status_transitions"]["finalized_at"] = now
        self._emit(call, "invoice.finalized", invoice, {"status": "draft", "number": None})
        if invoice["amount_remaining"] == 0:
            self._mark_paid(call, invoice, "open")

    def _mark_paid(self, call: _Call, invoice: JSON, before: str) -> None:
        invoice.update(status="paid", paid=True, amount_paid=invoice["amount_due"], amount_remaining=0)
        invoice["status_transitions"]["paid_at"] = self._now()
        self._emit(call, "invoice.paid", invoice, {"status": before, "paid": False})

    def _finalize_invoice(self, call: _Call, params: JSON) -> JSON:
        _allow(params, {"auto_advance"})
        invoice = self._invoice_in(call, {"draft"}, "finalize")
        self._finalize(call, invoice)
        return invoice

    def _pay_invoice(self, call: _Call, params: JSON) -> JSON:
        _allow(params, {"paid_out_of_band", "payment_method", "source"})
        invoice = self._invoice_in(call, {"draft", "open", "uncollectible"}, "pay")
        if invoice["status"] == "draft":
            self._finalize(call, invoice)
            if invoice["status"] == "paid":
                return invoice
        before = invoice["status"]
        if _string(params, "paid_out_of_band") == "true":
            invoice["paid_out_of_band"] = True
            self._mark_paid(call, invoice, before)
            return invoice
        declined = _string(params, "payment_method") == "pm_card_chargeDeclined"
        charge = self._charge(call, invoice, declined=declined)
        invoice["attempt_count"] += 1
        invoice["attempted"] = True
        invoice["charge"] = charge["id"]
        if declined:
            raise StripeApiError(402, "Your card was declined.", type_="card_error", code="card_declined",
                                 decline_code="generic_decline", charge=charge["id"])
        self._mark_paid(call, invoice, before)
        return invoice

    @staticmethod
    def _outcome(declined: bool) -> JSON:
        if declined:
            return {"network_status": "declined_by_network", "reason": "generic_decline",
                    "risk_level": "normal",
                    "seller_message": "The bank did not return any further details with this decline.",
                    "type": "issuer_declined"}
        return {"network_status": "approved_by_network", "reason": None, "risk_level": "normal",
                "seller_message": "Payment complete.", "type": "authorized"}

    def _charge(self, call: _Call, invoice: JSON, *, declined: bool) -> JSON:
        charge_id = self._new_id("ch")
        charge: JSON = {
            "id": charge_id, "object": "charge", "amount": invoice["amount_remaining"],
            "amount_captured": 0 if declined else invoice["amount_remaining"], "amount_refunded": 0,
            "balance_transaction": None if declined else self._new_id("txn"),
            "billing_details": {"address": None, "email": invoice["customer_email"],
                                "name": invoice["customer_name"], "phone": None},
            "captured": not declined, "created": self._now(), "currency": invoice["currency"],
            "customer": invoice["customer"], "description": f"Payment for Invoice {invoice['number']}",
            "disputed": False, "failure_code": "card_declined" if declined else None,
            "failure_message": "Your card was declined." if declined else None, "invoice": invoice["id"],
            "livemode": False, "metadata": {},
            "outcome": self._outcome(declined),
            "paid": not declined, "payment_intent": None, "payment_method": self._new_id("pm"),
            "payment_method_details": {"card": {"brand": "visa", "country": "US", "exp_month": 8,
                                                "exp_year": 2030, "funding": "credit",
                                                "last4": "0002" if declined else "4242"}, "type": "card"},
            "receipt_url": None, "refunded": False,
            "refunds": {"object": "list", "data": [], "has_more": False, "total_count": 0,
                        "url": f"/v1/charges/{charge_id}/refunds"},
            "status": "failed" if declined else "succeeded",
        }
        self._store(charge)
        self._emit(call, "charge.failed" if declined else "charge.succeeded", charge)
        return charge

    def _void_invoice(self, call: _Call, params: JSON) -> JSON:
        _allow(params, set())
        invoice = self._invoice_in(call, {"open", "uncollectible"}, "void")
        before = invoice["status"]
        invoice["status"] = "void"
        invoice["status_transitions"]["voided_at"] = self._now()
        self._emit(call, "invoice.voided", invoice, {"status": before})
        return invoice

    def _mark_uncollectible(self, call: _Call, params: JSON) -> JSON:
        _allow(params, set())
        invoice = self._invoice_in(call, {"open"}, "mark uncollectible")
        invoice["status"] = "uncollectible"
        invoice["status_transitions"]["marked_uncollectible_at"] = self._now()
        self._emit(call, "invoice.marked_uncollectible", invoice, {"status": "open"})
        return invoice

    # -- refunds, credit notes, payouts -----------------------------------------------------------
    def _create_refund(self, call: _Call, params: JSON) -> JSON:
        _allow(params, {"charge", "amount", "reason", "metadata"})
        charge = self._get("charge", _string(params, "charge", required=True), param="charge", status=400)
        if charge["status"] != "succeeded":
            raise StripeApiError(400, f"Charge {charge['id']} has not succeeded and cannot be refunded.",
                                 param="charge")
        remaining = charge["amount"] - charge["amount_refunded"]
        if remaining == 0:
            raise StripeApiError(400, f"Charge {charge['id']} has already been refunded.",
                                 code="charge_already_refunded", param="charge")
        requested = _integer(params, "amount", minimum=1)
        amount = remaining if requested is None else requested
        if amount > remaining:
            raise StripeApiError(400, f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                                      f"({remaining})", param="amount")
        reason = _string(params, "reason")
        if reason not in (None, "duplicate", "fraudulent", "requested_by_customer"):
            raise StripeApiError(400, f"Invalid reason: {reason}", param="reason")
        refund: JSON = {
            "id": self._new_id("re"), "object": "refund", "amount": amount,
            "balance_transaction": self._new_id("txn"), "charge": charge["id"], "created": self._now(),
            "currency": charge["currency"], "metadata": _metadata(params), "payment_intent": None,
            "reason": reason, "receipt_number": None, "source_transfer_reversal": None, "status": "succeeded",
            "transfer_reversal": None,
        }
        self._store(refund)
        previous = {"amount_refunded": charge["amount_refunded"], "refunded": charge["refunded"]}
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        charge["refunds"]["data"].insert(0, refund)
        charge["refunds"]["total_count"] += 1
        self._emit(call, "charge.refunded", charge, previous)
        return refund

    def _create_credit_note(self, call: _Call, params: JSON) -> JSON:
        _allow(params, {"invoice", "amount", "lines", "reason", "memo", "metadata"})
        invoice = self._get("invoice", _string(params, "invoice", required=True), param="invoice", status=400)
        if invoice["status"] not in ("open", "paid"):
            raise StripeApiError(
                400, f"You can only credit an open or paid invoice; this one is {invoice['status']}.",
                code="invoice_unexpected_status", param="invoice",
            )
        reason = _string(params, "reason")
        if reason not in (None, "duplicate", "fraudulent", "order_change", "product_unsatisfactory"):
            raise StripeApiError(400, f"Invalid reason: {reason}", param="reason")
        lines = self._credit_note_lines(invoice, params)
        total = sum(line["amount"] for line in lines)
        credited = invoice["pre_payment_credit_notes_amount"] + invoice["post_payment_credit_notes_amount"]
        if total <= 0 or total > invoice["total"] - credited:
            raise StripeApiError(
                400, f"The credit note amount ({total}) must be positive and at most the invoice's "
                     f"uncredited total ({invoice['total'] - credited}).", param="amount",
            )
        number_of = sum(1 for note in self._objects.get("credit_note", {}).values()
                        if note["invoice"] == invoice["id"]) + 1
        pre_payment = invoice["status"] == "open"
        now = self._now()
        note: JSON = {
            "id": self._new_id("cn"), "object": "credit_note", "amount": total, "amount_shipping": 0,
            "created": now, "currency": invoice["currency"], "customer": invoice["customer"],
            "customer_balance_transaction": None, "discount_amount": 0, "discount_amounts": [],
            "effective_at": now, "invoice": invoice["id"],
            "lines": {"object": "list", "data": lines, "has_more": False, "total_count": len(lines),
                      "url": ""},
            "livemode": False, "memo": _string(params, "memo"), "metadata": _metadata(params),
            "number": f"{invoice['number']}-CN-{number_of:02d}", "out_of_band_amount": None,
            "pdf": None, "reason": reason, "refund": None, "status": "issued", "subtotal": total,
            "subtotal_excluding_tax": total, "tax_amounts": [], "total": total, "total_excluding_tax": total,
            "type": "pre_payment" if pre_payment else "post_payment", "voided_at": None,
        }
        note["lines"]["url"] = f"/v1/credit_notes/{note['id']}/lines"
        if pre_payment:
            invoice["pre_payment_credit_notes_amount"] += total
            self._recompute_due(invoice)
        else:
            invoice["post_payment_credit_notes_amount"] += total
        self._store(note)
        self._emit(call, "credit_note.created", note)
        return note

    def _credit_note_lines(self, invoice: JSON, params: JSON) -> list[JSON]:
        if "lines" not in params:
            amount = _integer(params, "amount", required=True, minimum=1) or 0
            return [self._credit_note_line(amount, "Credit", None, 1)]
        if "amount" in params:
            raise StripeApiError(400, "Pass either amount or lines, not both.", param="amount")
        lines = []
        invoice_lines = {line["id"]: line for line in invoice["lines"]["data"]}
        for position, raw in enumerate(_list_param(params, "lines")):
            entry = raw if isinstance(raw, dict) else {}
            _allow(entry, {"type", "invoice_line_item", "amount", "quantity", "unit_amount", "description"})
            kind = _string(entry, "type", required=True)
            quantity = _integer(entry, "quantity", minimum=1) or 1
            if kind == "invoice_line_item":
                line_id = _string(entry, "invoice_line_item", required=True) or ""
                if line_id not in invoice_lines:
                    raise StripeApiError(400, f"No such invoice line item: '{line_id}'", code="resource_missing",
                                         param=f"lines[{position}][invoice_line_item]")
                source = invoice_lines[line_id]
                credited = _integer(entry, "amount", minimum=1)
                amount = source["amount"] if credited is None else credited
                lines.append(self._credit_note_line(amount, source["description"], line_id, quantity))
            elif kind == "custom_line_item":
                unit = _integer(entry, "unit_amount", required=True, minimum=1) or 0
                description = _string(entry, "description")
                lines.append(self._credit_note_line(unit * quantity, description, None, quantity))
            else:
                raise StripeApiError(400, f"Invalid type: {kind}", param=f"lines[{position}][type]")
        return lines

    def _credit_note_line(self, amount: int, description: str | None, invoice_line: str | None,
                          quantity: int) -> JSON:
        return {
            "id": self._new_id("cnli"), "object": "credit_note_line_item", "amount": amount,
            "amount_excluding_tax": amount, "description": description, "discount_amount": 0,
            "discount_amounts": [], "invoice_line_item": invoice_line, "livemode": False,
            "quantity": quantity,
            "tax_amounts": [], "tax_rates": [],
            "type": "invoice_line_item" if invoice_line else "custom_line_item",
            "unit_amount": amount // quantity, "unit_amount_decimal": str(amount // quantity),
        }

    def _create_payout(self, call: _Call, params: JSON) -> JSON:
        _allow(params, {"amount", "currency", "description", "method", "statement_descriptor", "metadata"})
        amount = _integer(params, "amount", required=True, minimum=1)
        method = _string(params, "method") or "standard"
        if method not in ("standard", "instant"):
            raise StripeApiError(400, f"Invalid method: {method}", param="method")
        now = self._now()
        payout: JSON = {
            "id": self._new_id("po"), "object": "payout", "amount": amount,
            "arrival_date": now - now % 86_400 + (0 if method == "instant" else 2 * 86_400),
            "automatic": False, "balance_transaction": self._new_id("txn"), "created": now,
            "currency": _currency(params), "description": _string(params, "description"),
            "destination": "ba_1SandboxBankAccount000000", "failure_balance_transaction": None,
            "failure_code": None, "failure_message": None, "livemode": False, "metadata": _metadata(params),
            "method": method, "original_payout": None, "reconciliation_status": "not_applicable",
            "reversed_by": None, "source_type": "card",
            "statement_descriptor": _string(params, "statement_descriptor"), "status": "pending",
            "type": "bank_account",
        }
        self._store(payout)
        self._emit(call, "payout.created", payout)
        # the sandbox has no bank: the payout lands at once
        payout["status"] = "paid"
        self._emit(call, "payout.paid", payout, {"status": "pending"})
        return payout


    # -- generic list and search --------------------------------------------------------------------
    def _list(self, kind: str, url: str, filters: set[str]) -> Handler:
        """Return a List handler for ``kind`` with Stripe's equality filters (``?customer=cus_...``)."""
        def list_objects(_call: _Call, params: JSON) -> JSON:
            _allow(params, {"limit", "starting_after", "ending_before", *filters})
            wanted = {key: params[key] for key in filters if key in params}
            objects = [obj for obj in self._objects.get(kind, {}).values()
                       if all(_matches(obj, key, value) for key, value in wanted.items())]
            index = {obj["id"]: position for position, obj in enumerate(objects)}
            return self._page(objects, index, {k: v for k, v in params.items() if k not in filters}, url, kind)
        return list_objects

    def _search(self, kind: str) -> Handler:
        """Return a Search handler: ``query=metadata['syncline_id']:'acc_1' AND active:'true'``.

        Supports Stripe's exact-match clauses joined by ``AND``, which is what Syncline sends; Stripe's
        index lags writes by up to a minute, the sandbox's does not.
        """
        def search(_call: _Call, params: JSON) -> JSON:
            _allow(params, {"query", "limit", "page", "expand"})
            clauses = _parse_query(_string(params, "query", required=True) or "")
            limit = _integer(params, "limit") or 10
            if not 1 <= limit <= 100:
                raise StripeApiError(400, "This value must be between 1 and 100.", param="limit")
            indexed_before = self._clock() - self.search_lag_seconds
            hits = [obj for obj in reversed(list(self._objects.get(kind, {}).values()))
                    if (not self.search_lag_seconds or obj["created"] <= indexed_before)
                    and all(_matches(obj, field_, value) for field_, value in clauses)]
            plural = "invoices" if kind == "invoice" else f"{kind}s"
            return {"object": "search_result", "data": hits[:limit], "has_more": len(hits) > limit,
                    "next_page": None, "url": f"/v1/{plural}/search"}
        return search

    # -- products and prices -----------------------------------------------------------------------
    def _create_product(self, call: _Call, params: JSON) -> JSON:
        _allow(params, {"name", "active", "description", "metadata", "unit_label", "url"})
        now = self._now()
        product: JSON = {
            "id": self._new_id("prod"), "object": "product", "active": _boolean(params, "active", True),
            "created": now, "default_price": None, "description": _string(params, "description"),
            "images": [], "livemode": False, "marketing_features": [], "metadata": _metadata(params),
            "name": _string(params, "name", required=True), "package_dimensions": None, "shippable": None,
            "statement_descriptor": None, "tax_code": None, "unit_label": _string(params, "unit_label"),
            "updated": now, "url": _string(params, "url"),
        }
        self._store(product)
        self._emit(call, "product.created", product)
        return product

    def _update_product(self, call: _Call, params: JSON) -> JSON:
        _allow(params, {"name", "active", "description", "metadata", "unit_label", "url"})
        product = self._get("product", call.path["id"])
        if "name" in params:
            _string(params, "name", required=True)
        changes: JSON = {key: _string(params, key) for key in ("name", "description", "unit_label", "url")
                         if key in params}
        if "active" in params:
            changes["active"] = _boolean(params, "active", True)
        if "metadata" in params:
            changes["metadata"] = {**product["metadata"], **_metadata(params)} if params["metadata"] != "" else {}
        return self._apply(call, product, changes, "product.updated")

    def _apply(self, call: _Call, obj: JSON, changes: JSON, event: str) -> JSON:
        """Apply ``changes``; emit ``event`` with ``previous_attributes`` when something changed."""
        previous = {key: obj.get(key) for key, value in changes.items() if obj.get(key) != value}
        if previous:
            obj.update({key: changes[key] for key in previous})
            if "updated" in obj:
                obj["updated"] = self._now()
            self._emit(call, event, obj, previous)
        return obj

    def _create_price(self, call: _Call, params: JSON) -> JSON:
        _allow(params, {"currency", "product", "unit_amount", "recurring", "metadata", "nickname", "active",
                        "lookup_key", "tax_behavior"})
        product = self._get("product", _string(params, "product", required=True), param="product", status=400)
        if not product["active"]:
            raise StripeApiError(400, f"The product {product['id']} is archived; prices cannot be added to it.",
                                 param="product")
        amount = _integer(params, "unit_amount", required=True, minimum=0)
        recurring = None
        if "recurring" in params:
            raw = _hash(params, "recurring")
            _allow(raw, {"interval", "interval_count", "usage_type"})
            interval = _string(raw, "interval", required=True)
            if interval not in ("day", "week", "month", "year"):
                raise StripeApiError(400, f"Invalid interval: {interval}", param="recurring[interval]")
            count = _integer(raw, "interval_count", minimum=1) or 1
            recurring = {"interval": interval, "interval_count": count, "meter": None,
                         "trial_period_days": None, "usage_type": _string(raw, "usage_type") or "licensed"}
        price: JSON = {
            "id": self._new_id("price"), "object": "price", "active": _boolean(params, "active", True),
            "billing_scheme": "per_unit", "created": self._now(), "currency": _currency(params),
            "custom_unit_amount": None, "livemode": False, "lookup_key": _string(params, "lookup_key"),
            "metadata": _metadata(params), "nickname": _string(params, "nickname"), "product": product["id"],
            "recurring": recurring, "tax_behavior": _string(params, "tax_behavior") or "unspecified",
            "tiers_mode": None, "transform_quantity": None,
            "type": "recurring" if recurring else "one_time", "unit_amount": amount,
            "unit_amount_decimal": str(amount),
        }
        self._store(price)
        self._emit(call, "price.created", price)
        return price

    def _update_price(self, call: _Call, params: JSON) -> JSON:
        # amounts, currency and interval are immutable: Stripe refuses them as unknown parameters
        _allow(params, {"active", "metadata", "nickname", "lookup_key", "tax_behavior"})
        price = self._get("price", call.path["id"])
        changes: JSON = {key: _string(params, key) for key in ("nickname", "lookup_key") if key in params}
        if "active" in params:
            changes["active"] = _boolean(params, "active", True)
        if "tax_behavior" in params:
            changes["tax_behavior"] = _string(params, "tax_behavior") or "unspecified"
        if "metadata" in params:
            changes["metadata"] = {**price["metadata"], **_metadata(params)} if params["metadata"] != "" else {}
        return self._apply(call, price, changes, "price.updated")

    # -- subscriptions -----------------------------------------------------------------------------
    _SUBSCRIPTION_PARAMS = frozenset({"items", "metadata", "description", "cancel_at_period_end",
                                      "collection_method", "days_until_due", "payment_behavior",
                                      "proration_behavior"})

    def _subscription_item(self, subscription_id: str, entry: JSON, position: int, now: int) -> JSON:
        price = self._get("price", _string(entry, "price", required=True), param=f"items[{position}][price]",
                          status=400)
        if price["recurring"] is None:
            raise StripeApiError(400, f"The price specified ({price['id']}) is not recurring; subscriptions "
                                      "need recurring prices.", param=f"items[{position}][price]")
        if not price["active"]:
            raise StripeApiError(400, f"The price specified ({price['id']}) is inactive.",
                                 param=f"items[{position}][price]")
        return {
            "id": self._new_id("si"), "object": "subscription_item", "created": now, "discounts": [],
            "metadata": {}, "price": _snapshot(price),
            "quantity": 1 if "quantity" not in entry else _integer(entry, "quantity", minimum=0),
            "subscription": subscription_id, "tax_rates": [],
        }

    def _check_items(self, subscription: JSON) -> None:
        prices = [item["price"] for item in subscription["items"]["data"]]
        if not prices:
            raise StripeApiError(400, "A subscription needs at least one item.", param="items")
        if len({price["currency"] for price in prices}) > 1:
            raise StripeApiError(400, "All prices on a subscription must have the same currency.", param="items")
        if len({(price["recurring"]["interval"], price["recurring"]["interval_count"]) for price in prices}) > 1:
            raise StripeApiError(400, "All prices on a subscription must have the same recurring interval.",
                                 param="items")
        if len({price["id"] for price in prices}) < len(prices):
            raise StripeApiError(400, "A price may appear on only one item of a subscription.", param="items")

    def _create_subscription(self, call: _Call, params: JSON) -> JSON:
        _allow(params, {"customer", *self._SUBSCRIPTION_PARAMS})
        customer = self._get("customer", _string(params, "customer", required=True), param="customer", status=400)
        now = self._now()
        subscription_id = self._new_id("sub")
        entries = _list_param(params, "items")
        items = [self._subscription_item(subscription_id, entry if isinstance(entry, dict) else {}, position, now)
                 for position, entry in enumerate(entries)]
        subscription: JSON = {
            "id": subscription_id, "object": "subscription", "billing_cycle_anchor": now, "cancel_at": None,
            "cancel_at_period_end": _boolean(params, "cancel_at_period_end", False), "canceled_at": None,
            "collection_method": _string(params, "collection_method") or "charge_automatically",
            "created": now, "currency": items[0]["price"]["currency"] if items else None,
            "customer": customer["id"], "days_until_due": _integer(params, "days_until_due"),
            "description": _string(params, "description"), "ended_at": None,
            "items": {"object": "list", "data": items, "has_more": False, "total_count": len(items),
                      "url": f"/v1/subscription_items?subscription={subscription_id}"},
            "latest_invoice": None, "livemode": False, "metadata": _metadata(params), "start_date": now,
            "status": "active", "test_clock": None,
        }
        self._check_items(subscription)
        self._set_period(subscription, now)
        self._store(subscription)
        self._emit(call, "customer.subscription.created", subscription)
        return subscription

    @staticmethod
    def _set_period(subscription: JSON, start: int) -> None:
        recurring = subscription["items"]["data"][0]["price"]["recurring"]
        days = {"day": 1, "week": 7, "month": 30, "year": 365}[recurring["interval"]] * recurring["interval_count"]
        subscription["current_period_start"] = start
        subscription["current_period_end"] = start + days * 86_400
        for item in subscription["items"]["data"]:
            item["current_period_start"] = subscription["current_period_start"]
            item["current_period_end"] = subscription["current_period_end"]

    def _update_subscription(self, call: _Call, params: JSON) -> JSON:
        _allow(params, {*self._SUBSCRIPTION_PARAMS, "cancel_at"})
        subscription = self._get("subscription", call.path["id"])
        if subscription["status"] == "canceled" and set(params) - {"metadata"}:
            raise StripeApiError(400, "A canceled subscription can only update its cancellation_details and "
                                      "metadata.")
        previous: JSON = {}
        if "items" in params:
            items = _snapshot(subscription["items"])
            by_id = {item["id"]: item for item in items["data"]}
            for position, raw in enumerate(_list_param(params, "items")):
                entry = raw if isinstance(raw, dict) else {}
                _allow(entry, {"id", "price", "quantity", "deleted"})
                item_id = _string(entry, "id")
                if item_id is None:
                    items["data"].append(self._subscription_item(subscription["id"], entry, position, self._now()))
                    continue
                if item_id not in by_id:
                    raise StripeApiError(400, f"No such subscription item: '{item_id}'", code="resource_missing",
                                         param=f"items[{position}][id]")
                item = by_id[item_id]
                if _boolean(entry, "deleted", False):
                    items["data"].remove(item)
                    continue
                if "price" in entry:
                    replacement = self._subscription_item(subscription["id"], entry, position, item["created"])
                    item["price"] = replacement["price"]
                if "quantity" in entry:
                    item["quantity"] = _integer(entry, "quantity", minimum=0)
            items["total_count"] = len(items["data"])
            if items != subscription["items"]:
                candidate = {**subscription, "items": items}
                self._check_items(candidate)
                previous["items"] = subscription["items"]
                subscription["items"] = items
                self._set_period(subscription, subscription["current_period_start"])
        changes: JSON = {key: _string(params, key) for key in ("description", "collection_method")
                         if key in params}
        if "cancel_at_period_end" in params:
            changes["cancel_at_period_end"] = _boolean(params, "cancel_at_period_end", False)
        if "cancel_at" in params:
            changes["cancel_at"] = _integer(params, "cancel_at")
        if "metadata" in params:
            changes["metadata"] = (
                {**subscription["metadata"], **_metadata(params)} if params["metadata"] != "" else {}
            )
        previous.update({key: subscription.get(key) for key, value in changes.items()
                         if subscription.get(key) != value})
        subscription.update({key: changes[key] for key in previous if key in changes})
        if previous:
            self._emit(call, "customer.subscription.updated", subscription, previous)
        return subscription

    def _cancel_subscription(self, call: _Call, params: JSON) -> JSON:
        _allow(params, {"invoice_now", "prorate", "cancellation_details"})
        subscription = self._get("subscription", call.path["id"])
        if subscription["status"] == "canceled":
            raise StripeApiError(404, f"No such subscription: '{subscription['id']}'", code="resource_missing",
                                 param="id")
        now = self._now()
        previous = {"status": subscription["status"], "canceled_at": None, "ended_at": None}
        subscription.update(status="canceled", canceled_at=now, ended_at=now)
        self._emit(call, "customer.subscription.deleted", subscription, previous)
        return subscription

    # -- invoice and credit note updates -----------------------------------------------------------
    def _update_invoice(self, call: _Call, params: JSON) -> JSON:
        _allow(params, {"description", "metadata", "due_date", "auto_advance", "footer", "collection_method"})
        invoice = self._get("invoice", call.path["id"])
        if invoice["status"] in ("void", "paid", "uncollectible") and set(params) - {"metadata"}:
            raise StripeApiError(400, f"This invoice is {invoice['status']}; only its metadata can change.",
                                 code="invoice_not_editable")
        changes: JSON = {}
        if "collection_method" in params:
            method = _string(params, "collection_method") or "charge_automatically"
            if method not in ("charge_automatically", "send_invoice"):
                raise StripeApiError(400, f"Invalid collection_method: {method}", param="collection_method")
            if invoice["status"] != "draft":
                raise StripeApiError(400, "The collection method can only change on a draft invoice.",
                                     code="invoice_not_editable", param="collection_method")
            changes["collection_method"] = method
        method_after = changes.get("collection_method", invoice["collection_method"])
        if _integer(params, "due_date") is not None and method_after != "send_invoice":
            raise StripeApiError(400, "Invoices with collection_method=charge_automatically cannot have a "
                                      "due_date.", param="due_date")
        if "description" in params:
            changes["description"] = _string(params, "description")
        if "due_date" in params:
            changes["due_date"] = _integer(params, "due_date")
        if "auto_advance" in params:
            changes["auto_advance"] = _boolean(params, "auto_advance", False)
        if "metadata" in params:
            changes["metadata"] = {**invoice["metadata"], **_metadata(params)} if params["metadata"] != "" else {}
        return self._apply(call, invoice, changes, "invoice.updated")

    def _update_credit_note(self, call: _Call, params: JSON) -> JSON:
        _allow(params, {"memo", "metadata"})
        note = self._get("credit_note", call.path["id"])
        changes: JSON = {}
        if "memo" in params:
            changes["memo"] = _string(params, "memo")
        if "metadata" in params:
            changes["metadata"] = {**note["metadata"], **_metadata(params)} if params["metadata"] != "" else {}
        return self._apply(call, note, changes, "credit_note.updated")


def _boolean(params: Mapping[str, Any], key: str, default: bool) -> bool:
    value = _string(params, key)
    if value is None:
        return default
    if value not in ("true", "false"):
        raise StripeApiError(400, f"Invalid boolean: {value}", param=key)
    return value == "true"


def _field_value(obj: Mapping[str, Any], field_: str) -> Any:
    if field_.startswith("metadata['") and field_.endswith("']"):
        return obj.get("metadata", {}).get(field_[len("metadata['"):-2])
    if field_ == "price":  # subscriptions: any item on that price
        return [item["price"]["id"] for item in obj.get("items", {}).get("data", [])]
    return obj.get(field_)


def _matches(obj: Mapping[str, Any], field_: str, wanted: Any) -> bool:
    value = _field_value(obj, field_)
    if isinstance(value, list):
        return wanted in value
    if isinstance(value, bool):
        value = "true" if value else "false"
    return value is not None and str(value) == str(wanted)


_CLAUSE = re.compile(r"\s*([a-z_]+(?:\['[^'\\]*'\])?)\s*:\s*'((?:[^'\\]|\\.)*)'\s*")


def _parse_query(query: str) -> list[tuple[str, str]]:
    """Parse ``field:'value' AND metadata['k']:'v'`` (exact matches joined by AND) into pairs."""
    clauses: list[tuple[str, str]] = []
    for part in re.split(r"\s+AND\s+", query.strip()):
        match = _CLAUSE.fullmatch(part)
        if match is None:
            raise StripeApiError(400, f"Invalid search query: {query!r}. The sandbox supports field:'value' "
                                      "clauses joined by AND.", code="parameter_invalid_string", param="query")
        clauses.append((match.group(1), re.sub(r"\\(.)", r"\1", match.group(2))))
    return clauses
