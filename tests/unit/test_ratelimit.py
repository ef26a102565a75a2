"""The token-bucket arithmetic of provider rate limits (``domain.ratelimit``): burst, refill, taking from several
buckets at once, and when the deliveries left over get their turn."""

from __future__ import annotations

import pytest

from clarion.domain import ratelimit

SECOND = ratelimit.Bucket.of("second", 20, 1.0)
MINUTE = ratelimit.Bucket.of("minute", 600, 60.0)


def test_a_full_bucket_holds_a_tenth_of_its_periods_quota_and_at_least_one_token() -> None:
    assert (SECOND.rate, SECOND.capacity) == (20.0, 2.0)
    assert (MINUTE.rate, MINUTE.capacity) == (10.0, 60.0)
    assert ratelimit.Bucket.of("second", 3, 1.0).capacity == 1.0
    assert ratelimit.Bucket.of("second", 0.5, 1.0).capacity == 1.0


@pytest.mark.parametrize("limit", [0, -1, float("inf"), float("nan")])
def test_a_rate_limit_that_is_not_a_positive_number_is_refused(limit: float) -> None:
    with pytest.raises(ValueError, match="positive number"):
        ratelimit.Bucket.of("second", limit, 1.0)


def test_a_rate_names_its_buckets_and_describes_itself() -> None:
    assert ratelimit.UNLIMITED.unlimited and ratelimit.UNLIMITED.buckets() == ()
    assert ratelimit.UNLIMITED.describe() == "unlimited"
    both = ratelimit.Rate(per_second=20, per_minute=600)
    assert [b.name for b in both.buckets()] == ["second", "minute"]
    assert both.describe() == "20/s and 600/min"
    assert ratelimit.Rate(per_minute=30).buckets() == (ratelimit.Bucket("minute", 0.5, 3.0),)


def test_a_bucket_never_used_is_full_and_refills_at_its_rate_up_to_its_capacity() -> None:
    assert ratelimit.refill(SECOND, None, 100.0) == 2.0
    assert ratelimit.refill(SECOND, ratelimit.Level(0.0, 100.0), 100.025) == pytest.approx(0.5)
    assert ratelimit.refill(SECOND, ratelimit.Level(0.0, 100.0), 200.0) == 2.0


def test_a_clock_that_steps_back_adds_no_tokens() -> None:
    assert ratelimit.refill(SECOND, ratelimit.Level(0.25, 100.0), 99.0) == 0.25


def test_a_take_gets_as_many_as_the_emptiest_bucket_holds_whole_tokens_for() -> None:
    grant = ratelimit.take((SECOND, MINUTE), (2.0, 1.5), 5)
    assert grant.granted == 1
    assert grant.tokens == (1.0, 0.5)
    assert ratelimit.take((SECOND,), (2.0,), 1) == ratelimit.Grant(1, (1.0,))
    assert ratelimit.take((SECOND,), (0.99,), 3) == ratelimit.Grant(0, (0.99,))
    assert ratelimit.take((), (), 7) == ratelimit.Grant(7, ())


def test_a_take_of_a_negative_count_is_refused() -> None:
    with pytest.raises(ValueError):
        ratelimit.take((SECOND,), (2.0,), -1)


def test_the_deliveries_left_over_get_their_turns_evenly_spaced_at_the_rate() -> None:
    waits = ratelimit.turns((SECOND,), (0.0,), 4)
    assert waits == pytest.approx([0.05, 0.10, 0.15, 0.20])
    # half a token is there already: the first turn is half a token's time away
    assert ratelimit.turns((SECOND,), (0.5,), 2) == pytest.approx([0.025, 0.075])


def test_with_two_buckets_the_slower_one_sets_the_turns() -> None:
    slow_minute = ratelimit.Bucket.of("minute", 60, 60.0)  # 1 a second, behind 20 a second
    assert ratelimit.turns((SECOND, slow_minute), (0.0, 0.0), 3) == pytest.approx([1.0, 2.0, 3.0])


def test_a_backlog_taken_turn_by_turn_never_exceeds_the_limit_plus_the_burst_in_any_second() -> None:
    """The property the README promises: a simulated sender that sends whenever a take grants, taking as soon as
    it is told a token is there, sends at most limit + burst in any one-second stretch."""
    buckets = ratelimit.Rate(per_second=20).buckets()
    level: dict[str, ratelimit.Level] = {}
    now, sent = 0.0, []
    while len(sent) < 200:
        held = [ratelimit.refill(b, level.get(b.name), now) for b in buckets]
        grant = ratelimit.take(buckets, held, 50)
        for bucket, tokens in zip(buckets, grant.tokens, strict=True):
            level[bucket.name] = ratelimit.Level(tokens, now)
        sent += [now] * grant.granted
        now += ratelimit.turns(buckets, grant.tokens, 1)[0]
    most = max(sum(1 for t in sent if start <= t < start + 1.0) for start in sent)
    assert most <= 20 + 2
    assert sent[-1] == pytest.approx((200 - 2) / 20, abs=0.01)  # the backlog drains at the rate
