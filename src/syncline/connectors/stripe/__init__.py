"""Stripe connector: signed webhooks and List Events in, canonical events out; customers, products,
prices, subscriptions, invoices and credit notes written back (see ``outbound``); plus its sandbox.

>>> connector = StripeConnector(ConnectionSettings(   # doctest: +SKIP
...     name="stripe", vendor="stripe", base_url="https://api.stripe.com",
...     secrets={"api_key": SecretStr("sk_test_..."), "webhook_secret": SecretStr("whsec_...")}))
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
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
from syncline.connectors.stripe import outbound
from syncline.connectors.stripe.client import build_http_client
from syncline.connectors.stripe.inbound import StripeSignature, catch_up_events, decode_event, identify_event
from syncline.connectors.stripe.outbound import OPERATIONS
from syncline.connectors.stripe.sandbox import StripeSandbox
from syncline.errors import ConfigError

__all__ = ["StripeConnector", "StripeSandbox"]

DEFAULT_TOLERANCE_SECONDS = 300


class StripeConnector(Connector):
    """Connect one Stripe account: verify and decode its webhooks, catch up through List Events.

    Settings: ``base_url``, ``secrets.api_key``, ``secrets.webhook_secret`` and optionally
    ``options.tolerance_seconds`` (signature age accepted, default 300).
    """

    vendor: ClassVar[str] = "stripe"
    operations: ClassVar[Mapping[str, Operation]] = OPERATIONS
    default_limits: ClassVar[Limits] = Limits(concurrency=4, rate_per_second=25.0)  # test-mode limit

    def __init__(self, settings: ConnectionSettings) -> None:
        super().__init__(settings)
        tolerance = settings.options.get("tolerance_seconds", DEFAULT_TOLERANCE_SECONDS)
        if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or tolerance <= 0:
            raise ConfigError(
                f"connection {self.name!r}: options.tolerance_seconds must be a positive number"
            )
        self.tolerance_seconds = tolerance

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
        """Raise SignatureError unless ``Stripe-Signature`` proves the body came from Stripe."""
        signature = StripeSignature(self.settings.secret("webhook_secret"), self.tolerance_seconds)
        signature.verify(headers, body, now=now)

    def identify(self, payload: Any) -> Identity:
        """Return the Stripe event id and type of a webhook payload."""
        return identify_event(payload)

    def decode(self, payload: Any) -> list[CloudEvent]:
        """Decode one Stripe event into canonical events."""
        return decode_event(self.name, payload)

    def catch_up(self, http: httpx.AsyncClient, cursor: str | None) -> AsyncIterator[CatchUpPage]:
        """Yield the events Stripe holds after ``cursor``, oldest first."""
        return catch_up_events(http, cursor)

    async def deliver(
        self, http: httpx.AsyncClient, operation: str, payload: Mapping[str, Any], *, idempotency_key: str
    ) -> DeliveryResult:
        """Apply ``operation`` to the canonical ``payload`` in Stripe, exactly once (see ``outbound``)."""
        return await outbound.deliver(self.name, http, operation, payload, idempotency_key=idempotency_key)

    def http_client(self, limits: Limits) -> httpx.AsyncClient:
        """Return an HTTP client with bearer auth and the pinned Stripe-Version."""
        return build_http_client(self.settings.base_url, self.settings.secret("api_key"), limits)
