"""The HTTP client Syncline talks to Stripe with, and Stripe's form encoding of nested params."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import httpx

from syncline.connectors.base import Limits

#: Pinned so a change of the account's default API version cannot change payload shapes.
API_VERSION = "2024-06-20"


def build_http_client(base_url: str, api_key: str, limits: Limits) -> httpx.AsyncClient:
    """Return an AsyncClient for ``base_url`` with bearer auth and the pinned ``Stripe-Version``."""
    pool = max(1, limits.concurrency)
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {api_key}", "Stripe-Version": API_VERSION},
        timeout=httpx.Timeout(limits.timeout_seconds),
        limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
    )


def form_encode(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Flatten ``params`` the way Stripe reads form bodies.

    ``{"period": {"start": 1}, "lines": [{"amount": 500}]}`` becomes
    ``[("period[start]", "1"), ("lines[0][amount]", "500")]``; ``None`` becomes ``""`` (Stripe's
    "unset"), booleans ``true``/``false``. Floats are refused: amounts are integer minor units
    and rates travel as :class:`~decimal.Decimal` or strings.
    """
    pairs: list[tuple[str, str]] = []

    def walk(key: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for sub, item in value.items():
                walk(f"{key}[{sub}]" if key else str(sub), item)
        elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
            for index, item in enumerate(value):
                walk(f"{key}[{index}]", item)
        elif value is None:
            pairs.append((key, ""))
        elif isinstance(value, bool):
            pairs.append((key, "true" if value else "false"))
        elif isinstance(value, float):
            raise TypeError(f"{key}: floats are not sent to Stripe; use int minor units or Decimal")
        elif isinstance(value, int | str | Decimal):
            pairs.append((key, str(value)))
        else:
            raise TypeError(f"{key}: cannot form-encode {type(value).__name__}")

    walk("", params)
    return pairs
