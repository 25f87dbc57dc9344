"""HubSpot: CRM v3 batch upsert out, signed webhook batches and search catch-up in; plus its sandbox.

>>> connector = HubSpotConnector(ConnectionSettings(   # doctest: +SKIP
...     name="hubspot", vendor="hubspot", base_url="https://api.hubapi.com",
...     secrets={"access_token": SecretStr("pat-na1-..."), "client_secret": SecretStr("...")},
...     options={"app_id": "1160452", "webhook_url": "https://syncline.example.com/v1/webhooks/hubspot"}))
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

import httpx

from syncline.canonical import CloudEvent
from syncline.connectors.base import (
    CatchUpPage,
    ConnectionSettings,
    Connector,
    DeliveryResult,
    Identity,
    Limits,
    Operation,
)
from syncline.connectors.hubspot import inbound
from syncline.connectors.hubspot.client import DEFAULT_TOLERANCE_SECONDS, SignatureV3, build_http_client
from syncline.connectors.hubspot.mapping import MappingOptions
from syncline.connectors.hubspot.outbound import OPERATIONS, HubSpotWriter
from syncline.connectors.hubspot.sandbox import HubSpotSandbox
from syncline.errors import ConfigError, DeliveryError

__all__ = ["HubSpotConnector", "HubSpotSandbox"]


class HubSpotConnector(Connector):
    """Connect one HubSpot portal through a private app.

    Secrets: ``access_token`` (the private app token), ``client_secret`` (signs webhooks).
    Options: ``app_id`` (Syncline's own app: its changes are not re-imported), ``webhook_url``
    (the target URL configured in HubSpot, which the signature covers; else the URL the request
    arrived at is used), ``id_property`` (unique property holding the canonical id, default
    ``syncline_id``), ``currency`` (the portal's company currency), ``open_stage``, ``pipeline``,
    ``catch_up_objects``, ``page_size``, ``search_rate_per_second``, ``tolerance_seconds``.

    The portal needs, before the first delivery: a single-line text property ``syncline_id``
    marked "unique value" on each object type written (companies, contacts, deals, line items,
    products, quotes), and the deal properties ``syncline_status``, ``syncline_billing_id`` and
    ``syncline_erp_id``. Upserts match on ``syncline_id``; that is the exactly-once mechanism.

    A deal or quote delivery takes several calls (the record, its line items, associations),
    while the budget counts deliveries: a HubSpot 429 then slows the connection down.

    The rate budget is HubSpot's ten-second burst limit: 100 requests per 10 s for a private app
    on a Free/Starter portal (190 on Professional/Enterprise: raise ``budget.rate_per_second`` to
    19 there). Search calls have their own limit of 5 per second, paced inside catch-up.
    """

    vendor: ClassVar[str] = "hubspot"
    operations: ClassVar[Mapping[str, Operation]] = OPERATIONS
    default_limits: ClassVar[Limits] = Limits(concurrency=4, rate_per_second=10.0, batch_size=100)

    def __init__(self, settings: ConnectionSettings) -> None:
        super().__init__(settings)
        options = settings.options
        self.mapping_options = MappingOptions.from_options(options)
        tolerance = options.get("tolerance_seconds", DEFAULT_TOLERANCE_SECONDS)
        if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or tolerance <= 0:
            raise ConfigError(f"connection {self.name!r}: options.tolerance_seconds must be a positive number")
        self.tolerance_seconds = float(tolerance)
        objects = options.get("catch_up_objects", inbound.DEFAULT_CATCH_UP_OBJECTS)
        if isinstance(objects, str) or not isinstance(objects, list | tuple):
            raise ConfigError(f"connection {self.name!r}: options.catch_up_objects must be a list of object names")
        unknown = [name for name in objects if name not in inbound.KINDS]
        if unknown:
            raise ConfigError(f"connection {self.name!r}: options.catch_up_objects has unknown {unknown} "
                              f"(known: {sorted(inbound.KINDS)})")
        page_size = options.get("page_size", 100)
        if not isinstance(page_size, int) or not 1 <= page_size <= 200:
            raise ConfigError(f"connection {self.name!r}: options.page_size must be 1..200 (HubSpot's search limit)")
        search_rate = options.get("search_rate_per_second", 4.0)
        if isinstance(search_rate, bool) or not isinstance(search_rate, int | float) or search_rate <= 0:
            raise ConfigError(f"connection {self.name!r}: options.search_rate_per_second must be a positive number")
        app_id = options.get("app_id")
        self.inbound_options = inbound.InboundOptions(
            mapping=self.mapping_options, app_id=str(app_id) if app_id is not None else None,
            catch_up_objects=tuple(objects), page_size=page_size,
            search_rate_per_second=float(search_rate),
        )
        url = options.get("webhook_url")
        self.webhook_url = str(url) if url else None
        self.writer = HubSpotWriter(self.mapping_options)

    # -- inbound -------------------------------------------------------------------------------
    def verify_webhook(self, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
        """Check ``X-HubSpot-Signature-v3`` against ``options.webhook_url`` (a POST)."""
        self.verify_webhook_request(headers, body, now=now, method="POST", url=None)

    def verify_webhook_request(
        self, headers: Mapping[str, str], body: bytes, *, now: float, method: str, url: str | None
    ) -> None:
        """Check the signature over method, URL, body and timestamp.

        The configured ``webhook_url`` wins over ``url`` (the URL the request reached us at):
        behind a proxy or load balancer the two differ, and HubSpot signed the public one.
        """
        target = self.webhook_url or url
        if target is None:
            raise ConfigError(f"connection {self.name!r} needs options.webhook_url to check HubSpot signatures")
        SignatureV3(self.settings.secret("client_secret"), self.tolerance_seconds).verify(
            headers, body, method=method, url=target, now=now)

    def identify(self, payload: Any) -> Identity:
        """Return the identity of a webhook batch (hash of its event keys) or a catch-up snapshot."""
        return inbound.identify(payload)

    def decode(self, payload: Any) -> list[CloudEvent]:
        """Decode a webhook batch (one partial event per routed element) or a catch-up snapshot."""
        return inbound.decode(self.name, payload, self.inbound_options)

    def catch_up(self, http: httpx.AsyncClient, cursor: str | None) -> AsyncIterator[CatchUpPage]:
        """Yield records modified after ``cursor`` through the CRM search API, oldest first per type."""
        return inbound.catch_up(http, cursor, self.inbound_options)

    # -- outbound ------------------------------------------------------------------------------
    def http_client(self, limits: Limits) -> httpx.AsyncClient:
        """Return an HTTP client sending the private app token as a bearer token."""
        return build_http_client(self.settings.base_url, self.settings.secret("access_token"), limits)

    async def deliver(
        self, http: httpx.AsyncClient, operation: str, payload: Mapping[str, Any], *, idempotency_key: str
    ) -> DeliveryResult:
        """Upsert ``payload`` by its canonical id in the unique property (the idempotency mechanism)."""
        return await self.writer.deliver(http, operation, payload)

    async def deliver_batch(
        self, http: httpx.AsyncClient, operation: str, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[DeliveryResult | DeliveryError]:
        """Deliver up to 100 items per batch call; one result or error per item, in order."""
        return await self.writer.deliver_batch(http, operation, [payload for _, payload in items])
