"""HubSpot's wire: private-app bearer auth, CRM v3 object paths and the v3 webhook signature.

Every CRM call carries ``Authorization: Bearer pat-na1-...`` (a private app's access token).
Object types are addressed the way HubSpot's published OpenAPI documents address them; deals
only appear there under their object type id ``0-3``, so that is the path Syncline uses.

Webhooks are signed with ``X-HubSpot-Signature-v3``::

    X-HubSpot-Signature-v3: Pkq3kUvg8U9u0BzmDxVd2k7bb6dGc2pzjoOWk5I+4Ns=
    X-HubSpot-Request-Timestamp: 1732370000000

the base64 HMAC-SHA256, under the app's client secret, of
``method + uri + body + timestamp`` (the URI is the full URL HubSpot called, with a fixed set
of percent-escapes decoded), and the timestamp (milliseconds) must be under 5 minutes old.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import httpx

from syncline.connectors._signatures import header_value
from syncline.connectors.base import Limits
from syncline.errors import SignatureError

#: Canonical-facing object names → the path segment of ``/crm/v3/objects/{objectType}``.
OBJECT_PATHS: Final[Mapping[str, str]] = {
    "companies": "companies",
    "contacts": "contacts",
    "deals": "0-3",
    "line_items": "line_items",
    "products": "products",
    "quotes": "quotes",
}
#: Object type names in webhook ``subscriptionType`` (``deal.propertyChange``) → object names.
WEBHOOK_OBJECTS: Final[Mapping[str, str]] = {
    "company": "companies",
    "contact": "contacts",
    "deal": "deals",
    "line_item": "line_items",
    "product": "products",
    "quote": "quotes",
}
#: Names the v4 associations API takes for each object type.
ASSOCIATION_NAMES: Final[Mapping[str, str]] = {
    "companies": "companies",
    "contacts": "contacts",
    "deals": "deals",
    "line_items": "line_items",
    "products": "products",
    "quotes": "quotes",
}

SIGNATURE_HEADER: Final = "x-hubspot-signature-v3"
TIMESTAMP_HEADER: Final = "x-hubspot-request-timestamp"
DEFAULT_TOLERANCE_SECONDS: Final = 300.0

# HubSpot decodes exactly these escapes in the URI before signing (and says so in its guide).
_URI_DECODES: Final = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}


def objects_path(object_name: str, suffix: str = "") -> str:
    """Return ``/crm/v3/objects/<type>[/<suffix>]`` for an object name (``deals`` → ``0-3``)."""
    path = f"/crm/v3/objects/{OBJECT_PATHS[object_name]}"
    return f"{path}/{suffix}" if suffix else path


def build_http_client(base_url: str, access_token: str, limits: Limits) -> httpx.AsyncClient:
    """Return an AsyncClient for ``base_url`` that sends the private app token as a bearer token."""
    pool = max(1, limits.concurrency)
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
        timeout=httpx.Timeout(limits.timeout_seconds),
        limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
    )


def signing_uri(url: str) -> str:
    """Return ``url`` with the escapes HubSpot decodes before signing decoded (case-insensitive)."""
    out: list[str] = []
    index = 0
    while index < len(url):
        escape = url[index:index + 3].upper()
        if url[index] == "%" and escape in _URI_DECODES:
            out.append(_URI_DECODES[escape])
            index += 3
        else:
            out.append(url[index])
            index += 1
    return "".join(out)


@dataclass(frozen=True)
class SignatureV3:
    """Compute or check ``X-HubSpot-Signature-v3`` for one app's client secret."""

    client_secret: str
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS

    def signature(self, method: str, url: str, body: bytes, timestamp_ms: int | str) -> str:
        """Return the base64 signature HubSpot sends for this request."""
        source = method.upper().encode() + signing_uri(url).encode() + body + str(timestamp_ms).encode()
        digest = hmac.new(self.client_secret.encode(), source, hashlib.sha256).digest()
        return base64.b64encode(digest).decode("ascii")

    def headers(self, method: str, url: str, body: bytes, timestamp_ms: int) -> dict[str, str]:
        """Return the two headers HubSpot sends with a request signed at ``timestamp_ms``."""
        return {
            "X-HubSpot-Signature-v3": self.signature(method, url, body, timestamp_ms),
            "X-HubSpot-Request-Timestamp": str(timestamp_ms),
        }

    def verify(self, headers: Mapping[str, str], body: bytes, *, method: str, url: str, now: float) -> None:
        """Raise SignatureError unless the signature matches and the timestamp is fresh."""
        given = header_value(headers, SIGNATURE_HEADER)
        stamp = header_value(headers, TIMESTAMP_HEADER)
        if not given or not stamp:
            raise SignatureError("X-HubSpot-Signature-v3 or X-HubSpot-Request-Timestamp is missing",
                                 code="signature_missing")
        if not stamp.isascii() or not stamp.isdigit():
            raise SignatureError("X-HubSpot-Request-Timestamp is not a number of milliseconds",
                                 code="signature_malformed")
        expected = self.signature(method, url, body, stamp)
        if not hmac.compare_digest(expected.encode(), given.strip().encode()):
            raise SignatureError("X-HubSpot-Signature-v3 does not match the request", code="signature_mismatch")
        # Checked after the signature so a forged timestamp cannot be told apart from a stale one.
        age = now - int(stamp) / 1000
        if age > self.tolerance_seconds or age < -self.tolerance_seconds:
            raise SignatureError(
                f"X-HubSpot-Request-Timestamp is {int(age)} s from now "
                f"(tolerance {int(self.tolerance_seconds)} s)",
                code="signature_stale",
            )


