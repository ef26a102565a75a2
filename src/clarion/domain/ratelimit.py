"""A provider account's rate limit as token buckets, and the arithmetic of taking from them — pure, so that the
memory backend and the Redis script (``counters.redis``) answer alike and the math is tested once.

A limit of ``per_second`` and/or ``per_minute`` deliveries is one bucket per period: it refills at
``limit / period`` tokens a second and holds at most ``burst`` tokens, a tenth of the period's quota (at least
one). A delivery takes one token; one that finds none waits for its turn (the dispatch stage puts it back in the
queue with ``run_at`` at the moment its token will be there) — it is never failed and spends no attempt.

So in any stretch of one period at most ``limit + burst`` deliveries go out (20/s: at most 22 in any second;
600/min: at most 660 in any minute), and a steady backlog goes out at ``limit`` a period, evenly spaced."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: the share of a period's quota a full bucket holds: the burst an idle account may send at once
BURST_SHARE = 0.1
#: a thousandth of a token counts as a whole one: unix times near 1.7e9 have ~0.2 µs steps, so a refill that should
#: come out at exactly one token can come out a hair short (the Redis script uses the same 0.001)
EPSILON = 0.001


@dataclass(frozen=True, slots=True)
class Bucket:
    """One period of a limit: ``name`` ("second", "minute") keys its level, ``rate`` is tokens a second."""

    name: str
    rate: float
    capacity: float

    @classmethod
    def of(cls, name: str, limit: float, period: float) -> Bucket:
        if not (limit > 0 and math.isfinite(limit)):
            raise ValueError(f"a rate limit must be a positive number, not {limit!r}")
        return cls(name, limit / period, max(1.0, math.floor(limit * BURST_SHARE)))


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``per_second`` and/or ``per_minute`` deliveries (None: no limit on that period)."""

    per_second: float | None = None
    per_minute: float | None = None

    @property
    def unlimited(self) -> bool:
        return self.per_second is None and self.per_minute is None

    def buckets(self) -> tuple[Bucket, ...]:
        found = []
        if self.per_second is not None:
            found.append(Bucket.of("second", self.per_second, 1.0))
        if self.per_minute is not None:
            found.append(Bucket.of("minute", self.per_minute, 60.0))
        return tuple(found)

    def describe(self) -> str:
        parts = []
        if self.per_second is not None:
            parts.append(f"{self.per_second:g}/s")
        if self.per_minute is not None:
            parts.append(f"{self.per_minute:g}/min")
        return " and ".join(parts) or "unlimited"


UNLIMITED = Rate()


@dataclass(frozen=True, slots=True)
class Level:
    """A bucket's tokens as of ``at`` (unix time)."""

    tokens: float
    at: float


def refill(bucket: Bucket, level: Level | None, now: float) -> float:
    """The tokens ``bucket`` holds at ``now``: full when never used; a clock that steps back adds nothing."""
    if level is None:
        return bucket.capacity
    return min(bucket.capacity, level.tokens + max(0.0, now - level.at) * bucket.rate)


@dataclass(frozen=True, slots=True)
class Grant:
    """What a take got: ``granted`` deliveries may go now; ``tokens`` is each bucket's level after the take."""

    granted: int
    tokens: tuple[float, ...]


def take(buckets: Sequence[Bucket], tokens: Sequence[float], wanted: int) -> Grant:
    """Take up to ``wanted`` tokens from every bucket at once (the refilled ``tokens``): as many as the emptiest
    bucket holds whole tokens for."""
    if wanted < 0:
        raise ValueError(f"wanted must be ≥ 0, not {wanted!r}")
    granted = wanted
    for held in tokens:
        granted = min(granted, max(0, math.floor(held + EPSILON)))
    return Grant(granted, tuple(held - granted for held in tokens))


def turns(buckets: Sequence[Bucket], tokens: Sequence[float], count: int) -> list[float]:
    """Seconds from now until each of ``count`` more deliveries has its token, taken one after another from
    buckets left at ``tokens``: the k-th needs k+1 tokens more than are held, in every bucket."""
    waits = []
    for k in range(count):
        wait = 0.0
        for bucket, held in zip(buckets, tokens, strict=True):
            wait = max(wait, (k + 1 - held) / bucket.rate)
        waits.append(wait)
    return waits
