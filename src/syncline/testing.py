"""In-process fakes for testing pipelines and flows without a vendor sandbox.

:class:`FakeConnector` speaks a minimal wire format (canonical objects inside a vendor-like
envelope, HMAC-signed) and delivers into a shared :class:`FakeVendor`, which counts writes per
record, records the order of calls and can be told to fail the next calls for a record.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx

from syncline.canonical import events as canonical_events
from syncline.canonical.events import CloudEvent, make_event
from syncline.connectors.base import ConnectionSettings, Connector, DeliveryResult, Identity, Limits, Operation
from syncline.errors import DataQualityError, DeliveryError, SignatureError

_VENDORS: dict[str, FakeVendor] = {}


class FakeVendor:
    """State of one fake vendor account: records, call log, scripted failures."""

    def __init__(self, name: str = "fake", *, latency: float = 0.0, seed: int = 0) -> None:
        self.name = name
        self.latency = latency
        self.writes: dict[tuple[str, str], int] = defaultdict(int)
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.failures: dict[str, list[DeliveryError]] = defaultdict(list)
        self.in_flight = 0
        self.batches: list[int] = []
        self.peak = 0
        self._rng = random.Random(seed)
        _VENDORS[name] = self

    def fail_next(self, canonical_id: str, *errors: DeliveryError) -> None:
        """Make the next deliveries of ``canonical_id`` raise ``errors`` in order."""
        self.failures[canonical_id].extend(errors)

    async def apply(self, operation: str, payload: Mapping[str, Any]) -> DeliveryResult:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self._rng.uniform(0, self.latency))
            record_id = str(payload["id"])
            queued = self.failures.get(record_id)
            if queued:
                raise queued.pop(0)
            key = (operation, record_id)
            created = key not in self.writes
            self.writes[key] += 1
            self.calls.append((operation, record_id, dict(payload)))
            return DeliveryResult(external_id=f"fake-{record_id}", object_type=str(payload.get("object_type")),
                                  created=created)
        finally:
            self.in_flight -= 1


def sign(secret: str, body: bytes) -> str:
    """Return the fake vendor's signature header value for ``body``."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class FakeConnector(Connector):
    """A connector for tests: payload ``{"id", "type", "sequence", "data": <canonical object>}``."""

    vendor = "fake"
    operations: ClassVar[Mapping[str, Operation]] = {
        name: Operation(name, accepts)
        for name, accepts in [("upsert_account", "account"), ("upsert_invoice", "invoice"),
                              ("upsert_payment", "payment"), ("upsert_refund", "refund"),
                              ("upsert_credit_memo", "credit_memo")]
    } | {
        "batch_upsert_account": Operation("batch_upsert_account", "account", batchable=True),
        "post_journal_entry": Operation("post_journal_entry", "journal_entry", snapshot=False),
    }
    default_limits = Limits(concurrency=4)

    def __init__(self, settings: ConnectionSettings) -> None:
        super().__init__(settings)
        self.state = _VENDORS.get(str(settings.options.get("vendor_state", "fake"))) or FakeVendor(
            str(settings.options.get("vendor_state", "fake"))
        )

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
        given = headers.get("x-fake-signature")
        if not given:
            raise SignatureError("missing X-Fake-Signature header", code="signature_missing")
        if not hmac.compare_digest(given, sign(self.settings.secret("webhook_secret"), body)):
            raise SignatureError("signature does not match the body", code="signature_mismatch")

    def identify(self, payload: Any) -> Identity:
        if not isinstance(payload, dict) or "id" not in payload:
            raise DataQualityError("event has no id")
        return Identity(str(payload["id"]), payload.get("type"))

    def decode(self, payload: Any) -> list[CloudEvent]:
        kind = canonical_events.event_types().get(str(payload.get("type")))
        if kind is None:
            return []
        try:
            data = kind.data_model.model_validate(payload["data"])
        except (KeyError, ValueError) as exc:
            raise DataQualityError(f"{payload.get('type')} data invalid: {exc}") from None
        sequence = payload.get("sequence")
        return [
            make_event(
                kind.name, data, connection=self.name, vendor_event_id=str(payload["id"]),
                time=datetime.fromtimestamp(int(payload.get("created", 0)), UTC),
                correlation_id=payload.get("correlation_id"),
                sequence=f"{int(sequence):020d}" if sequence is not None else None,
            )
        ]

    def http_client(self, limits: Limits) -> httpx.AsyncClient:
        return httpx.AsyncClient()

    async def deliver(
        self, http: httpx.AsyncClient, operation: str, payload: Mapping[str, Any], *, idempotency_key: str
    ) -> DeliveryResult:
        if operation not in self.operations:
            raise DataQualityError(f"unknown operation {operation}")
        return await self.state.apply(operation, payload)

    async def deliver_batch(
        self, http: httpx.AsyncClient, operation: str, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[DeliveryResult | DeliveryError]:
        self.state.batches.append(len(items))
        return await super().deliver_batch(http, operation, items)
