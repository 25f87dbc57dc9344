"""Translate NetSuite answers and transport failures into Syncline's error tree, in one place.

A NetSuite REST web services error body::

    {"type": "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.1", "title": "Bad Request",
     "status": 400,
     "o:errorDetails": [{"detail": "Error while accessing a resource. You have entered an Invalid
                                    Field Value 42 for the following field: entity",
                         "o:errorPath": "entity", "o:errorCode": "INVALID_CONTENT"}]}

==============================================================  =======================
answer                                                          raised
==============================================================  =======================
429; 400/403 with SSS_REQUEST_LIMIT_EXCEEDED or                 RateLimitedError
CONCURRENCY_LIMIT_EXCEEDED (Retry-After honoured)
401; INVALID_LOGIN / INVALID_LOGIN_ATTEMPT; 403                 AuthConfigError
5xx; timeouts and connection failures                           TransientError
"Invalid Field Value" on entity / customer / doc / createdFrom  DependencyMissingError
PERIOD_CLOSED, "accounting period is closed"                    BusinessRuleError
                                                                (``period_closed``)
any other 4xx                                                   DataQualityError (via
                                                                classify_http_status)
==============================================================  =======================

Messages carry NetSuite's own detail, which never echoes our credentials; the request (and so
its Authorization header) is never put in a message.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from typing import Any

import httpx

from syncline.connectors._http import retry_after as retry_after_header
from syncline.connectors._http import transport_errors as _transport_errors
from syncline.errors import (
    AuthConfigError,
    BusinessRuleError,
    DeliveryError,
    DependencyMissingError,
    RateLimitedError,
    TransientError,
    classify_http_status,
)

RATE_LIMIT_CODES = frozenset({"SSS_REQUEST_LIMIT_EXCEEDED", "CONCURRENCY_LIMIT_EXCEEDED"})
LOGIN_CODES = frozenset({"INVALID_LOGIN", "INVALID_LOGIN_ATTEMPT", "INVALID_LOGIN_CREDENTIALS"})
PERIOD_CLOSED_CODES = frozenset({"PERIOD_CLOSED", "ACCOUNTING_PERIOD_CLOSED"})
#: Body fields that point at another synced record (the customer; the invoice a payment
#: settles or a credit memo credits; the payment a refund pays back). An invalid value there
#: means "not synced yet": webhooks arrive out of order, and the pipeline's ``after_key`` only
#: holds a row back while the row it depends on is queued, not before that row exists. The
#: retry schedule parks it once ``dependency_max_attempts`` run out.
REFERENCE_FIELDS = frozenset({"entity", "customer", "doc", "createdFrom"})

_FIELD_IN_DETAIL = re.compile(r"following field:\s*([A-Za-z_][\w.\[\]]*)")
_INDEX = re.compile(r"\[\d+\]")
_MAX_DETAIL = 500


def error_from_response(response: httpx.Response) -> DeliveryError:
    """Return the Syncline error for a NetSuite answer that is not a success."""
    status = response.status_code
    code, detail, path = _first_error_detail(response)
    retry_after = retry_after_header(response)
    message = f"NetSuite answered {status}" + (f" {code}" if code else "") + (f": {detail}" if detail else "")
    details: dict[str, Any] = {"status": status, "vendor_code": code, "error_path": path}
    if status == 429 or code in RATE_LIMIT_CODES:
        return RateLimitedError(message, retry_after=retry_after, **details)
    if status == 401 or code in LOGIN_CODES:
        return AuthConfigError(message, **details)
    if status >= 500:
        return TransientError(message, retry_after=retry_after, **details)
    lowered = detail.lower()
    if code in PERIOD_CLOSED_CODES or "period is closed" in lowered or "closed period" in lowered:
        return BusinessRuleError(message, code="period_closed", **details)
    if "invalid field value" in lowered:
        field = _field_name(path, detail)
        if field in REFERENCE_FIELDS:
            return DependencyMissingError(message, referenced_field=field, **details)
    error = classify_http_status(status, message, retry_after=retry_after)
    error.details.update(details)
    return error


def transport_errors(what: str) -> AbstractContextManager[None]:
    """Turn httpx failures inside the block into Syncline errors (see :mod:`syncline.connectors._http`)."""
    return _transport_errors("NetSuite", what)


def _first_error_detail(response: httpx.Response) -> tuple[str, str, str | None]:
    """Return (o:errorCode, detail, o:errorPath) of the first error detail, tolerating any body."""
    try:
        body = response.json()
    except ValueError:
        return "", response.text[:_MAX_DETAIL].strip(), None
    if not isinstance(body, dict):
        return "", "", None
    items = body.get("o:errorDetails")
    first = items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else {}
    code = str(first.get("o:errorCode") or "")
    detail = str(first.get("detail") or body.get("title") or "")[:_MAX_DETAIL]
    path = first.get("o:errorPath")
    return code, detail, str(path) if path is not None else None


def _field_name(path: str | None, detail: str) -> str | None:
    """Return the last field name of ``apply.items[0].doc`` (or the one named in the detail)."""
    if not path:
        match = _FIELD_IN_DETAIL.search(detail)
        path = match.group(1) if match else None
    if not path:
        return None
    return _INDEX.sub("", path).rstrip(".").rsplit(".", 1)[-1]
