"""Retry schedule: exponential backoff with full jitter, honouring the vendor's Retry-After."""

from __future__ import annotations

import random
from dataclasses import dataclass

from syncline.errors import DependencyMissingError, ErrorClass, TransientError


@dataclass(frozen=True)
class RetryPolicy:
    """When to try again, and when to give up and park."""

    max_attempts: int = 12
    base_seconds: float = 0.5
    cap_seconds: float = 300.0
    dependency_max_attempts: int = 20

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1).

        Full jitter (uniform in [0, base·2^(attempt-1)] capped) spreads a burst of failures;
        a vendor's Retry-After is a floor, never shortened by jitter.
        """
        ceiling = min(self.cap_seconds, self.base_seconds * 2 ** (attempt - 1))
        jittered = (rng or random).uniform(0, ceiling)
        if retry_after is not None:
            return max(float(retry_after), jittered)
        return jittered

    def exhausted(self, attempt: int, failures: int, error: TransientError) -> bool:
        """Whether a record that failed with ``error`` should now be parked.

        ``attempt`` counts every attempt so far (this one included), ``failures`` only the
        transient ones (5xx, timeouts): ``max_attempts`` is spent by those alone, so a record
        that waited out rate limits or its customer's late arrival still gets its full retries.
        """
        if isinstance(error, DependencyMissingError):
            return attempt >= self.dependency_max_attempts
        if error.error_class is ErrorClass.RATE_LIMITED:
            # Rate limits say nothing about the record; allow far more before parking.
            return attempt >= self.max_attempts * 4
        return failures >= self.max_attempts
