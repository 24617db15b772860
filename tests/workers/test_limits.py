"""The limiter of `rate_limit_per_s` and `max_in_flight` (SPEC 13): in the process
(`webhooks serve`) and in Redis (shared by every worker process), the same contract."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from core.controls import WaitingReason
from tests.servers import RedisServer
from workers.limits import Limiter, Limits, LocalLimiter, RedisLimiter, Refused


# The Redis cases start a private redis-server: e2e by this suite's rule.
@pytest.fixture(params=["local", pytest.param("redis", marks=pytest.mark.e2e)])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[Limiter]:
    made: Limiter
    if request.param == "local":
        made = LocalLimiter()
    else:
        server: RedisServer = request.getfixturevalue("redis")
        made = RedisLimiter(server.url)
    yield made
    await made.aclose()


def _limits(*, rate: int | None = None, cap: int | None = None, hold_s: float = 30.0) -> Limits:
    return Limits(rate_per_s=rate, max_in_flight=cap, hold_s=hold_s, step_s=0.1)


async def test_the_rate_refuses_the_attempt_over_it_and_spreads_the_turns(
    limiter: Limiter,
) -> None:
    config_id = str(uuid.uuid4())

    granted = [await limiter.acquire(config_id, _limits(rate=5)) for _ in range(5)]
    first = await limiter.acquire(config_id, _limits(rate=5))
    second = await limiter.acquire(config_id, _limits(rate=5))

    assert all(isinstance(permit, str) for permit in granted)
    assert isinstance(first, Refused) and isinstance(second, Refused)
    assert first.reason == second.reason == WaitingReason.RATE_LIMITED
    assert 0 < first.retry_in_s <= 1.05
    assert second.retry_in_s > first.retry_in_s


async def test_in_flight_permits_are_counted_until_given_back(limiter: Limiter) -> None:
    config_id = str(uuid.uuid4())
    one = await limiter.acquire(config_id, _limits(cap=2))
    two = await limiter.acquire(config_id, _limits(cap=2))

    third = await limiter.acquire(config_id, _limits(cap=2))
    assert isinstance(one, str) and isinstance(two, str)
    await limiter.release(config_id, one)
    after = await limiter.acquire(config_id, _limits(cap=2))

    assert isinstance(third, Refused) and third.reason == WaitingReason.MAX_IN_FLIGHT
    assert isinstance(after, str)


async def test_a_permit_never_given_back_expires_with_its_hold(limiter: Limiter) -> None:
    config_id = str(uuid.uuid4())
    # A worker killed mid-request never gives its permit back.
    assert isinstance(await limiter.acquire(config_id, _limits(cap=1, hold_s=0.2)), str)
    refused = await limiter.acquire(config_id, _limits(cap=1, hold_s=0.2))

    await asyncio.sleep(0.3)

    assert isinstance(refused, Refused)
    assert isinstance(await limiter.acquire(config_id, _limits(cap=1, hold_s=0.2)), str)


async def test_configurations_are_limited_apart(limiter: Limiter) -> None:
    busy, other = str(uuid.uuid4()), str(uuid.uuid4())
    assert isinstance(await limiter.acquire(busy, _limits(rate=1, cap=1)), str)

    assert isinstance(await limiter.acquire(busy, _limits(rate=1, cap=1)), Refused)
    assert isinstance(await limiter.acquire(other, _limits(rate=1, cap=1)), str)


@pytest.mark.e2e
async def test_redis_limits_are_shared_by_every_process(redis: RedisServer) -> None:
    first, second = RedisLimiter(redis.url), RedisLimiter(redis.url)
    config_id = str(uuid.uuid4())
    try:
        taken = [await first.acquire(config_id, _limits(cap=2, rate=10)) for _ in range(2)]
        refused = await second.acquire(config_id, _limits(cap=2, rate=10))
    finally:
        await first.aclose()
        await second.aclose()

    assert all(isinstance(permit, str) for permit in taken)
    assert isinstance(refused, Refused) and refused.reason == WaitingReason.MAX_IN_FLIGHT


@pytest.mark.e2e
async def test_without_redis_a_delivery_is_deferred_not_failed(own_redis: RedisServer) -> None:
    limiter = RedisLimiter(own_redis.url)
    own_redis.stop()
    try:
        refused = await limiter.acquire(str(uuid.uuid4()), _limits(rate=5))
    finally:
        await limiter.aclose()

    assert isinstance(refused, Refused) and refused.reason == WaitingReason.RATE_LIMITED
