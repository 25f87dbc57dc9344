"""Translate Salesforce answers and transport failures into Syncline's error tree, in one place.

The REST API answers errors with a JSON list::

    [{"message": "Required fields are missing: [LastName]", "errorCode": "REQUIRED_FIELD_MISSING",
      "fields": ["LastName"]}]

and an upsert by external id that matches several records with ``300 Multiple Choices`` and the
matching records' URLs::

    ["/services/data/v61.0/sobjects/Account/0015g00000AbCdEAAA",
     "/services/data/v61.0/sobjects/Account/0015g00000AbCdFAAA"]

====================================================  =========================================
answer                                                raised
====================================================  =========================================
300 (external id matches several records)             DataQualityError ``multiple_matches``
403 REQUEST_LIMIT_EXCEEDED; 429                       RateLimitedError (Retry-After honoured)
401 (after one token refresh); 403 other codes        AuthConfigError
5xx (503 SERVER_UNAVAILABLE, 500 UNKNOWN_EXCEPTION)   TransientError
400 ``Foreign key external ID: X not found``          DependencyMissingError (the referenced
                                                      record is not synced yet)
404 NOT_FOUND, ENTITY_IS_DELETED                      DataQualityError ``not_found``
400 REQUIRED_FIELD_MISSING, INVALID_FIELD,            DataQualityError (code = the Salesforce
FIELD_CUSTOM_VALIDATION_EXCEPTION, STRING_TOO_LONG,   errorCode in lower case)
any other 4xx
UNABLE_TO_LOCK_ROW                                    TransientError (row lock contention)
====================================================  =========================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

import httpx

from syncline.connectors._http import retry_after as retry_after_header
from syncline.connectors._http import transport_errors as _transport_errors
from syncline.errors import (
    AuthConfigError,
    DataQualityError,
    DeliveryError,
    DependencyMissingError,
    RateLimitedError,
    TransientError,
    classify_http_status,
)

RATE_LIMIT_CODES = frozenset({"REQUEST_LIMIT_EXCEEDED", "TOO_MANY_REQUESTS"})
NOT_FOUND_CODES = frozenset({"NOT_FOUND", "ENTITY_IS_DELETED"})
#: Errors Salesforce itself says go away on a retry.
TRANSIENT_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "UNKNOWN_EXCEPTION"})
_FOREIGN_KEY = re.compile(r"Foreign key external ID: (.+?) not found for field (\S+) in entity (\w+)")
_MAX_DETAIL = 500


def error_from_response(response: httpx.Response, *, what: str = "Salesforce request") -> DeliveryError:
    """Return the Syncline error for a Salesforce answer that is not a success."""
    status = response.status_code
    body = _json(response)
    retry_after = retry_after_header(response)
    if status == 300:
        matches = [str(url) for url in body] if isinstance(body, list) else []
        return DataQualityError(
            f"{what}: the external id matches {len(matches) or 'several'} Salesforce records; "
            "merge the duplicates in Salesforce",
            code="multiple_matches", status=status, matches=matches,
        )
    code, message, fields = first_error(body, fallback=response.text)
    return error_for(status, code, message, fields, what=what, retry_after=retry_after)


def error_for(
    status: int, code: str, message: str, fields: list[str], *, what: str, retry_after: float | None = None
) -> DeliveryError:
    """Return the Syncline error for one Salesforce error (whole answer or one collection item)."""
    text = f"{what}: Salesforce answered {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
    details: dict[str, Any] = {"status": status, "vendor_code": code or None, "fields": fields}
    if status == 429 or code in RATE_LIMIT_CODES:
        return RateLimitedError(text, retry_after=retry_after, **details)
    if status == 401 or code == "INVALID_SESSION_ID":
        return AuthConfigError(text, **details)
    if status >= 500 or code in TRANSIENT_CODES:
        return TransientError(text, retry_after=retry_after, **details)
    foreign = _FOREIGN_KEY.search(message)
    if foreign is not None:
        return DependencyMissingError(text, referenced_entity=foreign.group(3),
                                      referenced_id=foreign.group(1), **details)
    if status == 404 or code in NOT_FOUND_CODES:
        return DataQualityError(text, code="not_found", **details)
    if 400 <= status < 500 and status not in (403, 409):
        return DataQualityError(text, code=code.lower() if code else None, **details)
    # 403 (INSUFFICIENT_ACCESS, API_DISABLED_FOR_ORG) pauses the connection; 409 is a business rule.
    error = classify_http_status(status, text, retry_after=retry_after)
    error.details.update(details)
    return error


def first_error(body: Any, *, fallback: str = "") -> tuple[str, str, list[str]]:
    """Return (errorCode, message, fields) of the first error in a Salesforce error list."""
    items = body if isinstance(body, list) else [body]
    first = items[0] if items and isinstance(items[0], Mapping) else {}
    code = str(first.get("errorCode") or first.get("statusCode") or "")
    message = str(first.get("message") or ("" if first else fallback))[:_MAX_DETAIL].strip()
    raw_fields = first.get("fields")
    fields = [str(name) for name in raw_fields] if isinstance(raw_fields, list) else []
    return code, message, fields


def transport_errors(what: str) -> AbstractContextManager[None]:
    """Turn httpx failures inside the block into Syncline errors (see :mod:`syncline.connectors._http`)."""
    return _transport_errors("Salesforce", what)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
