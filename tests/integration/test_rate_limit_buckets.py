"""Provider rate limits' token buckets on both backends (``RateLimits.take``): in memory and in Redis.

The memory backend counts on the clock it is given (a fake one here); the Redis script reads the server's clock,
so its half really sleeps. Several clients taking from one Redis bucket at once never get more than the bucket
held plus what it refilled — the property that makes a limit shared by several processes hold."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from clarion.counters.memory import MemoryCounters
from clarion.counters.redis import RedisCounters
from clarion.domain import ratelimit
from tests.conftest import REDIS_URL, connect_redis, disconnect_redis

PREFIX = "clarion-test-rl:"
TEN = ratelimit.Rate(per_second=10).buckets()  # 10/s, burst 1
FIFTY = ratelimit.Rate(per_second=50).buckets()  # 50/s, burst 5


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    client = await connect_redis()
    yield client
    await disconnect_redis(client)


async def test_memory_buckets_grant_the_burst_then_refill_at_the_rate_on_the_clock_given() -> None:
    counters = MemoryCounters()
    now = 1_700_000_000.0
    first = await counters.take("sms-a", FIFTY, 20, now)
    assert first.granted == 5
    assert first.tokens == (0.0,)
    assert (await counters.take("sms-a", FIFTY, 20, now)).granted == 0
    later = await counters.take("sms-a", FIFTY, 20, now + 0.1)  # 0.1 s at 50/s: 5 tokens, the bucket full again
    assert later.granted == 5
    assert (await counters.take("sms-b", FIFTY, 1, now)).granted == 1  # another account has its own bucket


async def test_memory_buckets_take_from_every_period_at_once() -> None:
    counters = MemoryCounters()
    both = ratelimit.Rate(per_second=50, per_minute=120).buckets()  # minute: 2/s, burst 12
    now = 1_700_000_000.0
    assert (await counters.take("sms-a", both, 100, now)).granted == 5
    assert (await counters.take("sms-a", both, 100, now + 1)).granted == 5
    assert (await counters.take("sms-a", both, 100, now + 2)).granted == 5
    grant = await counters.take("sms-a", both, 100, now + 3)
    assert grant.granted == 3  # the minute bucket ran dry first: 12 + 2/s × 3 s refilled − 15 taken
    assert ratelimit.turns(both, grant.tokens, 1) == pytest.approx([0.5])


async def test_redis_buckets_grant_the_burst_then_refill_at_the_rate_on_the_servers_clock(
    redis_client: Redis,
) -> None:
    counters = RedisCounters(redis_client, prefix=PREFIX)
    first = await counters.take("sms-a", FIFTY, 20, 0.0)  # ``now`` is the memory backend's: Redis uses its own
    assert first.granted == 5
    assert first.tokens[0] == pytest.approx(0.0, abs=0.05)
    assert (await counters.take("sms-a", FIFTY, 20, 0.0)).granted == 0
    await asyncio.sleep(0.12)
    assert (await counters.take("sms-a", FIFTY, 20, 0.0)).granted == 5
    assert (await counters.take("sms-b", FIFTY, 1, 0.0)).granted == 1
    assert await redis_client.pttl(f"{PREFIX}bucket:sms-a:second") > 0  # it disappears once it would be full


async def test_two_redis_clients_share_one_bucket_and_never_take_more_than_it_holds_and_refills(
    redis_client: Redis,
) -> None:
    """Two clients (as two processes would) hammer one 10/s bucket for about a second: together they are
    granted at most burst + rate × elapsed, and each of them saw the other's takes."""
    other = Redis.from_url(REDIS_URL)
    try:
        a, b = RedisCounters(redis_client, prefix=PREFIX), RedisCounters(other, prefix=PREFIX)
        started = time.monotonic()
        granted = {"a": 0, "b": 0}

        async def hammer(name: str, counters: RedisCounters) -> None:
            while time.monotonic() - started < 1.0:
                granted[name] += (await counters.take("sms-shared", TEN, 3, 0.0)).granted
                await asyncio.sleep(0.005)

        await asyncio.gather(hammer("a", a), hammer("b", b))
        elapsed = time.monotonic() - started
        total = granted["a"] + granted["b"]
        assert total <= 1 + 10 * elapsed + 1  # burst + refill (+1: the last partial token's rounding)
        assert total >= 10 * elapsed * 0.7  # and the limit is used, not starved
        assert granted["a"] > 0 and granted["b"] > 0
    finally:
        await other.aclose()
