"""Syncline's error tree: every class says what the pipeline should do next.

One root, :class:`SynclineError`. Connectors translate vendor responses into these classes at
the edge (see ``connectors/<vendor>/errors.py``); nothing vendor-specific crosses that line.

=====================  =======================================  ===================
class                  meaning                                  pipeline action
=====================  =======================================  ===================
TransientError         the vendor or network hiccuped          retry on schedule
RateLimitedError       the vendor asked us to slow down         wait, shrink budget
DependencyMissingError a record this one refers to is not there retry (short), park
BusinessRuleError      the vendor refused by its own rules      park for a person
DataQualityError       the payload is wrong or incomplete       park for a person
AuthConfigError        credentials or configuration are wrong   pause the connection
=====================  =======================================  ===================
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar


class ErrorClass(StrEnum):
    """What to do next with a failed unit of work."""

    TRANSIENT = "transient"
    RATE_LIMITED = "rate_limited"
    DEPENDENCY = "dependency"
    BUSINESS_RULE = "business_rule"
    DATA_QUALITY = "data_quality"
    AUTH_CONFIG = "auth_config"


class SynclineError(Exception):
    """Root of every error Syncline raises on purpose.

    ``code`` is stable and machine-readable; ``message`` is for a person and never holds
    secrets; ``details`` carries structured context (vendor error code, field path, ...).
    """

    error_class: ClassVar[ErrorClass | None] = None
    default_code: ClassVar[str] = "syncline_error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details = details

    def __str__(self) -> str:
        return self.message


class ConfigError(SynclineError):
    """The project configuration is invalid; the message says which key and why."""

    default_code = "config_invalid"


class SignatureError(SynclineError):
    """An inbound request failed authentication (forged, stale or missing signature)."""

    default_code = "signature_invalid"


class DeliveryError(SynclineError):
    """A delivery to a vendor failed; the subclass decides retry, park or pause."""

    default_code = "delivery_failed"
    #: Whether the pipeline may try the same request again later.
    retryable: ClassVar[bool] = False


class TransientError(DeliveryError):
    """Network failure, timeout or 5xx: retry with backoff."""

    error_class = ErrorClass.TRANSIENT
    default_code = "transient"
    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class RateLimitedError(TransientError):
    """The vendor refused for load (429, concurrency governance): wait and shrink the budget."""

    error_class = ErrorClass.RATE_LIMITED
    default_code = "rate_limited"


class DependencyMissingError(TransientError):
    """A referenced record (customer of an invoice, invoice of a payment) is not there yet."""

    error_class = ErrorClass.DEPENDENCY
    default_code = "dependency_missing"


class BusinessRuleError(DeliveryError):
    """The vendor refused the operation under its own rules (closed period, locked record)."""

    error_class = ErrorClass.BUSINESS_RULE
    default_code = "business_rule"


class DataQualityError(DeliveryError):
    """The payload is invalid or incomplete; a person must fix the data."""

    error_class = ErrorClass.DATA_QUALITY
    default_code = "data_quality"


class AuthConfigError(DeliveryError):
    """Credentials rejected or connection misconfigured: pause the connection and alert."""

    error_class = ErrorClass.AUTH_CONFIG
    default_code = "auth_config"


class StoreError(SynclineError):
    """The durable store failed; nothing was acknowledged."""

    default_code = "store_unavailable"


def classify_http_status(status: int, message: str, *, retry_after: float | None = None) -> DeliveryError:
    """Map an HTTP status to an error class, the one place this mapping lives.

    Connectors call this for responses they have no vendor-specific rule for.
    """
    if status == 429:
        return RateLimitedError(message, retry_after=retry_after, status=status)
    if status in (401, 403):
        return AuthConfigError(message, status=status)
    if status in (408, 425) or status >= 500:
        return TransientError(message, retry_after=retry_after, status=status)
    if status == 409:
        return BusinessRuleError(message, status=status)
    return DataQualityError(message, status=status)
