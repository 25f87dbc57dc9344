"""The HTTP surface: vendor webhooks, health, metrics and pipeline status."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial

import orjson
import structlog
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from opentelemetry import propagate
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import URL, Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from syncline.api.problems import problem
from syncline.errors import SignatureError, SynclineError
from syncline.observe import metrics
from syncline.observe.tracing import TraceMiddleware, parse_traceparent
from syncline.pipeline.inbox import InboxWriter, Received
from syncline.runtime import Syncline

log = structlog.get_logger("syncline.api")


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


_BodyReader = Callable[[int], Awaitable[bytes]]
_WEBHOOKS = "/v1/webhooks/"


class _SynclineApp(FastAPI):
    """The FastAPI app, with webhook POSTs dispatched before FastAPI's own middleware stack.

    Webhook ingest is the hot path (thousands of requests a second). Profiled under load,
    FastAPI's routing, request objects and dependency solving, and then its per-request
    telemetry and body-limit middleware, cost more than verifying, parsing and queueing the
    event itself. Webhooks therefore go through the tracing middleware and
    :class:`_WebhookFastPath` only; everything else is plain FastAPI.
    """

    webhook_chain: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (self.webhook_chain is not None and scope["type"] == "http" and scope["method"] == "POST"
                and scope.get("path", "").startswith(_WEBHOOKS)):
            await self.webhook_chain(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class _WebhookFastPath:
    """ASGI app: answer ``POST /v1/webhooks/{connection}`` with the handler the declared route calls.

    Anything else it is given (an empty or nested connection segment) goes to ``app``.
    """

    def __init__(self, app: ASGIApp, ingest: Callable[[str, Mapping[str, str], _BodyReader, str, str],
                                                        Awaitable[Response]]) -> None:
        self.app = app
        self.ingest = ingest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "POST" or not path.startswith(_WEBHOOKS):
            await self.app(scope, receive, send)
            return
        connection = path[len(_WEBHOOKS):]
        if not connection or "/" in connection:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)

        async def read_body(limit: int) -> bytes:
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise _TooLarge
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Disconnected
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise _TooLarge
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)

        try:
            response = await self.ingest(connection, headers, read_body, "POST", str(URL(scope=scope)))
        except _Disconnected:
            return
        await response(scope, receive, send)


def _trace_context(headers: Mapping[str, str]) -> str | None:
    """The traceparent deliveries of this event continue: the request's span, else the caller's."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if "traceparent" in carrier:
        return carrier["traceparent"]
    given = headers.get("traceparent")
    return given.strip().lower() if given and parse_traceparent(given) else None


def create_app(syncline: Syncline, *, run_workers: bool = False, routers: Sequence[APIRouter] = ()) -> FastAPI:
    """Build the ASGI app; with ``run_workers`` the normalizer and delivery workers run inside it.

    The management API, the console and the flows API (when installed) are mounted too; ``routers``
    adds further routers.
    """
    writer = InboxWriter(syncline.engine)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await writer.start()
        stop = asyncio.Event()
        background = asyncio.create_task(syncline.run_workers(stop)) if run_workers else None
        try:
            yield
        finally:
            stop.set()
            if background is not None:
                await background
            await writer.stop()

    app = _SynclineApp(
        title="Syncline", version="0.1.0", lifespan=lifespan,
        description="Quote-to-cash integration middleware: webhooks in, exactly-once deliveries out.",
    )
    app.state.syncline = syncline
    app.state.inbox_writer = writer

    @app.exception_handler(StarletteHTTPException)
    async def _http_problem(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = problem(exc.status_code, str(exc.detail), str(exc.detail), f"http_{exc.status_code}")
        # Keep headers such as Allow (405) and WWW-Authenticate (401) that the status requires.
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_problem(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"])
        return problem(422, "Invalid request", f"{where}: {first['msg']}", "request_invalid")

    async def ingest(connection: str, headers: Mapping[str, str], read_body: _BodyReader, method: str,
                     url: str) -> Response:
        """Verify, deduplicate and durably store one vendor event, then acknowledge it."""
        started = time.perf_counter()
        connector = syncline.connectors.get(connection)
        if connector is None:
            return problem(404, "Unknown connection", f"no connection named {connection!r} is configured",
                           "connection_unknown")
        limit = syncline.config.connections[connection].webhook.max_body_bytes
        try:
            body = await read_body(limit)
        except _TooLarge:
            metrics.webhooks.labels(connection, "too_large").inc()
            return problem(413, "Payload too large", f"webhook bodies are limited to {limit} bytes",
                           "payload_too_large")
        try:
            connector.verify_webhook_request(headers, body, now=time.time(), method=method, url=url)
        except SignatureError as exc:
            metrics.webhooks.labels(connection, "rejected").inc()
            log.warning("webhook rejected", connection=connection, code=exc.code)
            return problem(400, "Signature verification failed", exc.message, exc.code)
        try:
            payload = connector.parse_body(body)
            identity = connector.identify(payload)
            item = Received(connection, identity.event_id, identity.event_type, body,
                            traceparent=_trace_context(headers))
        except (orjson.JSONDecodeError, SynclineError) as exc:
            # Authentic but unreadable: keep the bytes and park them for a person.
            reason = f"body is not valid JSON: {exc}" if isinstance(exc, orjson.JSONDecodeError) else str(exc)
            digest = hashlib.sha256(body).hexdigest()
            item = Received(connection, f"sha256:{digest}", None, body, parked_reason=reason)
        try:
            fresh = await writer.submit(item)
        except Exception:
            log.exception("inbox write failed", connection=connection)
            return problem(503, "Store unavailable", "the event was not stored; the sender should retry",
                           "store_unavailable")
        syncline.inbox_arrived.set()
        outcome = "parked" if item.parked_reason else ("received" if fresh else "duplicate")
        metrics.webhooks.labels(connection, outcome).inc()
        metrics.ingest_seconds.labels(connection).observe(time.perf_counter() - started)
        acknowledgement = connector.webhook_response(body)
        if acknowledgement is not None:
            return Response(acknowledgement[0], media_type=acknowledgement[1])
        return Response(
            orjson.dumps({"received": True, "duplicate": not fresh, "parked": item.parked_reason is not None}),
            media_type="application/json",
        )

    @app.post(
        "/v1/webhooks/{connection}",
        summary="Receive a vendor webhook",
        responses={400: {"description": "signature invalid"}, 404: {"description": "unknown connection"},
                   413: {"description": "body too large"}},
    )
    async def receive_webhook(connection: str, request: Request) -> Response:
        """Verify, deduplicate and durably store one vendor event, then acknowledge it.

        Served by :class:`_SynclineApp` before FastAPI's routing; declared here for the
        OpenAPI document (and as the path taken if the fast path is ever bypassed).
        """
        return await ingest(connection, request.headers, lambda limit: _read_limited(request, limit),
                            request.method, str(request.url))

    @app.get("/health", summary="Liveness and store reachability")
    async def health() -> dict[str, object]:
        backlog = await asyncio.to_thread(syncline.backlog)
        return {"status": "ok", "backlog": backlog}

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.webhook_chain = TraceMiddleware(_WebhookFastPath(partial(FastAPI.__call__, app), ingest=ingest))
    from syncline.api.management import mount

    mount(app, routers)
    return app
