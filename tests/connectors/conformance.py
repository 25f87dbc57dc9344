"""The connector conformance suite every vendor connector inherits.

Subclass :class:`ConnectorConformance` in ``tests/connectors/test_<vendor>_conformance.py`` and
provide a ``harness`` fixture yielding an object that satisfies :class:`Harness`, built around the
vendor's real sandbox HTTP server::

    class TestZendeskConformance(ConnectorConformance):
        @pytest.fixture
        def harness(self) -> Iterator[Harness]:
            with ZendeskSandbox(...) as sandbox:
                yield ZendeskHarness(sandbox)

The suite checks the connector port's promises (see ``syncline.connectors.base``): webhook
signatures, decoding to valid canonical events, upsert-twice-is-one-record outbound delivery,
error classes the pipeline acts on, catch-up paging and batch delivery.

Optional harness hooks (read with defaults, so a harness need not define them):

* ``replay_window: bool = True`` — False when the vendor signs without a timestamp, so a stale
  signature cannot be detected and the stale test is skipped.
* ``seed_events`` may return the vendor event ids it created, oldest first; the catch-up test then
  also checks each seeded id comes back, in that order.

Idempotency keys the suite derives from ``OutboundCase.idempotency_key``: the update is delivered
under ``<key>-update``, the fault tests deliver the first case's create under ``<key>-<fault>``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import httpx
import pytest

from syncline.canonical.events import CloudEvent, event_type
from syncline.connectors.base import Connector, DeliveryResult
from syncline.errors import (
    AuthConfigError,
    DataQualityError,
    DeliveryError,
    ErrorClass,
    RateLimitedError,
    SignatureError,
    TransientError,
)

__all__ = ["ConnectorConformance", "Harness", "OutboundCase", "WebhookCase"]


@dataclass(frozen=True)
class WebhookCase:
    """One vendor webhook body and the canonical event types it must decode to."""

    name: str
    body: bytes  #: exactly what the vendor POSTs
    expected_types: list[str]  #: canonical event types decode() must return, in order ([] = recorded, not routed)
    check: Callable[[list[CloudEvent]], None] | None = None  #: optional extra assertions on the decoded events


@dataclass(frozen=True)
class OutboundCase:
    """One outbound operation exercised twice with the same identity: created, then changed."""

    operation: str  #: a name in connector.operations
    create: Mapping[str, Any]  #: canonical payload (model_dump(mode="json") of a canonical object)
    update: Mapping[str, Any]  #: same object (same identity), with at least one field changed
    idempotency_key: str


Fault = Literal["rate_limit", "server_error", "auth"]


class Harness(Protocol):
    """What a vendor's test module provides so the suite can drive its connector and sandbox."""

    connector: Connector  #: built with settings pointing at the sandbox
    webhook_cases: Sequence[WebhookCase]  #: >= 1 per supported inbound event type; [] if no webhooks
    outbound_cases: Sequence[OutboundCase]  #: >= 1 per outbound operation
    not_found_case: OutboundCase | None  #: its target/reference does not exist at the vendor
    invalid_case: OutboundCase | None  #: a payload the vendor rejects as invalid (400/422)
    batch_operation: str | None  #: an operation with Operation.batchable=True, else None
    catch_up_page_size: int  #: sandbox page size, so seed_events(2*size+1) spans >= 3 pages

    def sign(self, body: bytes, *, timestamp: float) -> dict[str, str]:
        """Return valid signature headers for ``body`` signed at ``timestamp``."""
        ...

    def signature_headers(self) -> Sequence[str]:
        """Return the names of the headers that carry the signature."""
        ...

    def count(self, case: OutboundCase) -> int:
        """Return how many vendor records the sandbox holds for the case's object."""
        ...

    def stored(self, case: OutboundCase) -> Mapping[str, Any]:
        """Return the vendor record for the case's object as the sandbox holds it."""
        ...

    def changed(self, case: OutboundCase, record: Mapping[str, Any]) -> bool:
        """Return True when ``record`` reflects ``case.update`` rather than ``case.create``."""
        ...

    def inject(self, fault: Fault, *, retry_after: float | None = None) -> None:
        """Make the NEXT outbound request to the sandbox fail that way (429 / 5xx / 401)."""
        ...

    def seed_events(self, n: int) -> Sequence[str] | None:
        """Create ``n`` vendor-side changes visible to catch-up (``pytest.skip`` if unsupported)."""
        ...

    def batch_items(self) -> list[tuple[str, Mapping[str, Any]]]:
        """Return ``(idempotency_key, payload)`` items for ``batch_operation``, exactly one invalid."""
        ...


def _without(headers: Mapping[str, str], names: Sequence[str]) -> dict[str, str]:
    drop = {name.lower() for name in names}
    return {key: value for key, value in headers.items() if key.lower() not in drop}


def _forge(body: bytes) -> bytes:
    # flip the lowest bit of a byte in the middle: same length, still mostly valid text
    middle = len(body) // 2
    return body[:middle] + bytes([body[middle] ^ 0x01]) + body[middle + 1:]


class ConnectorConformance:
    """Tests every connector must pass; subclasses provide the ``harness`` fixture."""

    @pytest.fixture
    def harness(self) -> Iterator[Harness]:
        pytest.fail("a ConnectorConformance subclass must define the `harness` fixture")
        yield  # pragma: no cover  (makes this a generator fixture like the overrides)

    # -- helpers ---------------------------------------------------------------------------------
    @staticmethod
    def _webhook(harness: Harness) -> WebhookCase:
        if not harness.webhook_cases:
            pytest.skip(f"{harness.connector.vendor} has no webhooks")
        return harness.webhook_cases[0]

    @staticmethod
    def _outbound(harness: Harness) -> OutboundCase:
        if not harness.outbound_cases:
            pytest.skip(f"{harness.connector.vendor} has no outbound operations")
        return harness.outbound_cases[0]

    @staticmethod
    def _http(harness: Harness) -> httpx.AsyncClient:
        return harness.connector.http_client(harness.connector.default_limits)

    # -- signatures ------------------------------------------------------------------------------
    def test_signature_valid_passes(self, harness: Harness) -> None:
        case = self._webhook(harness)
        now = time.time()
        harness.connector.verify_webhook(harness.sign(case.body, timestamp=now), case.body, now=now)

    def test_signature_forged_body_fails(self, harness: Harness) -> None:
        case = self._webhook(harness)
        now = time.time()
        headers = harness.sign(case.body, timestamp=now)
        with pytest.raises(SignatureError):
            harness.connector.verify_webhook(headers, _forge(case.body), now=now)

    def test_signature_stale_fails(self, harness: Harness) -> None:
        case = self._webhook(harness)
        if not getattr(harness, "replay_window", True):
            pytest.skip(f"{harness.connector.vendor} signatures carry no timestamp")
        now = time.time()
        headers = harness.sign(case.body, timestamp=now - 600)
        with pytest.raises(SignatureError):
            harness.connector.verify_webhook(headers, case.body, now=now)

    def test_signature_missing_header_fails(self, harness: Harness) -> None:
        case = self._webhook(harness)
        names = list(harness.signature_headers())
        assert names, "signature_headers() must name at least one header"
        now = time.time()
        headers = harness.sign(case.body, timestamp=now)
        assert {name.lower() for name in names} <= {key.lower() for key in headers}, (
            "sign() must return every header signature_headers() names"
        )
        with pytest.raises(SignatureError):
            harness.connector.verify_webhook(_without(headers, names), case.body, now=now)
        for name in names:
            with pytest.raises(SignatureError):
                harness.connector.verify_webhook(_without(headers, [name]), case.body, now=now)

    # -- decoding --------------------------------------------------------------------------------
    def test_decode_every_webhook_case(self, harness: Harness) -> None:
        if not harness.webhook_cases:
            pytest.skip(f"{harness.connector.vendor} has no webhooks")
        for case in harness.webhook_cases:
            payload = json.loads(case.body)
            identity = harness.connector.identify(payload)
            assert identity.event_id, f"{case.name}: identify() returned an empty event id"
            events = harness.connector.decode(payload)
            assert [event.type for event in events] == case.expected_types, case.name
            for event in events:
                again = CloudEvent.model_validate(event.model_dump(mode="json"))
                assert again == event, f"{case.name}: {event.type} does not survive a JSON round trip"
                event_type(event.type).data_model.model_validate(event.data)
            if case.check is not None:
                case.check(events)

    def test_decode_is_deterministic(self, harness: Harness) -> None:
        """Decoding the same vendor event twice must yield the same event ids (inbox dedupe)."""
        if not harness.webhook_cases:
            pytest.skip(f"{harness.connector.vendor} has no webhooks")
        for case in harness.webhook_cases:
            first = [event.id for event in harness.connector.decode(json.loads(case.body))]
            second = [event.id for event in harness.connector.decode(json.loads(case.body))]
            assert first == second, case.name
            assert len(set(first)) == len(first), f"{case.name}: two decoded events share an id"

    # -- outbound --------------------------------------------------------------------------------
    @pytest.mark.anyio
    async def test_outbound_upsert_twice_is_one_record(self, harness: Harness) -> None:
        if not harness.outbound_cases:
            pytest.skip(f"{harness.connector.vendor} has no outbound operations")
        operations = harness.connector.operations
        assert {case.operation for case in harness.outbound_cases} >= set(operations), (
            "outbound_cases must cover every operation"
        )
        async with self._http(harness) as http:
            for case in harness.outbound_cases:
                label = f"{case.operation} ({case.idempotency_key})"
                assert case.operation in operations, f"{label}: not in connector.operations"
                first = await harness.connector.deliver(
                    http, case.operation, case.create, idempotency_key=case.idempotency_key)
                assert isinstance(first, DeliveryResult), label
                assert first.external_id, f"{label}: no external_id"
                assert harness.count(case) == 1, label
                assert not harness.changed(case, harness.stored(case)), (
                    f"{label}: changed() is already True after create; the harness cannot tell"
                )
                second = await harness.connector.deliver(
                    http, case.operation, case.create, idempotency_key=case.idempotency_key)
                assert second.external_id == first.external_id, f"{label}: the same delivery made another record"
                assert harness.count(case) == 1, label
                await harness.connector.deliver(
                    http, case.operation, case.update, idempotency_key=f"{case.idempotency_key}-update")
                assert harness.changed(case, harness.stored(case)), f"{label}: the update was not applied"
                assert harness.count(case) == 1, f"{label}: the update made another record"

    @pytest.mark.anyio
    async def test_outbound_not_found_is_parked(self, harness: Harness) -> None:
        case = harness.not_found_case
        if case is None:
            pytest.skip("the harness has no not-found case")
        async with self._http(harness) as http:
            with pytest.raises(DeliveryError) as caught:
                await harness.connector.deliver(http, case.operation, case.create,
                                                idempotency_key=case.idempotency_key)
        error = caught.value
        assert error.error_class in {ErrorClass.DATA_QUALITY, ErrorClass.BUSINESS_RULE}, repr(error)
        assert not error.retryable

    @pytest.mark.anyio
    async def test_outbound_invalid_is_data_quality(self, harness: Harness) -> None:
        case = harness.invalid_case
        if case is None:
            pytest.skip("the harness has no invalid case")
        async with self._http(harness) as http:
            with pytest.raises(DataQualityError):
                await harness.connector.deliver(http, case.operation, case.create,
                                                idempotency_key=case.idempotency_key)

    async def _fail_once(self, harness: Harness, fault: Fault, retry_after: float | None = None) -> DeliveryError:
        """Inject ``fault``, deliver (which must fail), then deliver again (which must succeed)."""
        case = self._outbound(harness)
        async with self._http(harness) as http:
            harness.inject(fault, retry_after=retry_after)
            key = f"{case.idempotency_key}-{fault}"
            with pytest.raises(DeliveryError) as caught:
                await harness.connector.deliver(http, case.operation, case.create, idempotency_key=key)
            # the fault covered only the next request: the retry goes through
            result = await harness.connector.deliver(http, case.operation, case.create, idempotency_key=key)
            assert result.external_id
        return caught.value

    @pytest.mark.anyio
    async def test_rate_limit_honours_retry_after(self, harness: Harness) -> None:
        error = await self._fail_once(harness, "rate_limit", retry_after=7)
        assert isinstance(error, RateLimitedError), repr(error)
        assert error.retry_after == 7

    @pytest.mark.anyio
    async def test_server_error_is_transient(self, harness: Harness) -> None:
        error = await self._fail_once(harness, "server_error")
        assert isinstance(error, TransientError), repr(error)
        assert error.error_class == ErrorClass.TRANSIENT
        assert error.retryable

    @pytest.mark.anyio
    async def test_auth_failure_pauses(self, harness: Harness) -> None:
        error = await self._fail_once(harness, "auth")
        assert isinstance(error, AuthConfigError), repr(error)

    # -- catch-up --------------------------------------------------------------------------------
    @pytest.mark.anyio
    async def test_catch_up_pages_oldest_first(self, harness: Harness) -> None:
        size = harness.catch_up_page_size
        n = 2 * size + 1
        seeded = harness.seed_events(n)
        connector = harness.connector
        async with self._http(harness) as http:
            pages = [page async for page in connector.catch_up(http, None)]
            ids = [connector.identify(event).event_id for page in pages for event in page.events]
            assert len(pages) >= 2, f"{n} events came back in {len(pages)} page(s)"
            assert len(ids) == len(set(ids)), "catch-up yielded an event twice"
            assert len(ids) >= n
            if seeded is not None:
                seeded = list(seeded)
                assert len(seeded) == n
                positions = {event_id: index for index, event_id in enumerate(ids)}
                missing = [event_id for event_id in seeded if event_id not in positions]
                assert not missing, f"catch-up lost {len(missing)} seeded events"
                order = [positions[event_id] for event_id in seeded]
                assert order == sorted(order), "catch-up is not oldest first"
            cursor = pages[-1].cursor
            assert cursor is not None, "the last page has no cursor to resume from"
            again = [connector.identify(event).event_id
                     async for page in connector.catch_up(http, cursor) for event in page.events]
        assert set(again) <= set(ids), "resuming from the last cursor yielded unseen events"
        first_page = {connector.identify(event).event_id for event in pages[0].events}
        assert not first_page & set(again), "resuming from the last cursor started over"

    # -- batch -----------------------------------------------------------------------------------
    @pytest.mark.anyio
    async def test_batch_isolates_the_invalid_item(self, harness: Harness) -> None:
        operation = harness.batch_operation
        if operation is None:
            pytest.skip(f"{harness.connector.vendor} has no batchable operation")
        assert harness.connector.operations[operation].batchable
        items = harness.batch_items()
        assert len(items) >= 3, "batch_items() must return at least 3 items"
        async with self._http(harness) as http:
            first = await harness.connector.deliver_batch(http, operation, items)
            second = await harness.connector.deliver_batch(http, operation, items)
        for results in (first, second):
            assert len(results) == len(items)
            invalid = [result for result in results if isinstance(result, DataQualityError)]
            assert len(invalid) == 1, results
            assert sum(isinstance(result, DeliveryResult) for result in results) == len(items) - 1, results
        for (key, payload), a, b in zip(items, first, second, strict=True):
            if isinstance(a, DeliveryResult):
                assert isinstance(b, DeliveryResult) and b.external_id == a.external_id, key
                case = OutboundCase(operation=operation, create=payload, update=payload, idempotency_key=key)
                assert harness.count(case) == 1, f"{key}: the repeated batch made another record"

