"""Per-connection budgets: a concurrency limit and a request rate, shrunk on 429.

One :class:`Budget` per target connection is shared by everything that calls it (deliveries,
replays, catch-up), so the vendor sees one well-behaved client. The concurrency limit is
additive-increase / multiplicative-decrease, as TCP does it: halved on a rate-limit answer, but
at most once per ``cut_interval`` (the requests already in flight when the first 429 came were
sent at the old limit; their 429s say nothing new), and raised by one after each window of clean
successes (``grow_after``, or the current limit when not set), never above the configured
ceiling. A vendor's Retry-After holds every new request of the connection until it has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Budget:
    """Concurrency slots plus a token bucket for one connection."""

    def __init__(
        self, concurrency: int, rate_per_second: float | None = None, *, grow_after: int | None = None,
        cut_interval: float = 1.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.ceiling = concurrency
        self.limit = concurrency
        self.rate = rate_per_second
        self.in_use = 0
        self.peak = 0
        self.rate_limited = 0
        self._grow_after = grow_after
        self._cut_interval = cut_interval
        self._last_cut = -float("inf")
        self._clean = 0
        self._paused_until = 0.0
        self._tokens = float(rate_per_second or 0)
        self._refilled = time.monotonic()
        self._changed = asyncio.Condition()

    @property
    def free(self) -> int:
        """Slots that could be taken right now."""
        return max(0, self.limit - self.in_use)

    def _take_token(self) -> float:
        """Take one rate token; return 0, or the seconds to wait before one is due."""
        if self.rate is None:
            return 0.0
        now = time.monotonic()
        self._tokens = min(self.rate, self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one concurrency slot (and one rate token) for the duration of a request."""
        async with self._changed:
            while True:
                wait = self._paused_until - time.monotonic()
                if wait > 0:
                    await _wait_for(self._changed, wait)
                    continue
                if self.in_use >= self.limit:
                    await self._changed.wait()
                    continue
                wait = self._take_token()
                if wait > 0:
                    await _wait_for(self._changed, wait)
                    continue
                break
            self.in_use += 1
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            async with self._changed:
                self.in_use -= 1
                self._changed.notify_all()

    def record_success(self) -> None:
        """Count a clean response; grow the limit back towards the ceiling."""
        self._clean += 1
        if self.limit < self.ceiling and self._clean >= (self._grow_after or self.limit):
            self.limit += 1
            self._clean = 0

    def record_rate_limited(self, retry_after: float | None) -> None:
        """Halve the concurrency limit and hold new requests for ``retry_after`` seconds."""
        self.rate_limited += 1
        self._clean = 0
        now = time.monotonic()
        if now - self._last_cut >= self._cut_interval:
            self._last_cut = now
            self.limit = max(1, self.limit // 2)
        if retry_after:
            self._paused_until = max(self._paused_until, time.monotonic() + retry_after)

    def snapshot(self) -> dict[str, float | int | None]:
        return {
            "limit": self.limit, "ceiling": self.ceiling, "in_use": self.in_use, "peak": self.peak,
            "rate_per_second": self.rate, "rate_limited": self.rate_limited,
        }


async def _wait_for(condition: asyncio.Condition, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(condition.wait(), timeout=seconds)
