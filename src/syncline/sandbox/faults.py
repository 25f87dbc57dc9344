"""Fault injection shared by every vendor sandbox: latency, 5xx, 429 and timeouts."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum


class Fault(StrEnum):
    NONE = "none"
    SERVER_ERROR = "server_error"    # answer 5xx without applying the request
    RATE_LIMITED = "rate_limited"    # answer 429 without applying the request
    TIMEOUT = "timeout"              # apply the request, then hang past the client's timeout


@dataclass
class Faults:
    """Probabilities of each fault per request, plus latency; seeded for repeatable runs.

    A timeout applies the change *before* hanging: the worst case for exactly-once, since
    the caller never learns that the record was written.
    """

    server_error_rate: float = 0.0
    rate_limited_rate: float = 0.0
    timeout_rate: float = 0.0
    latency_seconds: float = 0.0
    hang_seconds: float = 5.0
    retry_after_seconds: int = 1
    seed: int | None = None
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def draw(self) -> Fault:
        """Pick the fault (or none) for the next request."""
        roll = self._rng.random()
        if roll < self.server_error_rate:
            return Fault.SERVER_ERROR
        roll -= self.server_error_rate
        if roll < self.rate_limited_rate:
            return Fault.RATE_LIMITED
        roll -= self.rate_limited_rate
        if roll < self.timeout_rate:
            return Fault.TIMEOUT
        return Fault.NONE

    def update(self, **values: float) -> None:
        """Change rates at run time (the sandboxes' ``POST /_sandbox/faults``)."""
        for key, value in values.items():
            if key not in {"server_error_rate", "rate_limited_rate", "timeout_rate", "latency_seconds",
                           "hang_seconds", "retry_after_seconds"}:
                raise ValueError(f"unknown fault setting {key!r}")
            setattr(self, key, value)
