"""Zendesk's wire: API-token or OAuth authentication and the HTTP client Syncline talks with.

Zendesk Support accepts, on every ``/api/v2`` request, either an API token as basic auth with
the user name ``{email}/token`` ::

    Authorization: Basic base64("jdoe@example.com/token:6wiIBWbGkBMo1mRDMuVwkw1EPsNkeUj95PIz2akv")

or an OAuth access token::

    Authorization: Bearer 37a8d8a2b2c54f1aa8bf5ad1f6e2e3cbd3cf6a63d2f1e3e1d7b1c0a6f4e4a0c1

Answers carry the account's per-minute allowance and what is left of it::

    X-Rate-Limit: 700
    X-Rate-Limit-Remaining: 699
"""

from __future__ import annotations

import base64
from typing import Any

import httpx
import orjson

from syncline.connectors.base import ConnectionSettings, Limits

API = "/api/v2"
RATE_LIMIT_HEADER = "X-Rate-Limit"
RATE_LIMIT_REMAINING_HEADER = "X-Rate-Limit-Remaining"
#: The account-wide allowance the default budget is derived from (requests per minute); plans
#: differ, so a connection sets its own share with ``budget.rate_per_second`` in syncline.yaml.
DEFAULT_REQUESTS_PER_MINUTE = 700
#: Zendesk's ceiling for ``create_or_update_many`` (and every other ``*_many`` endpoint).
MAX_BATCH = 100


def limits_for(requests_per_minute: int, *, concurrency: int = 4, batch_size: int = MAX_BATCH) -> Limits:
    """Return the Limits of a connection allowed ``requests_per_minute`` (700/min → 11.67/s)."""
    if requests_per_minute <= 0:
        raise ValueError("requests_per_minute must be positive")
    return Limits(concurrency=concurrency, rate_per_second=requests_per_minute / 60.0,
                  batch_size=batch_size, timeout_seconds=30.0)


def basic_token_authorization(email: str, api_token: str) -> str:
    """Return the ``Authorization`` value for an API token: basic auth as ``{email}/token``."""
    credentials = base64.b64encode(f"{email}/token:{api_token}".encode()).decode("ascii")
    return f"Basic {credentials}"


def authorization_for(settings: ConnectionSettings) -> str:
    """Return the ``Authorization`` value from the connection's secrets.

    ``secrets.oauth_token`` wins when present; otherwise ``secrets.email`` and
    ``secrets.api_token`` are required (a ConfigError names the missing one).
    """
    if "oauth_token" in settings.secrets:
        return f"Bearer {settings.secret('oauth_token')}"
    return basic_token_authorization(settings.secret("email"), settings.secret("api_token"))


def build_http_client(base_url: str, authorization: str, limits: Limits) -> httpx.AsyncClient:
    """Return an AsyncClient for ``base_url`` that authenticates every request."""
    pool = max(1, limits.concurrency)
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": authorization, "Accept": "application/json"},
        timeout=httpx.Timeout(limits.timeout_seconds),
        limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
    )


def dumps(value: Any) -> bytes:
    """Encode a request body as compact JSON."""
    return orjson.dumps(value)
