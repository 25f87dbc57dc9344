"""Transport failures (httpx) translated at the edge, the same way for every connector."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from syncline.errors import AuthConfigError, TransientError


@contextmanager
def transport_errors(vendor: str, what: str, *, network_code: str = "transient") -> Iterator[None]:
    """Turn httpx failures inside the block into Syncline errors; no httpx exception escapes.

    A timeout is transient (code ``timeout``): the write may have happened, and the vendor's
    own idempotency (external-id upsert, Idempotency-Key, look-up-before-create) makes the
    retry safe. A malformed base URL is configuration (the connection pauses); any other
    transport failure is transient (code ``network_code``).
    """
    try:
        yield
    except httpx.TimeoutException as exc:
        raise TransientError(f"{what}: {vendor} did not answer in time ({type(exc).__name__})",
                             code="timeout") from exc
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise AuthConfigError(f"{what}: invalid {vendor} URL ({exc})", code="config_invalid") from exc
    except httpx.HTTPError as exc:
        raise TransientError(f"{what}: {type(exc).__name__} talking to {vendor} ({exc})",
                             code=network_code) from exc


def retry_after(response: httpx.Response) -> float | None:
    """Return the response's ``Retry-After`` in seconds, or None when absent or an HTTP-date.

    An HTTP-date is legal too; the pipeline's own backoff is a fine fallback for it.
    """
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
