"""Circuit breaker per connection: stop calling a vendor that keeps failing, probe, recover."""

from __future__ import annotations

import time
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Open after ``failures`` consecutive transient failures; probe after a cooldown.

    While open, nothing is claimed for the connection (rows wait in the outbox, attempts are not
    spent). Half-open lets one request through: success closes, failure re-opens with the
    cooldown doubled up to ``max_cooldown``.
    """

    def __init__(self, failures: int = 20, cooldown: float = 5.0, max_cooldown: float = 300.0) -> None:
        self.threshold = failures
        self.base_cooldown = cooldown
        self.cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.state = BreakerState.CLOSED
        self.consecutive = 0
        self.opened_at = 0.0
        self.times_opened = 0
        self._probing = False

    def allows(self, now: float | None = None) -> int:
        """Return how many requests may start now: unlimited (-1), one probe (1) or none (0)."""
        now = time.monotonic() if now is None else now
        if self.state is BreakerState.OPEN and now - self.opened_at >= self.cooldown:
            self.state = BreakerState.HALF_OPEN
            self._probing = False
        if self.state is BreakerState.CLOSED:
            return -1
        if self.state is BreakerState.HALF_OPEN and not self._probing:
            self._probing = True
            return 1
        return 0

    def release_probe(self) -> None:
        """Give back a probe that was granted but not used (there was nothing to send)."""
        if self.state is BreakerState.HALF_OPEN:
            self._probing = False

    def record_success(self) -> None:
        self.consecutive = 0
        if self.state is not BreakerState.CLOSED:
            self.state = BreakerState.CLOSED
            self.cooldown = self.base_cooldown

    def record_failure(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.consecutive += 1
        if self.state is BreakerState.HALF_OPEN:
            self.cooldown = min(self.max_cooldown, self.cooldown * 2)
            self._open(now)
        elif self.state is BreakerState.CLOSED and self.consecutive >= self.threshold:
            self._open(now)

    def _open(self, now: float) -> None:
        self.state = BreakerState.OPEN
        self.opened_at = now
        self.times_opened += 1
        self._probing = False
