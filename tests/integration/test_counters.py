"""The counters behind frequency caps and dedup windows, on both backends: in memory and in Redis.

Each behaviour test runs twice. Time moves through the ``clock`` fixture: the memory backend gets a fake clock
(no sleeping), the Redis backend really sleeps and reads the server's clock, because that is the only clock
its scripts use. Windows are a second or two so the Redis half stays quick.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from clarion.counters.base import Counters, Hit, HitResult, Limit, Window
from clarion.counters.memory import MemoryCounters
from clarion.counters.redis import RedisCounters
from tests.conftest import REDIS_URL, connect_redis, disconnect_redis

PREFIX = "clarion-test:"
HOUR = Window("rolling", 3600)


def cap(key: str, limit: int, window: Window = HOUR) -> Limit:
    return Limit(key, limit, window)


def one(*limits: Limit, cost: int = 1) -> Hit:
    return Hit(limits, cost)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.25

    def __call__(self) -> float:
        return self.now


class Clock:
    """What a test needs of time: the backend's notion of now, and a way to let time pass."""

    def __init__(self, now: Callable[[], Awaitable[float]], advance: Callable[[float], Awaitable[None]]) -> None:
        self.now = now
        self.advance = advance


# -- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    client = await connect_redis()
    yield client
    await disconnect_redis(client)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "redis"])
async def counters(request: pytest.FixtureRequest, fake_clock: FakeClock) -> AsyncIterator[Counters]:
    if request.param == "memory":
        memory = MemoryCounters(clock=fake_clock)
        yield memory
        await memory.close()
        return
    # Connected here rather than through ``redis_client``: async fixtures cannot be fetched dynamically.
    client = await connect_redis()
    backend = RedisCounters(client, prefix=PREFIX)
    yield backend
    await backend.close()
    await disconnect_redis(client)


@pytest.fixture
def clock(counters: Counters, fake_clock: FakeClock) -> Clock:
    if isinstance(counters, MemoryCounters):

        async def fake_now() -> float:
            return fake_clock.now

        async def fake_advance(seconds: float) -> None:
            fake_clock.now += seconds

        return Clock(fake_now, fake_advance)

    assert isinstance(counters, RedisCounters)
    client = counters.client

    async def server_now() -> float:
        seconds, micros = await client.time()
        return seconds + micros / 1e6

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds)

    return Clock(server_now, sleep)


# -- the data types -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: Window("hourly", 60),  # type: ignore[arg-type]
        lambda: Window("rolling", 0),
        lambda: Window("rolling", 60, start=0.0),
        lambda: Window("fixed", 60, start=float("nan")),
        lambda: Limit("", 1, HOUR),
        lambda: Limit("k", -1, HOUR),
        lambda: Hit(()),
        lambda: Hit((cap("k", 1),), cost=0),
        lambda: Hit((cap("k", 1), cap("k", 5))),
    ],
)
def test_invalid_requests_are_refused(build: Callable[[], Any]) -> None:
    with pytest.raises(ValueError):
        build()


def test_fixed_buckets_are_anchored_at_start() -> None:
    day = Window("fixed", 86_400, start=1_700_000_000.0 - 8 * 3600)
    assert day.bucket(1_700_000_000.0 - 8 * 3600) == (0, 1_700_000_000.0 - 8 * 3600 + 86_400)
    assert day.bucket(1_700_000_000.0 + 16 * 3600 - 0.001)[0] == 0
    assert day.bucket(1_700_000_000.0 + 16 * 3600)[0] == 1
    assert day.bucket(1_700_000_000.0 - 8 * 3600 - 1)[0] == -1
    assert Window("fixed", 60).bucket(120.5) == (2, 180.0)


async def test_both_backends_satisfy_the_protocol(counters: Counters) -> None:
    assert isinstance(counters, Counters)


# -- caps ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", [HOUR, Window("fixed", 3600)], ids=["rolling", "fixed"])
async def test_a_cap_of_n_allows_exactly_n(counters: Counters, window: Window) -> None:
    limit = cap("cap:sms-daily:u1", 3, window)
    results = [(await counters.hit([one(limit)]))[0] for _ in range(5)]
    assert results == [
        HitResult(True, (1,)),
        HitResult(True, (2,)),
        HitResult(True, (3,)),
        HitResult(False, (3,), 0),
        HitResult(False, (3,), 0),
    ]
    assert await counters.peek([limit]) == [3]


async def test_limits_are_per_key(counters: Counters) -> None:
    assert (await counters.hit([one(cap("u1", 1))]))[0].allowed
    assert not (await counters.hit([one(cap("u1", 1))]))[0].allowed
    assert (await counters.hit([one(cap("u2", 1))]))[0].allowed


async def test_a_hit_is_all_or_nothing_across_its_limits(counters: Counters) -> None:
    user, dept, marketing = cap("user", 5), cap("dept", 1, Window("fixed", 3600)), cap("mkt", 5)
    assert await counters.hit([one(user, dept, marketing)]) == [HitResult(True, (1, 1, 1))]

    refused = await counters.hit([one(user, dept, marketing)])
    assert refused == [HitResult(False, (1, 1, 1), 1)]
    assert await counters.peek([user, dept, marketing]) == [1, 1, 1]

    # The first limit that refuses is the one reported, and counts for the others are still shown.
    tight = cap("tight", 0)
    assert await counters.hit([one(tight, user, dept)]) == [HitResult(False, (0, 1, 1), 0)]
    assert await counters.peek([tight, user, dept]) == [0, 1, 1]


@pytest.mark.parametrize("window", [HOUR, Window("fixed", 3600)], ids=["rolling", "fixed"])
async def test_cost_consumes_several_units(counters: Counters, window: Window) -> None:
    limit = cap("sms-segments", 5, window)
    results = await counters.hit([one(limit, cost=2), one(limit, cost=2), one(limit, cost=2), one(limit, cost=1)])
    assert results == [
        HitResult(True, (2,)),
        HitResult(True, (4,)),
        HitResult(False, (4,), 0),
        HitResult(True, (5,)),
    ]
    assert await counters.peek([limit]) == [5]
    assert await counters.hit([one(cap("big", 5, window), cost=6)]) == [HitResult(False, (0,), 0)]


async def test_a_later_hit_in_a_batch_sees_the_earlier_ones(counters: Counters) -> None:
    shared, other = cap("shared", 2), cap("other", 10)
    results = await counters.hit([one(shared), one(shared, other), one(shared, other), one(other)])
    assert results == [
        HitResult(True, (1,)),
        HitResult(True, (2, 1)),
        HitResult(False, (2, 1), 0),  # `other` was not incremented by the refused hit ...
        HitResult(True, (2,)),  # ... so the next one counts 2, not 3
    ]
    assert await counters.peek([shared, other]) == [2, 2]
    assert await counters.hit([]) == []


async def test_dry_run_changes_nothing_but_reports_the_batch(counters: Counters) -> None:
    rolling, fixed = cap("dry-r", 2), cap("dry-f", 2, Window("fixed", 3600))
    await counters.hit([one(rolling)])
    dry = await counters.hit([one(rolling, fixed), one(rolling, fixed), one(fixed)], dry_run=True)
    assert dry == [HitResult(True, (2, 1)), HitResult(False, (2, 1), 0), HitResult(True, (2,))]
    assert await counters.peek([rolling, fixed]) == [1, 0]

    real = await counters.hit([one(rolling, fixed), one(rolling, fixed), one(fixed)])
    assert real == dry


async def test_peek_reports_current_counts(counters: Counters) -> None:
    a, b, never = cap("peek-a", 10), cap("peek-b", 10, Window("fixed", 60)), cap("peek-never", 1)
    await counters.hit([one(a), one(a, b), one(a, cost=3)])
    assert await counters.peek([a, b, never]) == [5, 1, 0]
    assert await counters.peek([]) == []
    # peek consumes nothing, however often it is called
    assert await counters.peek([a, b, never]) == [5, 1, 0]


# -- windows --------------------------------------------------------------------------------------------


async def test_rolling_window_forgets_each_entry_when_it_leaves(counters: Counters, clock: Clock) -> None:
    limit = cap("roll", 2, Window("rolling", 2))
    assert (await counters.hit([one(limit)]))[0].allowed  # t = 0
    await clock.advance(1.0)
    assert (await counters.hit([one(limit)]))[0] == HitResult(True, (2,))  # t = 1
    assert (await counters.hit([one(limit)]))[0] == HitResult(False, (2,), 0)
    await clock.advance(1.3)
    # t = 2.3: the first entry has left, the second (t = 1) has not. A bucketed window would forget both.
    assert await counters.peek([limit]) == [1]
    assert (await counters.hit([one(limit)]))[0] == HitResult(True, (2,))
    assert (await counters.hit([one(limit)]))[0] == HitResult(False, (2,), 0)


async def test_fixed_window_starts_fresh_at_each_bucket_boundary(counters: Counters, clock: Clock) -> None:
    now = await clock.now()
    # An hour-long bucket that ends in 0.5 s: only honouring `start` (not epoch-aligned hours) explains a reset.
    limit = cap("fixed", 2, Window("fixed", 3600, start=now - 3600 + 0.5))
    assert [r.allowed for r in await counters.hit([one(limit), one(limit), one(limit)])] == [True, True, False]
    await clock.advance(0.8)
    assert await counters.peek([limit]) == [0]
    assert await counters.hit([one(limit)]) == [HitResult(True, (1,))]

    # A bucket that began just now holds its count for its whole length, unlike a rolling window's entries.
    later = cap("fixed-long", 1, Window("fixed", 2, start=(await clock.now()) - 0.1))
    assert (await counters.hit([one(later)]))[0].allowed
    await clock.advance(1.0)
    assert await counters.hit([one(later)]) == [HitResult(False, (1,), 0)]


async def test_a_new_anchor_each_day_still_gets_a_fresh_bucket(counters: Counters, clock: Clock) -> None:
    """Callers that pass today's local midnight every day land on bucket 0 each time; it must not carry over."""
    now = await clock.now()
    today = cap("daily", 1, Window("fixed", 3600, start=now - 3600 + 0.5))
    assert (await counters.hit([one(today)]))[0].allowed
    await clock.advance(0.8)
    tomorrow = cap("daily", 1, Window("fixed", 3600, start=today.window.anchor + 3600))
    assert tomorrow.window.bucket(await clock.now())[0] == today.window.bucket(now)[0] == 0
    assert await counters.hit([one(tomorrow)]) == [HitResult(True, (1,))]


# -- dedup ------------------------------------------------------------------------------------------------


async def test_seen_marks_once_per_ttl(counters: Counters, clock: Clock) -> None:
    assert await counters.seen(["sms:u1:h1", "sms:u1:h2"], 2) == [False, False]
    assert await counters.seen(["sms:u1:h1", "sms:u2:h1"], 2) == [True, False]
    assert await counters.seen(["dup", "dup", "dup"], 2) == [False, True, True]
    assert await counters.seen([], 2) == []

    assert await counters.seen(["dry", "dry", "sms:u1:h1"], 2, dry_run=True) == [False, True, True]
    assert await counters.seen(["dry"], 2) == [False]  # the dry run marked nothing

    await clock.advance(1.0)
    assert await counters.seen(["sms:u1:h1"], 2) == [True]  # a sighting does not extend the mark ...
    await clock.advance(1.3)
    assert await counters.seen(["sms:u1:h1"], 2) == [False]  # ... so it expires 2 s after the first send
    assert await counters.seen(["sms:u1:h1"], 2) == [True]


async def test_seen_and_caps_do_not_share_keys(counters: Counters) -> None:
    assert await counters.seen(["same"], 60) == [False]
    assert await counters.hit([one(cap("same", 1), cap("same", 1, Window("fixed", 60)))]) == [HitResult(True, (1, 1))]
    assert await counters.seen(["same"], 60) == [True]


@pytest.mark.parametrize("ttl", [0, -1, 1.5, True])
async def test_seen_refuses_a_bad_ttl(counters: Counters, ttl: Any) -> None:
    with pytest.raises(ValueError):
        await counters.seen(["k"], ttl)


# -- concurrency ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", [HOUR, Window("fixed", 3600)], ids=["rolling", "fixed"])
async def test_concurrent_hits_never_exceed_the_cap(counters: Counters, window: Window) -> None:
    limit = cap("race", 100, window)
    backends: list[Counters] = [counters]
    if isinstance(counters, RedisCounters):
        # A second client with its own connection pool: the cap must hold across connections, not just tasks.
        second = RedisCounters(Redis.from_url(REDIS_URL), prefix=PREFIX, owns_client=True)
        backends.append(second)

    async def worker(backend: Counters) -> int:
        allowed = 0
        for _ in range(50):
            allowed += (await backend.hit([one(limit)]))[0].allowed
        return allowed

    try:
        totals = await asyncio.gather(*(worker(backends[i % len(backends)]) for i in range(8)))
    finally:
        for extra in backends[1:]:
            await extra.close()
    assert sum(totals) == 100
    assert await counters.peek([limit]) == [100]


# -- backend specifics ------------------------------------------------------------------------------------


async def test_redis_answers_a_batch_in_one_round_trip(redis_client: Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    counters = RedisCounters(redis_client, prefix=PREFIX)
    await counters.hit([one(cap("warm", 1))])  # first use may load the script

    commands: list[str] = []
    real = redis_client.execute_command

    async def spy(*args: Any, **options: Any) -> Any:
        commands.append(str(args[0]))
        return await real(*args, **options)

    monkeypatch.setattr(redis_client, "execute_command", spy)
    hits = [one(cap(f"user:{i % 20}", 5), cap("global", 150, Window("fixed", 60))) for i in range(200)]
    results = await counters.hit(hits)
    assert commands == ["EVALSHA"]
    assert sum(r.allowed for r in results) == 100  # 20 users x 5: the per-user caps bind before the global one
    assert await counters.peek([cap("global", 150, Window("fixed", 60))]) == [100]
    assert commands == ["EVALSHA", "EVALSHA"]


async def test_redis_recovers_when_the_script_cache_is_flushed(redis_client: Redis) -> None:
    counters = RedisCounters(redis_client, prefix=PREFIX)
    await counters.hit([one(cap("k", 5))])
    await redis_client.script_flush()
    assert await counters.hit([one(cap("k", 5))]) == [HitResult(True, (2,))]


async def test_redis_keys_are_prefixed_and_all_expire(redis_client: Redis) -> None:
    counters = RedisCounters(redis_client, prefix=PREFIX)
    await counters.hit([one(cap("r", 5, Window("rolling", 30)), cap("f", 5, Window("fixed", 30)))])
    await counters.seen(["s"], 30)
    keys = sorted(key.decode() for key in await redis_client.keys("*"))
    assert [key.split(":")[:2] for key in keys] == [["clarion-test", "f"], ["clarion-test", "r"], ["clarion-test", "s"]]
    for key in keys:
        assert 0 < await redis_client.pttl(key) <= 30_000, key


async def test_redis_uses_the_server_clock_not_the_client_clock(
    redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client whose clock is a day off must still count in the same window as everyone else."""
    counters = RedisCounters(redis_client, prefix=PREFIX)
    limit = cap("skew", 2, Window("rolling", 60))
    await counters.hit([one(limit)])
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 86_400)
    assert await counters.hit([one(limit), one(limit)]) == [HitResult(True, (2,)), HitResult(False, (2,), 0)]


async def test_memory_drops_expired_keys(fake_clock: FakeClock) -> None:
    counters = MemoryCounters(clock=fake_clock, sweep_interval=10)
    await counters.hit(
        [one(cap(f"u{i}", 5, Window("rolling", 5)), cap(f"d{i}", 5, Window("fixed", 5))) for i in range(500)]
    )
    await counters.seen([f"s{i}" for i in range(500)], 5)
    assert counters.entry_count() == 1500

    fake_clock.now += 11  # past every window and the sweep interval; the next call sweeps
    assert await counters.peek([cap("u0", 5, Window("rolling", 5))]) == [0]
    assert counters.entry_count() == 0


async def test_memory_rolling_keys_are_invisible_to_the_garbage_collector() -> None:
    # A campaign leaves a cap's key for every user: were each an object, every full collection would walk them
    # all, pausing the event loop (about 100 ms per million keys).
    clock = FakeClock()
    memory = MemoryCounters(clock=clock)
    hits = [one(cap(f"u{i}:day", 5, Window("rolling", 86400)), cap(f"u{i}:hour", 2)) for i in range(1000)]
    await memory.hit(hits)
    clock.now += 1
    await memory.hit(hits[:10])  # a second entry in some logs
    gc.collect()
    logs = list(memory._rolling.values())
    assert len(logs) == 2000
    assert not any(gc.is_tracked(log) for log in logs)
    assert not gc.is_tracked(memory._rolling)
    assert await memory.peek([cap("u0:hour", 2), cap("u999:hour", 2)]) == [2, 1]


async def test_memory_rolling_log_keeps_time_order_when_the_clock_steps_back() -> None:
    clock = FakeClock()
    memory = MemoryCounters(clock=clock)
    window = Window("rolling", 10)
    await memory.hit([one(cap("k", 9, window))])  # at t
    clock.now -= 5
    await memory.hit([one(cap("k", 9, window), cost=2)])  # at t - 5, stamped before the first
    clock.now += 5 + 6  # t + 6: the entry at t - 5 has left the window, the one at t has not
    assert await memory.peek([cap("k", 9, window)]) == [1]
    clock.now += 4  # t + 10: both gone (an entry stamped exactly a window ago has left it)
    assert await memory.peek([cap("k", 9, window)]) == [0]
