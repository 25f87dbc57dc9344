"""Translate Stripe error responses and transport failures into :mod:`syncline.errors` classes.

Stripe answers errors as ``{"error": {"type": "invalid_request_error", "code": "resource_missing",
"message": "No such customer: 'cus_123'", "param": "customer"}}`` with a status that says how bad
it is; ``Stripe-Should-Retry`` overrides the status when Stripe knows better.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from syncline.errors import (
    AuthConfigError,
    BusinessRuleError,
    DataQualityError,
    DeliveryError,
    DependencyMissingError,
    RateLimitedError,
    TransientError,
    classify_http_status,
)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date; the pipeline's own backoff is good enough then


def _error_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def error_from_response(response: httpx.Response) -> DeliveryError:
    """Return the Syncline error for a non-2xx Stripe response."""
    error = _error_body(response)
    status = response.status_code
    kind = str(error.get("type") or "")
    code = error.get("code")
    param = error.get("param")
    text = str(error.get("message") or response.reason_phrase or "no message")
    message = f"Stripe {status} {kind or 'error'}: {text}"
    details: dict[str, Any] = {
        "status": status, "vendor_type": kind or None, "vendor_code": code, "param": param,
        "request_id": response.headers.get("request-id"),
    }
    retry_after = _retry_after(response)
    should_retry = response.headers.get("stripe-should-retry")

    if status == 429:
        return RateLimitedError(message, retry_after=retry_after, **details)
    if status in (401, 403):
        return AuthConfigError(message, **details)
    if should_retry == "true" or status >= 500:
        return TransientError(message, retry_after=retry_after, **details)
    if kind == "idempotency_error":
        if status == 409:
            # another request with the same key is still running: retrying later is correct
            return TransientError(message, retry_after=retry_after, code="idempotency_in_progress", **details)
        # the same key came back with other parameters: Syncline's key derivation is wrong, and
        # retrying cannot fix that, so a person must look at it
        return DataQualityError(message, code="idempotency_key_reused", **details)
    if kind == "card_error" or status == 402:
        return BusinessRuleError(message, code=str(code or "card_error"), **details)
    if code == "resource_missing" and param not in (None, "id"):
        # a referenced record (the invoice's customer, the refund's charge) is not in Stripe yet
        return DependencyMissingError(message, retry_after=retry_after, **details)
    return classify_http_status(status, message, retry_after=retry_after)


def raise_for_stripe(response: httpx.Response) -> None:
    """Raise the translated error unless ``response`` is a 2xx."""
    if not response.is_success:
        raise error_from_response(response)


@contextmanager
def translate_transport_errors(what: str) -> Iterator[None]:
    """Turn httpx timeouts and connection failures during ``what`` into TransientError."""
    try:
        yield
    except httpx.TimeoutException as exc:
        raise TransientError(f"Stripe {what} timed out", code="timeout") from exc
    except httpx.TransportError as exc:
        raise TransientError(f"Stripe {what} failed: {type(exc).__name__}", code="network") from exc
