"""Circuit breakers and health windows kept in Redis (``RedisCounters`` as ``Breakers``): two clients stand for
two processes. A breaker one of them opens is open for the other, the half-open probe is let through once
across both, the health window is the one both write, and the same outcomes make the same transitions as the
in-process backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from clarion.counters.memory import MemoryCounters
from clarion.counters.redis import RedisCounters
from clarion.domain import breaker
from tests.conftest import REDIS_URL, connect_redis, disconnect_redis

PREFIX = "clarion-test-br:"
FAST = breaker.Thresholds(consecutive=3, error_rate=0.5, min_attempts=6, window=60, cool_down=5, probe_timeout=5)
T0 = 1_700_000_000.0


def fail(at: float, reason: str = "http_503: HTTP 503") -> breaker.Outcome:
    return breaker.Outcome(at, "transient", 0.02, reason)


def ok(at: float) -> breaker.Outcome:
    return breaker.Outcome(at, "ok", 0.01)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[RedisCounters, RedisCounters]]:
    first = await connect_redis()
    second = Redis.from_url(REDIS_URL)
    a = RedisCounters(first, prefix=PREFIX, thresholds=lambda _name: FAST)
    b = RedisCounters(second, prefix=PREFIX, thresholds=lambda _name: FAST)
    yield a, b
    await second.aclose()
    await disconnect_redis(first)


async def test_a_breaker_opened_by_one_process_is_open_for_the_other(pair: tuple[RedisCounters, RedisCounters]) -> None:
    a, b = pair
    assert a.shared and b.shared
    assert await b.admit(["sms-a", "sms-b"], T0) == {}
    moved = await a.record("sms-a", [fail(T0), fail(T0 + 0.1), fail(T0 + 0.2)])
    assert [(t.before, t.after) for t in moved] == [("closed", "open")]
    assert moved[0].reason == "3 transient failures in a row: http_503: HTTP 503"
    refused = await b.admit(["sms-a", "sms-b"], T0 + 1)
    assert refused == {"sms-a": "breaker open: 3 transient failures in a row: http_503: HTTP 503"}
    view = await b.health("sms-a", T0 + 1)
    assert view["breaker"] == {"state": "open", "since": T0 + 0.2, "reason": moved[0].reason}
    assert (view["attempts"], view["transient"]) == (3, 3)


async def test_the_half_open_probe_is_let_through_once_across_processes(
    pair: tuple[RedisCounters, RedisCounters],
) -> None:
    a, b = pair
    await a.record("sms-a", [fail(T0), fail(T0), fail(T0)])
    after = T0 + FAST.cool_down
    answers = await asyncio.gather(*(c.admit(["sms-a"], after) for c in (a, b, a, b)))
    granted = [answer for answer in answers if "sms-a" not in answer]
    assert len(granted) == 1  # one of the four batches carries the probe
    assert all(answer.get("sms-a", "") == "breaker half-open: a probe is in flight" for answer in answers if answer)
    moved = await b.record("sms-a", [ok(after + 0.1)])  # the probe, sent by whichever process got it, succeeded
    assert [(t.before, t.after, t.reason) for t in moved] == [("half_open", "closed", "half-open probe succeeded")]
    assert await a.admit(["sms-a"], after + 0.2) == {}


async def test_a_probe_whose_process_never_reported_lets_the_next_one_through(
    pair: tuple[RedisCounters, RedisCounters],
) -> None:
    a, b = pair
    await a.record("sms-a", [fail(T0), fail(T0), fail(T0)])
    assert await a.admit(["sms-a"], T0 + 5) == {}  # a took the probe, then died
    assert "sms-a" in await b.admit(["sms-a"], T0 + 6)
    assert await b.admit(["sms-a"], T0 + 5 + FAST.probe_timeout) == {}


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_a_probe_granted_to_a_batch_that_routed_elsewhere_is_handed_back_for_the_next_batch(
    pair: tuple[RedisCounters, RedisCounters], backend: str
) -> None:
    a, b = pair
    memory = MemoryCounters(thresholds=lambda _name: FAST)
    first, second = (memory, memory) if backend == "memory" else (a, b)
    await first.record("sms-a", [fail(T0), fail(T0), fail(T0)])
    probes: set[str] = set()
    assert await first.admit(["sms-a"], T0 + 5, probes) == {}
    assert probes == {"sms-a"}
    assert "sms-a" in await second.admit(["sms-a"], T0 + 6)  # in flight
    await first.release(["sms-a"], T0 + 5)  # no delivery of that batch chose it
    again: set[str] = set()
    assert await second.admit(["sms-a"], T0 + 6, again) == {}
    assert again == {"sms-a"}
    await first.release(["sms-a"], T0 + 5)  # too late: the probe is the other batch's now
    assert "sms-a" in await first.admit(["sms-a"], T0 + 7)


async def test_the_health_window_is_the_one_both_processes_write(pair: tuple[RedisCounters, RedisCounters]) -> None:
    a, b = pair
    await a.record("sms-a", [ok(T0 + i) for i in range(4)])
    await b.record("sms-a", [ok(T0 + 4), breaker.Outcome(T0 + 5, "permanent", 0.5, "invalid number")])
    await b.record("sms-a", [fail(T0 + 6, "timeout")])
    for counters in (a, b):
        view = await counters.health("sms-a", T0 + 7)
        assert (view["attempts"], view["succeeded"], view["transient"], view["permanent"]) == (7, 5, 1, 1)
        assert view["success_rate"] == pytest.approx(5 / 7)
        assert (view["latency_p50"], view["latency_p99"]) == (0.01, 0.5)
        assert [e["reason"] for e in view["last_errors"]] == ["invalid number", "timeout"]  # type: ignore[attr-defined]
    assert (await a.health("sms-a", T0 + 70))["attempts"] == 0  # the window is the last 60 s


async def test_concurrent_records_from_two_processes_lose_no_outcome(
    pair: tuple[RedisCounters, RedisCounters],
) -> None:
    a, b = pair
    failures = [fail(T0 + i / 100) for i in range(2)]
    await asyncio.gather(*(c.record("sms-a", failures) for c in (a, b, a, b) for _ in range(5)))
    view = await a.health("sms-a", T0 + 1)
    assert view["attempts"] == 40
    assert view["breaker"]["state"] == "open"  # type: ignore[index]


@pytest.mark.parametrize(
    "outcomes",
    [
        [fail(T0), ok(T0 + 1), fail(T0 + 2), fail(T0 + 3), fail(T0 + 4)],
        [ok(T0), fail(T0 + 1), fail(T0 + 2), ok(T0 + 3), fail(T0 + 4), fail(T0 + 5)],  # 4 of 6, never 3 in a row
        [breaker.Outcome(T0, "misconfigured", 0.1, "authentication refused"), ok(T0 + 1)],
    ],
    ids=["in-a-row", "error-rate", "misconfigured"],
)
async def test_redis_and_memory_breakers_make_the_same_transitions(
    pair: tuple[RedisCounters, RedisCounters], outcomes: list[breaker.Outcome]
) -> None:
    a, _ = pair
    memory = MemoryCounters(thresholds=lambda _name: FAST)
    seen: dict[str, list[tuple[str, str, str]]] = {"memory": [], "redis": []}
    for outcome in outcomes:  # one outcome per record: the hot path and the transactional path both run
        for label, counters in (("memory", memory), ("redis", a)):
            moved = await counters.record("sms-a", [outcome])  # type: ignore[attr-defined]
            seen[label] += [(t.before, t.after, t.reason) for t in moved]
    assert seen["redis"] == seen["memory"]
    assert seen["redis"]  # every case moves the breaker
    assert (await a.health("sms-a", T0 + 20)) == (await memory.health("sms-a", T0 + 20))
