"""Declarative routes: event type + condition → deliver to a connection's operation."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jmespath

from syncline.canonical.events import CloudEvent
from syncline.config import RouteConfig
from syncline.connectors.base import Connector
from syncline.errors import ConfigError

_KEYS = uuid.UUID("0c7e0f5e-53a1-4f0a-8f7e-5d1b0a3c2e11")

# Which field of a canonical object names the record it depends on at the target: an invoice
# needs its customer, a payment its invoice (or customer), a refund its payment.
_DEPENDS_ON: dict[str, tuple[str, ...]] = {
    "invoice": ("account_id",),
    "subscription": ("account_id",),
    "credit_memo": ("invoice_id", "account_id"),
    "payment": ("invoice_id", "account_id"),
    "refund": ("payment_id",),
    "contact": ("account_id",),
    "opportunity": ("account_id",),
    "quote": ("opportunity_id", "account_id"),
    "contract": ("account_id",),
    "sales_order": ("account_id",),
    "entitlement": ("account_id",),
    "support_ticket": ("account_id",),
    "dispute": ("payment_id",),
}


@dataclass(frozen=True)
class Delivery:
    """One outbox row to write for one canonical event."""

    connection: str
    operation: str
    ordering_key: str
    after_key: str | None
    dedupe_key: str
    idempotency_key: str
    canonical_id: str
    snapshot: bool


@dataclass(frozen=True)
class _Route:
    on: str
    condition: Any
    connection: str
    operation: str

    def matches(self, event: CloudEvent, envelope: Mapping[str, Any] | None) -> bool:
        if self.on.endswith(".*"):
            if not event.type.startswith(self.on[:-1]):
                return False
        elif event.type != self.on:
            return False
        return self.condition is None or bool(self.condition.search(envelope))


class Router:
    """Compiled routes, checked against the connectors' operations when built."""

    def __init__(self, routes: Sequence[RouteConfig], connectors: Mapping[str, Connector]) -> None:
        self._routes: list[_Route] = []
        for index, route in enumerate(routes):
            target = connectors.get(route.deliver.connection)
            if target is None:
                raise ConfigError(f"routes[{index}]: unknown connection {route.deliver.connection!r}")
            if route.deliver.operation not in target.operations:
                known = ", ".join(sorted(target.operations)) or "none"
                raise ConfigError(
                    f"routes[{index}]: {target.vendor} has no operation {route.deliver.operation!r} (known: {known})"
                )
            condition = jmespath.compile(route.when) if route.when else None
            self._routes.append(_Route(route.event, condition, route.deliver.connection, route.deliver.operation))
        self._connectors = connectors

    def route(self, event: CloudEvent) -> list[Delivery]:
        """Return the deliveries ``event`` fans out to (possibly none)."""
        envelope = None
        if any(route.condition is not None for route in self._routes):
            envelope = {"type": event.type, "source": event.source, "subject": event.subject, "data": event.data}
        out: list[Delivery] = []
        subject = event.subject or event.id
        for route in self._routes:
            if not route.matches(event, envelope):
                continue
            operation = self._connectors[route.connection].operations[route.operation]
            after = _dependency(event.data)
            version = event.sequence or event.id
            out.append(
                Delivery(
                    connection=route.connection,
                    operation=route.operation,
                    ordering_key=f"{route.connection}:{subject}",
                    after_key=f"{route.connection}:{after}" if after else None,
                    dedupe_key=f"{route.connection}:{route.operation}:{event.id}",
                    idempotency_key=str(
                        uuid.uuid5(_KEYS, f"{route.connection}/{route.operation}/{subject}/{version}")
                    ),
                    canonical_id=subject,
                    snapshot=operation.snapshot,
                )
            )
        return out


def _dependency(data: Mapping[str, Any]) -> str | None:
    for field in _DEPENDS_ON.get(str(data.get("object_type")), ()):
        value = data.get(field)
        if value:
            return str(value)
    return None
