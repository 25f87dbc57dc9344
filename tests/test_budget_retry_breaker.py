import asyncio
import random

import pytest

from syncline.errors import DependencyMissingError, RateLimitedError, TransientError
from syncline.pipeline.breaker import BreakerState, CircuitBreaker
from syncline.pipeline.budget import Budget
from syncline.pipeline.retry import RetryPolicy


@pytest.mark.anyio
async def test_budget_never_exceeds_its_limit() -> None:
    budget = Budget(3)
    running = 0
    peak = 0

    async def call() -> None:
        nonlocal running, peak
        async with budget.slot():
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.005)
            running -= 1

    await asyncio.gather(*(call() for _ in range(40)))
    assert peak == 3 == budget.peak
    assert budget.in_use == 0


@pytest.mark.anyio
async def test_budget_rate_limits_requests_per_second() -> None:
    budget = Budget(50, rate_per_second=100)
    started = asyncio.get_running_loop().time()

    async def call() -> None:
        async with budget.slot():
            pass

    await asyncio.gather(*(call() for _ in range(150)))
    elapsed = asyncio.get_running_loop().time() - started
    # 100 tokens are in the bucket at start; the other 50 need ~0.5 s at 100/s.
    assert elapsed >= 0.4


def test_budget_halves_on_429_and_grows_back() -> None:
    budget = Budget(8, grow_after=5, cut_interval=0)
    budget.record_rate_limited(None)
    assert budget.limit == 4
    budget.record_rate_limited(None)
    budget.record_rate_limited(None)
    budget.record_rate_limited(None)
    assert budget.limit == 1
    for _ in range(5 * 20):
        budget.record_success()
    assert budget.limit == 8  # never above the ceiling


def test_a_burst_of_429s_cuts_the_budget_once_and_it_grows_back_a_slot_per_window() -> None:
    budget = Budget(8)
    for _ in range(6):  # the answers to requests that were all in flight together
        budget.record_rate_limited(None)
    assert budget.limit == 4
    assert budget.rate_limited == 6
    for _ in range(3):
        budget.record_success()
    assert budget.limit == 4
    budget.record_success()  # a window of 4 clean answers at limit 4
    assert budget.limit == 5


@pytest.mark.anyio
async def test_budget_holds_requests_for_retry_after() -> None:
    budget = Budget(4)
    budget.record_rate_limited(0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with budget.slot():
        pass
    assert loop.time() - started >= 0.25


def test_backoff_is_jittered_capped_and_honours_retry_after() -> None:
    policy = RetryPolicy(max_attempts=5, base_seconds=1, cap_seconds=10)
    rng = random.Random(3)
    delays = [policy.delay(attempt, rng=rng) for attempt in range(1, 10) for _ in range(50)]
    assert all(0 <= d <= 10 for d in delays)
    assert max(policy.delay(1, rng=rng) for _ in range(100)) <= 1
    assert len({round(d, 6) for d in delays}) > 100  # jittered, not a fixed ladder
    assert all(policy.delay(1, retry_after=7, rng=rng) >= 7 for _ in range(20))


def test_give_up_depends_on_the_error_class() -> None:
    policy = RetryPolicy(max_attempts=3, dependency_max_attempts=6)
    assert not policy.exhausted(2, 2, TransientError("x"))
    assert policy.exhausted(3, 3, TransientError("x"))
    # Attempts spent waiting for a dependency or a rate limit leave the transient retries intact.
    assert not policy.exhausted(9, 1, TransientError("x"))
    assert not policy.exhausted(5, 0, DependencyMissingError("customer missing"))
    assert policy.exhausted(6, 0, DependencyMissingError("customer missing"))
    assert not policy.exhausted(11, 0, RateLimitedError("slow"))


def test_breaker_opens_probes_and_closes() -> None:
    breaker = CircuitBreaker(failures=3, cooldown=10)
    for _ in range(3):
        assert breaker.allows(now=0) == -1
        breaker.record_failure(now=0)
    assert breaker.state is BreakerState.OPEN
    assert breaker.allows(now=5) == 0
    assert breaker.allows(now=10) == 1  # one probe
    assert breaker.allows(now=10) == 0
    breaker.record_failure(now=10)
    assert breaker.state is BreakerState.OPEN and breaker.cooldown == 20
    assert breaker.allows(now=25) == 0
    assert breaker.allows(now=30) == 1
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED and breaker.allows(now=30) == -1


def test_half_open_probe_that_found_nothing_to_send_is_given_back() -> None:
    # Regression: a probe granted when the outbox had no due row kept the breaker half-open with
    # no request in flight, so the connection stopped for good.
    breaker = CircuitBreaker(failures=1, cooldown=1)
    breaker.record_failure(now=0)
    assert breaker.allows(now=1) == 1
    assert breaker.allows(now=1) == 0
    breaker.release_probe()
    assert breaker.allows(now=1) == 1
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
