"""The HTTP surface: vendor webhooks, health, metrics and pipeline status."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from syncline.api.problems import problem
from syncline.errors import SignatureError, SynclineError
from syncline.observe import metrics
from syncline.pipeline.inbox import InboxWriter, Received
from syncline.runtime import Syncline

log = structlog.get_logger("syncline.api")


class _TooLarge(Exception):
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


def create_app(syncline: Syncline, *, run_workers: bool = False) -> FastAPI:
    """Build the ASGI app; with ``run_workers`` the normalizer and delivery workers run inside it."""
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

    app = FastAPI(
        title="Syncline", version="0.1.0", lifespan=lifespan,
        description="Quote-to-cash integration middleware: webhooks in, exactly-once deliveries out.",
    )
    app.state.syncline = syncline
    app.state.inbox_writer = writer

    @app.exception_handler(StarletteHTTPException)
    async def _http_problem(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), str(exc.detail), f"http_{exc.status_code}")

    @app.exception_handler(RequestValidationError)
    async def _validation_problem(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"])
        return problem(422, "Invalid request", f"{where}: {first['msg']}", "request_invalid")

    @app.post(
        "/v1/webhooks/{connection}",
        summary="Receive a vendor webhook",
        responses={400: {"description": "signature invalid"}, 404: {"description": "unknown connection"},
                   413: {"description": "body too large"}},
    )
    async def receive_webhook(connection: str, request: Request) -> Response:
        """Verify, deduplicate and durably store one vendor event, then acknowledge it."""
        started = time.perf_counter()
        connector = syncline.connectors.get(connection)
        if connector is None:
            return problem(404, "Unknown connection", f"no connection named {connection!r} is configured",
                           "connection_unknown")
        limit = syncline.config.connections[connection].webhook.max_body_bytes
        try:
            body = await _read_limited(request, limit)
        except _TooLarge:
            metrics.webhooks.labels(connection, "too_large").inc()
            return problem(413, "Payload too large", f"webhook bodies are limited to {limit} bytes",
                           "payload_too_large")
        try:
            connector.verify_webhook_request(request.headers, body, now=time.time(), method=request.method,
                                             url=str(request.url))
        except SignatureError as exc:
            metrics.webhooks.labels(connection, "rejected").inc()
            log.warning("webhook rejected", connection=connection, code=exc.code)
            return problem(400, "Signature verification failed", exc.message, exc.code)
        try:
            payload = connector.parse_body(body)
            identity = connector.identify(payload)
            item = Received(connection, identity.event_id, identity.event_type, body)
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

    @app.get("/health", summary="Liveness and store reachability")
    async def health() -> dict[str, object]:
        backlog = await asyncio.to_thread(syncline.backlog)
        return {"status": "ok", "backlog": backlog}

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
