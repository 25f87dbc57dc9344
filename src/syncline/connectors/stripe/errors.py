"""Translate Stripe error responses and transport failures into :mod:`syncline.errors` classes.

Stripe answers errors as ``{"error": {"type": "invalid_request_error", "code": "resource_missing",
"message": "No such customer: 'cus_123'", "param": "customer"}}`` with a status that says how bad
it is; ``Stripe-Should-Retry`` overrides the status when Stripe knows better.

=================================================  ==========================================
Stripe answer                                      Syncline class
=================================================  ==========================================
429 (``Retry-After``, ``Stripe-Rate-Limited-...``)  RateLimitedError (retry_after honoured)
401 / 403                                          AuthConfigError (pause the connection)
5xx, or ``Stripe-Should-Retry: true``              TransientError
409 (idempotency key in use, lock timeout)         TransientError
400 ``idempotency_error`` (key reused)             DataQualityError ``idempotency_key_reused``
402 / ``card_error``                               BusinessRuleError
404 ``resource_missing`` (the addressed record)     DataQualityError ``not_found``
400 ``resource_missing`` on a parameter            DependencyMissingError (retry, then park)
other 400 (``invalid_request_error``)              DataQualityError, ``field`` = ``param``
=================================================  ==========================================
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from syncline.connectors._http import retry_after
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

#: How long to wait after a 429 that names a ``Stripe-Rate-Limited-Reason`` but no ``Retry-After``:
#: Stripe's limits are per second, so one second lets the window roll over.
DEFAULT_RATE_LIMIT_WAIT_SECONDS = 1.0


def _retry_after(response: httpx.Response) -> float | None:
    if "retry-after" not in response.headers and response.status_code == 429 \
            and response.headers.get("stripe-rate-limited-reason"):
        return DEFAULT_RATE_LIMIT_WAIT_SECONDS
    return retry_after(response)


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
    if status == 409:
        # another request with the same key is still running, or the object is locked by a
        # concurrent write: both clear on their own, so retrying later is correct
        conflict = "idempotency_in_progress" if kind == "idempotency_error" else str(code or "conflict")
        return TransientError(message, retry_after=retry_after, code=conflict, **details)
    if kind == "idempotency_error":
        # the same key came back with other parameters: Syncline's key derivation is wrong, and
        # retrying cannot fix that, so a person must look at it
        return DataQualityError(message, code="idempotency_key_reused", **details)
    if status == 402:
        return BusinessRuleError(message, code=str(code or "card_error"), **details)
    if code == "resource_missing" and param not in (None, "id"):
        # a referenced record (the invoice's customer, the refund's charge) is not in Stripe yet
        return DependencyMissingError(message, retry_after=retry_after, **details)
    if status == 404 and code == "resource_missing":
        # the record addressed by the URL is gone: retrying cannot bring it back
        return DataQualityError(message, code="not_found", field=param, **details)
    if status == 400:
        # Stripe's own code stays in details["vendor_code"]
        return DataQualityError(message, field=param, **details)
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
