"""Zendesk Support: organizations, users, entitlements and tickets out; signed events in.

>>> connector = ZendeskConnector(ConnectionSettings(   # doctest: +SKIP
...     name="zendesk", vendor="zendesk", base_url="https://acme.zendesk.com",
...     secrets={"email": SecretStr("ops@acme.com"), "api_token": SecretStr("6wiI..."),
...              "webhook_secret": SecretStr("dGhpc19zZWNyZXQ=")}))
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
from syncline.connectors.zendesk import mapping
from syncline.connectors.zendesk.client import (
    DEFAULT_REQUESTS_PER_MINUTE,
    authorization_for,
    build_http_client,
    limits_for,
)
from syncline.connectors.zendesk.inbound import (
    DEFAULT_TOLERANCE_SECONDS,
    WebhookSignature,
    catch_up_organizations,
    decode_event,
    identify_event,
)
from syncline.connectors.zendesk.outbound import OPERATIONS, OutboundOptions, deliver, deliver_users
from syncline.connectors.zendesk.sandbox import ZendeskSandbox
from syncline.errors import ConfigError, DeliveryError

__all__ = ["ZendeskConnector", "ZendeskSandbox"]


class ZendeskConnector(Connector):
    """Connect one Zendesk Support account.

    Settings: ``base_url`` (``https://<subdomain>.zendesk.com`` or a sandbox); secrets ``email``
    and ``api_token`` (or ``oauth_token``) and ``webhook_secret`` (the webhook's signing secret);
    options ``tolerance_seconds`` (signature age accepted, default 300), ``support_level_field``
    and ``entitlement_active_field`` (organization field keys), ``support_level_field_id`` (that
    field's Zendesk id, matched in webhooks), ``job_poll_seconds`` and ``job_timeout_seconds``
    (bulk user jobs).

    The budget is Zendesk's per-minute rate limit: 700 requests/minute → 11.67/s by default. The
    limit is account-wide and plan-dependent, so set ``budget.rate_per_second`` to this
    connection's share (e.g. 400/min → 6.6).
    """

    vendor: ClassVar[str] = "zendesk"
    operations: ClassVar[Mapping[str, Operation]] = OPERATIONS
    default_limits: ClassVar[Limits] = limits_for(DEFAULT_REQUESTS_PER_MINUTE)

    def __init__(self, settings: ConnectionSettings) -> None:
        super().__init__(settings)
        options = settings.options
        self.tolerance_seconds = _positive(settings, "tolerance_seconds", DEFAULT_TOLERANCE_SECONDS)
        self.mapping_options = mapping.MappingOptions.from_options(options)
        self.outbound_options = OutboundOptions(
            mapping=self.mapping_options,
            job_poll_seconds=_positive(settings, "job_poll_seconds", 1.0),
            job_timeout_seconds=_positive(settings, "job_timeout_seconds", 40.0),
        )

    # -- inbound -------------------------------------------------------------------------------
    def verify_webhook(self, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
        """Raise SignatureError unless ``X-Zendesk-Webhook-Signature`` proves the body authentic."""
        WebhookSignature(self.settings.secret("webhook_secret"), self.tolerance_seconds).verify(headers, body, now=now)

    def identify(self, payload: Any) -> Identity:
        """Return the Zendesk event id and type of a webhook (or catch-up) payload."""
        return identify_event(payload)

    def decode(self, payload: Any) -> list[CloudEvent]:
        """Decode one Zendesk event into canonical events."""
        return decode_event(self.name, payload, self.mapping_options)

    def catch_up(self, http: httpx.AsyncClient, cursor: str | None) -> AsyncIterator[CatchUpPage]:
        """Yield organizations changed after ``cursor`` (incremental export), oldest first."""
        return catch_up_organizations(http, cursor)

    # -- outbound ------------------------------------------------------------------------------
    def http_client(self, limits: Limits) -> httpx.AsyncClient:
        """Return an HTTP client authenticating with the API token or OAuth token."""
        return build_http_client(self.settings.base_url, authorization_for(self.settings), limits)

    async def deliver(
        self, http: httpx.AsyncClient, operation: str, payload: Mapping[str, Any], *, idempotency_key: str
    ) -> DeliveryResult:
        """Apply ``operation`` once; the canonical id as Zendesk external_id makes retries safe."""
        return await deliver(http, operation, payload, self.outbound_options)

    async def deliver_batch(
        self, http: httpx.AsyncClient, operation: str, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[DeliveryResult | DeliveryError]:
        """Deliver users through ``create_or_update_many`` jobs; other operations one by one."""
        if operation == "upsert_user":
            return await deliver_users(http, items, self.outbound_options)
        return await super().deliver_batch(http, operation, items)


def _positive(settings: ConnectionSettings, key: str, default: float) -> float:
    value = settings.options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"connection {settings.name!r}: options.{key} must be a positive number")
    return float(value)
