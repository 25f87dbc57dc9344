"""Translate Zendesk answers and transport failures into Syncline's error tree, in one place.

Zendesk Support error bodies::

    422 {"error": "RecordInvalid", "description": "Record validation errors",
         "details": {"email": [{"description": "Email: ann@ is not properly formatted",
                                "error": "InvalidFormat"}]}}
    404 {"error": "RecordNotFound", "description": "Not found"}
    401 {"error": "Couldn't authenticate you"}
    429 Retry-After: 7   {"error": "APIRateLimitExceeded", "description": "..."}

======================================================  =====================================
answer                                                  raised
======================================================  =====================================
429 (``Retry-After`` seconds honoured)                  RateLimitedError
401, 403                                                AuthConfigError
409 (a concurrent update of the same record)            TransientError (Zendesk says: retry)
5xx; timeouts and connection failures                   TransientError
404 RecordNotFound                                      DataQualityError, code ``not_found``
422 RecordInvalid and any other 4xx                     DataQualityError, ``field`` from details
======================================================  =====================================

Messages carry Zendesk's own description, which never echoes our credentials; the request
(and so its Authorization header) is never put in a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

import httpx

from syncline.connectors._http import retry_after as retry_after_header
from syncline.connectors._http import transport_errors as _transport_errors
from syncline.errors import (
    DataQualityError,
    DeliveryError,
    TransientError,
    classify_http_status,
)

_MAX_DETAIL = 500


def error_from_response(response: httpx.Response, what: str = "") -> DeliveryError:
    """Return the Syncline error for a Zendesk answer that is not a success."""
    status = response.status_code
    code, description, field, field_error = _error_body(response)
    retry_after = retry_after_header(response)
    prefix = f"{what}: " if what else ""
    message = (f"{prefix}Zendesk answered {status}" + (f" {code}" if code else "")
               + (f": {description}" if description else ""))
    details: dict[str, Any] = {"status": status, "vendor_code": code or None}
    if status == 409:
        return TransientError(message, retry_after=retry_after, code="conflict", **details)
    if status == 404:
        return DataQualityError(message, code="not_found", **details)
    if status in (400, 422):
        return DataQualityError(message, field=field, field_error=field_error, **details)
    error = classify_http_status(status, message, retry_after=retry_after)
    error.details.update(details)
    return error


def job_result_error(result: Mapping[str, Any], what: str) -> DataQualityError:
    """Return the error of one failed ``job_status`` result.

    ``{"index": 2, "status": "Failed", "error": "UserUpdateError",
    "details": "Email: ann@ is not properly formatted"}``
    """
    code = str(result.get("error") or "Failed")
    detail = str(result.get("details") or result.get("description") or "")[:_MAX_DETAIL]
    field = detail.split(":", 1)[0].strip().lower().replace(" ", "_") if ":" in detail else None
    return DataQualityError(f"{what}: Zendesk refused the record ({code}): {detail}",
                            field=field, vendor_code=code)


def transport_errors(what: str) -> AbstractContextManager[None]:
    """Turn httpx failures inside the block into Syncline errors (see :mod:`syncline.connectors._http`)."""
    return _transport_errors("Zendesk", what)


def _error_body(response: httpx.Response) -> tuple[str, str, str | None, str | None]:
    """Return (error, description, first field in details, that field's error) of any body."""
    try:
        body = response.json()
    except ValueError:
        return "", response.text[:_MAX_DETAIL].strip(), None, None
    if not isinstance(body, dict):
        return "", "", None, None
    error = body.get("error")
    # 401 bodies put the sentence in "error"; others put a code there and the sentence beside it
    if isinstance(error, dict):
        code, description = str(error.get("title") or ""), str(error.get("message") or "")
    else:
        code, description = str(error or ""), str(body.get("description") or "")
    field: str | None = None
    field_error: str | None = None
    details = body.get("details")
    if isinstance(details, dict) and details:
        field = str(next(iter(details)))
        problems = details[field]
        first = problems[0] if isinstance(problems, list) and problems else problems
        if isinstance(first, dict):
            field_error = str(first.get("error") or "") or None
            description = str(first.get("description") or description)
    return code, description[:_MAX_DETAIL], field, field_error
