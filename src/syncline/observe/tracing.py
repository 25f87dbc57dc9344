"""Correlation ids and OpenTelemetry spans for HTTP requests.

:class:`TraceMiddleware` wraps the ASGI app. For every request it continues the caller's W3C
trace (``traceparent``) or starts a new one, opens a server span, and binds ``trace_id`` and
``correlation_id`` into structlog's context so every log line of the request carries them. The
response names the trace in ``traceresponse`` and ``X-Correlation-Id``.

Spans go nowhere until :func:`configure_tracing` installs the OpenTelemetry SDK; it honours the
standard settings (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_HEADERS``,
``OTEL_SERVICE_NAME``, ...). Install the exporter with ``pip install 'syncline[otel]'``.
"""

from __future__ import annotations

import os
import re
import secrets

import structlog
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["TraceMiddleware", "configure_tracing", "parse_traceparent", "tracer"]

tracer = trace.get_tracer("syncline")

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_CORRELATION = re.compile(r"^[A-Za-z0-9._:@/-]{1,128}$")


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """Return ``(trace id, parent span id)`` of a valid version-00 ``traceparent``, else None."""
    if not value:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if match is None or match.group(1) == "0" * 32 or match.group(2) == "0" * 16:
        return None
    return match.group(1), match.group(2)


class TraceMiddleware:
    """ASGI middleware: one span per request, trace and correlation ids bound to the logs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1"): value.decode("latin-1") for key, value in scope.get("headers", [])}
        parent = propagate.extract(headers) if parse_traceparent(headers.get("traceparent")) else None
        route = scope.get("path", "")
        span = tracer.start_span(f"{scope.get('method', 'GET')} {_route_name(route)}", context=parent,
                                 kind=SpanKind.SERVER,
                                 attributes={"http.request.method": scope.get("method", ""), "url.path": route})
        span_context = span.get_span_context()
        if span_context.is_valid:
            trace_id = f"{span_context.trace_id:032x}"
        else:
            # No SDK installed: keep the caller's trace id, or make one, so logs still correlate.
            given = parse_traceparent(headers.get("traceparent"))
            trace_id = given[0] if given else secrets.token_hex(16)
        given_correlation = headers.get("x-correlation-id", "")
        correlation_id = given_correlation if _CORRELATION.match(given_correlation) else trace_id
        token = otel_context.attach(trace.set_span_in_context(span))
        structlog.contextvars.bind_contextvars(trace_id=trace_id, correlation_id=correlation_id)
        status_code = 500

        async def send_with_ids(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = int(message["status"])
                extra = [(b"x-correlation-id", correlation_id.encode())]
                if span_context.is_valid:
                    extra.append((b"traceresponse",
                                  f"00-{trace_id}-{span_context.span_id:016x}-01".encode()))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_ids)
        except Exception as exc:
            span.record_exception(exc)
            raise
        finally:
            span.set_attribute("http.response.status_code", status_code)
            if status_code >= 500:
                span.set_status(Status(StatusCode.ERROR))
            span.end()
            structlog.contextvars.unbind_contextvars("trace_id", "correlation_id")
            otel_context.detach(token)


def _route_name(path: str) -> str:
    # Low-cardinality span names: ids in paths become placeholders.
    return re.sub(r"/\d+(?=/|$)", "/{id}", path)


def configure_tracing(service_name: str = "syncline") -> bool:
    """Install the OpenTelemetry SDK with an OTLP/HTTP exporter if one is configured; True if it did.

    Nothing is exported unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or the traces-specific variant) is set.
    """
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise RuntimeError("OTLP export needs the otel extra: pip install 'syncline[otel]'") from exc
    provider = TracerProvider(resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME",
                                                                                       service_name)}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return True
