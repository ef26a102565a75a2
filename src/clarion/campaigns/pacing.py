"""A campaign's send rate: a token bucket over messages written to the outbox.

The rate limits how fast a run hands messages to the outbox — so a campaign never floods providers (or the
support line) — not how fast the dispatcher sends them; a batch waits until the bucket holds its size. The
clock and the sleep are injected, so tests pace without waiting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class Bucket:
    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)  # at most a second's worth at once
        self.clock = clock
        self.sleep = sleep
        self.tokens = 0.0  # a run starts empty: its first batch waits like every other
        self.at = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def wait_for(self, count: float) -> float:
        """Seconds until ``count`` tokens are there (0: now)."""
        self._refill()
        return max(0.0, (count - self.tokens) / self.rate)

    async def take(self, count: int) -> None:
        """Wait until ``count`` messages may go, and spend them (a count above the burst waits for the burst,
        then leaves the bucket in debt: the next batch waits for it)."""
        need = min(float(count), self.burst)
        while (delay := self.wait_for(need)) > 0:
            await self.sleep(delay)
        self.tokens -= count
