"""Translate HubSpot answers and transport failures into Syncline's error tree, in one place.

A HubSpot error body::

    {"status": "error", "message": "Property values were not valid: ...",
     "correlationId": "aeb5f871-7f07-4993-9211-075dc63e7cbf", "category": "VALIDATION_ERROR",
     "errors": [{"message": "... is not a valid email", "code": "INVALID_EMAIL",
                 "context": {"propertyName": ["email"]}}]}

================================================  ==================================
answer                                            raised
================================================  ==================================
429 ``RATE_LIMITS`` (TEN_SECONDLY_ROLLING, DAILY)  RateLimitedError; Retry-After, else
                                                  the rest of the rolling window
401 / 403                                         AuthConfigError
5xx, timeouts, connection failures                TransientError
404 ``OBJECT_NOT_FOUND``                          DataQualityError(code="not_found")
409 ``CONFLICT`` (unique value already taken)     DataQualityError(code="conflict")
400 ``VALIDATION_ERROR`` and any other 4xx        DataQualityError
================================================  ==================================

409 is a data problem here, not a business rule: HubSpot answers it when the unique
``syncline_id`` value (or another unique property) is already held by another record, which
only a person can untangle.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

import httpx

from syncline.connectors._http import transport_errors as _transport_errors
from syncline.errors import (
    AuthConfigError,
    DataQualityError,
    DeliveryError,
    RateLimitedError,
    TransientError,
    classify_http_status,
)

_MAX_MESSAGE = 500
#: Used when HubSpot's 429 carries neither Retry-After nor the window headers.
DEFAULT_WINDOW_SECONDS = 10.0


def error_body(response: httpx.Response) -> dict[str, Any]:
    """Return HubSpot's JSON error body, or ``{}`` when there is none."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def error_from_response(response: httpx.Response, what: str = "HubSpot") -> DeliveryError:
    """Return the Syncline error for a HubSpot answer that is not a success."""
    body = error_body(response)
    return error_from_body(response.status_code, body, what, headers=response.headers)


def error_from_body(
    status: int, body: Mapping[str, Any], what: str, *, headers: Mapping[str, str] | None = None
) -> DeliveryError:
    """Return the Syncline error for one HubSpot error (a whole answer or one batch error)."""
    category = str(body.get("category") or "")
    text = str(body.get("message") or "no message")[:_MAX_MESSAGE]
    message = f"{what}: HubSpot answered {status}" + (f" {category}" if category else "") + f": {text}"
    details: dict[str, Any] = {
        "status": status, "vendor_code": category or None,
        "correlation_id": body.get("correlationId"), "sub_category": _sub_category(body),
    }
    if status == 429 or category == "RATE_LIMITS":
        policy = body.get("policyName")
        # The daily allowance resets at midnight in the portal's time zone, which the answer does
        # not say: without Retry-After, leave the wait to the pipeline's backoff.
        wait = _retry_after(headers or {}) if policy == "DAILY" else rate_limit_wait(headers or {})
        return RateLimitedError(message, retry_after=wait, policy=policy, **details)
    if status in (401, 403):
        return AuthConfigError(message, **details)
    if status >= 500:
        return TransientError(message, retry_after=_retry_after(headers or {}), **details)
    if status == 404 or category == "OBJECT_NOT_FOUND":
        return DataQualityError(message, code="not_found", **details)
    if status == 409 or category == "CONFLICT":
        return DataQualityError(message, code="conflict", **details)
    if category == "VALIDATION_ERROR":
        return DataQualityError(message, field=_property_name(body), **details)
    error = classify_http_status(status, message)
    error.details.update(details)
    return error


def rate_limit_wait(headers: Mapping[str, str]) -> float | None:
    """Return how long to wait after a 429: Retry-After, else the rest of the rolling window.

    HubSpot sends no Retry-After for the ten-secondly limit; it sends
    ``X-HubSpot-RateLimit-Interval-Milliseconds: 10000`` and ``X-HubSpot-RateLimit-Remaining: 0``,
    so a client that waits one window is sure to be under the limit again.
    """
    retry_after = _retry_after(headers)
    if retry_after is not None:
        return retry_after
    interval = _number(_get(headers, "x-hubspot-ratelimit-interval-milliseconds"))
    remaining = _number(_get(headers, "x-hubspot-ratelimit-remaining"))
    if interval is not None and (remaining is None or remaining <= 0):
        return interval / 1000
    return DEFAULT_WINDOW_SECONDS if interval is None else None


def transport_errors(what: str) -> AbstractContextManager[None]:
    """Turn httpx failures inside the block into Syncline errors (see :mod:`syncline.connectors._http`)."""
    return _transport_errors("HubSpot", what, network_code="network")


def _sub_category(body: Mapping[str, Any]) -> str | None:
    errors = body.get("errors")
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], Mapping) else {}
    value = first.get("code") or first.get("subCategory") or body.get("subCategory")
    return str(value) if isinstance(value, str) else None


def _property_name(body: Mapping[str, Any]) -> str | None:
    errors = body.get("errors")
    if not isinstance(errors, list):
        return None
    for item in errors:
        context = item.get("context") if isinstance(item, Mapping) else None
        names = context.get("propertyName") if isinstance(context, Mapping) else None
        if isinstance(names, list) and names:
            return str(names[0])
    return None


def _get(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = _number(_get(headers, "retry-after"))
    return None if value is None else max(0.0, value)
