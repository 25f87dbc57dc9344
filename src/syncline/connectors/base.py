"""The connector port: the narrow interface the pipeline reaches every vendor through.

A connector is one class per vendor (``connectors/<vendor>/__init__.py`` exports it) with:

* inbound: :meth:`Connector.verify_webhook`, :meth:`Connector.identify` and
  :meth:`Connector.decode` (vendor payload → canonical events), :meth:`Connector.catch_up`;
* outbound: :attr:`Connector.operations` and :meth:`Connector.deliver` (canonical object →
  vendor request, vendor response → :class:`DeliveryResult` or a :mod:`syncline.errors` class);
* declared limits: :attr:`Connector.default_limits`.

Vendor exceptions never cross this interface: ``errors.py`` in each connector package
translates them.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import httpx
import orjson
from pydantic import SecretStr

from syncline.canonical.events import CloudEvent
from syncline.errors import ConfigError, DeliveryError, SynclineError


@dataclass(frozen=True)
class Limits:
    """What a vendor tolerates from one connection; config may lower or raise them."""

    concurrency: int = 4
    rate_per_second: float | None = None
    batch_size: int = 1
    timeout_seconds: float = 30.0


@dataclass(frozen=True)
class Operation:
    """One outbound operation: its name in routes and the canonical type it accepts."""

    name: str
    accepts: str
    description: str = ""
    batchable: bool = False
    #: The payload is the object's whole state (an upsert), so an older version arriving late
    #: may be skipped. False for operations that post each event (journal entries).
    snapshot: bool = True


@dataclass(frozen=True)
class DeliveryResult:
    """What the vendor answered for one delivered record."""

    external_id: str
    object_type: str
    created: bool | None = None


@dataclass(frozen=True)
class Identity:
    """The identity of one inbound vendor event: id for dedupe, type for the record."""

    event_id: str
    event_type: str | None


@dataclass
class ConnectionSettings:
    """A configured connection handed to the connector (secrets already resolved)."""

    name: str
    vendor: str
    base_url: str
    secrets: Mapping[str, SecretStr] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    def secret(self, key: str) -> str:
        """Return the secret ``key`` or raise a ConfigError naming the missing key."""
        try:
            return self.secrets[key].get_secret_value()
        except KeyError:
            raise ConfigError(f"connection {self.name!r} needs secrets.{key}") from None


@dataclass(frozen=True)
class CatchUpPage:
    """One page of missed events fetched from the vendor, with the cursor to resume after it."""

    events: Sequence[Mapping[str, Any]]
    cursor: str | None


class Connector(ABC):
    """Base class of every vendor connector."""

    vendor: ClassVar[str]
    operations: ClassVar[Mapping[str, Operation]] = {}
    default_limits: ClassVar[Limits] = Limits()

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self.name = settings.name

    # -- inbound -------------------------------------------------------------------------------
    def verify_webhook(self, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
        """Raise :class:`~syncline.errors.SignatureError` unless the request is authentic."""
        raise SynclineError(f"{self.vendor} does not receive webhooks", code="webhooks_unsupported")

    def verify_webhook_request(
        self, headers: Mapping[str, str], body: bytes, *, now: float, method: str, url: str | None
    ) -> None:
        """Like :meth:`verify_webhook`, for vendors whose signature also covers the method and URL.

        The API calls this one; the default ignores ``method`` and ``url`` (HubSpot's v3
        signature needs them and overrides it).
        """
        self.verify_webhook(headers, body, now=now)

    def parse_body(self, body: bytes) -> Any:
        """Parse an authentic webhook body for :meth:`identify` and :meth:`decode` (JSON by default).

        Vendors that post another format (Salesforce Outbound Messages are SOAP XML) override it;
        the API and the normalizer both call it, so the inbox keeps the raw bytes.
        """
        return orjson.loads(body)

    def webhook_response(self, body: bytes) -> tuple[bytes, str] | None:
        """Return the (body, media type) to acknowledge a stored webhook with, or None for the JSON default.

        Salesforce Outbound Messages must be answered with a SOAP ``Ack`` envelope.
        """
        return None

    def identify(self, payload: Any) -> Identity:
        """Return the vendor event id (for dedupe) and type of a parsed webhook payload."""
        raise SynclineError(f"{self.vendor} does not receive webhooks", code="webhooks_unsupported")

    def decode(self, payload: Any) -> list[CloudEvent]:
        """Turn one vendor event into canonical events; ``[]`` means "recorded, not routed".

        Raises :class:`~syncline.errors.DataQualityError` when the payload cannot be decoded.
        """
        raise SynclineError(f"{self.vendor} does not receive webhooks", code="webhooks_unsupported")

    def catch_up(self, http: httpx.AsyncClient, cursor: str | None) -> AsyncIterator[CatchUpPage]:
        """Yield pages of events the vendor holds that came after ``cursor`` (oldest first)."""
        raise SynclineError(f"{self.vendor} has no event catch-up", code="catch_up_unsupported")

    # -- outbound ------------------------------------------------------------------------------
    def http_client(self, limits: Limits) -> httpx.AsyncClient:
        """Return the HTTP client for outbound calls (base URL, auth, timeouts, pool size)."""
        return httpx.AsyncClient(
            base_url=self.settings.base_url,
            timeout=httpx.Timeout(limits.timeout_seconds),
            limits=httpx.Limits(
                max_connections=max(1, limits.concurrency), max_keepalive_connections=max(1, limits.concurrency)
            ),
        )

    async def deliver(
        self, http: httpx.AsyncClient, operation: str, payload: Mapping[str, Any], *, idempotency_key: str
    ) -> DeliveryResult:
        """Apply ``operation`` to the canonical ``payload`` at the vendor, exactly once.

        Must be safe to call again with the same ``idempotency_key`` after a crash or timeout:
        the vendor's own mechanism (external-id upsert, ``Idempotency-Key``) guarantees that.
        Raises a :class:`~syncline.errors.DeliveryError` subclass on failure.
        """
        raise SynclineError(f"{self.vendor} has no outbound operations", code="operation_unknown")

    async def deliver_batch(
        self, http: httpx.AsyncClient, operation: str, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[DeliveryResult | DeliveryError]:
        """Deliver several ``(idempotency_key, payload)`` items; one result or error per item.

        The default calls :meth:`deliver` per item; vendors with batch endpoints override it.
        """
        results: list[DeliveryResult | DeliveryError] = []
        for key, payload in items:
            try:
                results.append(await self.deliver(http, operation, payload, idempotency_key=key))
            except DeliveryError as exc:
                results.append(exc)
        return results


class ConnectorRegistry:
    """Explicit list of connector classes by vendor name; registering a vendor twice raises."""

    def __init__(self, connectors: Sequence[type[Connector]] = ()) -> None:
        self._by_vendor: dict[str, type[Connector]] = {}
        for connector in connectors:
            self.register(connector)

    def register(self, connector: type[Connector]) -> None:
        if connector.vendor in self._by_vendor:
            raise ValueError(f"connector for {connector.vendor!r} registered twice")
        self._by_vendor[connector.vendor] = connector

    def get(self, vendor: str) -> type[Connector]:
        try:
            return self._by_vendor[vendor]
        except KeyError:
            known = ", ".join(sorted(self._by_vendor)) or "none"
            raise ConfigError(f"unknown vendor {vendor!r} (known: {known})") from None

    def vendors(self) -> list[str]:
        return sorted(self._by_vendor)
