"""The ``t=<unix seconds>,v1=<hex>`` webhook signature scheme, shared by every sender that uses it.

Stripe signs ``Stripe-Signature: t=1492774577,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd``
(``v1`` = hex HMAC-SHA256 of ``f"{t}.".encode() + raw_body`` under the endpoint secret); the
Salesforce change-event relay signs ``X-Syncline-Signature`` the same way. Several ``v1`` values
may be present while a secret is being rolled; one matching is enough.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from syncline.errors import SignatureError


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """Return header ``name`` from a case-insensitive or a plain mapping, whatever the case."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


@dataclass(frozen=True)
class TimestampedHmac:
    """Check or produce a ``t=...,v1=...`` header named ``header`` (shown to people as ``label``)."""

    secret: str
    header: str
    label: str
    tolerance_seconds: float = 300

    def _digest(self, timestamp: str, body: bytes) -> str:
        return hmac.new(self.secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()

    def sign(self, body: bytes, timestamp: int) -> str:
        """Return the header value for ``body`` signed at ``timestamp``."""
        return f"t={timestamp},v1={self._digest(str(timestamp), body)}"

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float) -> None:
        """Raise SignatureError unless a ``v1`` matches and ``t`` is within the tolerance of ``now``."""
        header = header_value(headers, self.header)
        if not header:
            raise SignatureError(f"{self.label} header is missing", code="signature_missing")
        timestamp, candidates = self._parse(header)
        expected = self._digest(timestamp, body)
        # compare every candidate so timing does not reveal which one matched
        matched = [hmac.compare_digest(expected, candidate) for candidate in candidates]
        if not any(matched):
            raise SignatureError(f"{self.label} has no v1 signature matching the body", code="signature_mismatch")
        age = now - int(timestamp)
        if abs(age) > self.tolerance_seconds:
            raise SignatureError(
                f"{self.label} timestamp is {int(age)} s from now (tolerance {int(self.tolerance_seconds)} s)",
                code="signature_stale",
            )

    def _parse(self, header: str) -> tuple[str, list[str]]:
        timestamps: list[str] = []
        candidates: list[str] = []
        for part in header.split(","):
            key, sep, value = part.strip().partition("=")
            if not sep:
                raise SignatureError(f"{self.label} is malformed (expected key=value pairs)",
                                     code="signature_malformed")
            if key == "t":
                timestamps.append(value)
            elif key == "v1":
                candidates.append(value.strip())
        if len(timestamps) != 1 or not timestamps[0].isdigit() or not timestamps[0].isascii():
            raise SignatureError(f"{self.label} is malformed (needs exactly one numeric t=)",
                                 code="signature_malformed")
        if not candidates:
            raise SignatureError(f"{self.label} is malformed (no v1= signature)", code="signature_malformed")
        return timestamps[0], candidates
