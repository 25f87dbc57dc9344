"""Trace context: W3C traceparent continues into the request span, the logs and the response."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from syncline.api.auth import Role
from syncline.observe.tracing import parse_traceparent
from syncline.testing import sign
from tests._fake import SECRET, account_event
from tests.api._stack import Stack, captured_logs, running_stack

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def sdk() -> None:
    # The global provider can be set once per process; only this module sets it.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)


@pytest.fixture
def stack(store_url: str) -> Iterator[Stack]:
    EXPORTER.clear()
    with running_stack(store_url) as running:
        yield running


def test_parse_traceparent_accepts_only_valid_version_00_headers() -> None:
    assert parse_traceparent(f"00-{TRACE_ID}-{PARENT}-01") == (TRACE_ID, PARENT)
    for bad in (None, "", f"01-{TRACE_ID}-{PARENT}-01", f"00-{'0' * 32}-{PARENT}-01", f"00-{TRACE_ID}-{'0' * 16}-01",
                f"00-{TRACE_ID[:-1]}-{PARENT}-01", "garbage"):
        assert parse_traceparent(bad) is None


def test_a_webhook_continues_the_callers_trace_in_span_logs_and_response(stack: Stack) -> None:
    with captured_logs("INFO") as written:
        response = httpx.post(f"{stack.url}/v1/webhooks/src", content=b'{"id": "evt_1"}',
                              headers={"traceparent": f"00-{TRACE_ID}-{PARENT}-01", "x-fake-signature": "00"})
    lines = [orjson.loads(line) for line in "".join(written).splitlines() if line.startswith("{")]
    assert response.status_code == 400
    assert response.headers["traceresponse"].startswith(f"00-{TRACE_ID}-")
    assert response.headers["x-correlation-id"] == TRACE_ID
    (rejected,) = [line for line in lines if line.get("event") == "webhook rejected"]
    assert rejected["trace_id"] == TRACE_ID
    (span,) = _finished("POST /v1/webhooks/src")
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert span.parent is not None and f"{span.parent.span_id:016x}" == PARENT
    assert span.attributes is not None and span.attributes["http.response.status_code"] == 400


def test_without_traceparent_a_new_trace_starts_and_a_given_correlation_id_is_kept(stack: Stack) -> None:
    with stack.client(Role.VIEWER) as viewer:
        fresh = viewer.get("/v1/deliveries/123")
        named = viewer.get("/v1/connections", headers={"X-Correlation-Id": "order-42"})
    trace_id = fresh.headers["traceresponse"].split("-")[1]
    assert trace_id != TRACE_ID and len(trace_id) == 32
    assert named.headers["x-correlation-id"] == "order-42"
    assert _finished("GET /v1/deliveries/{id}")  # ids do not make span names unbounded


def _finished(name: str) -> list[ReadableSpan]:
    # The server ends its span just after the response is sent: give it a moment.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        spans = [s for s in EXPORTER.get_finished_spans() if s.name == name]
        if spans:
            return spans
        time.sleep(0.02)
    return []


def test_the_vendor_call_continues_the_trace_of_the_webhook_that_caused_it(stack: Stack) -> None:
    body = account_event("evt_traced", "acct_traced")
    response = httpx.post(f"{stack.url}/v1/webhooks/src", content=body,
                          headers={"traceparent": f"00-{TRACE_ID}-{PARENT}-01",
                                   "x-fake-signature": sign(SECRET, body)})
    assert response.status_code == 200
    (server,) = _finished("POST /v1/webhooks/src")
    (client,) = _finished("deliver erp.upsert_account")
    assert f"{client.context.trace_id:032x}" == TRACE_ID
    assert client.parent is not None and client.parent.span_id == server.context.span_id
    assert client.attributes is not None and client.attributes["syncline.correlation_id"] == "acct_traced"
