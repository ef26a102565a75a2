"""When to try a failed delivery again: a pure policy returning a decision the dispatcher applies.

The default schedule (``Settings``: 10 attempts, base 10 s, at most 20 min apart) waits, after attempts 1 to 9,
a nominal 10, 20, 40, 80, 160, 320, 640, 1200 and 1200 s; with equal jitter each wait is between half its nominal
and all of it, so the nine retries span 30.6 to 61.2 minutes (``RetryPolicy.span``): an outage of the only
provider of a channel shorter than half an hour loses nothing. A template's ttl bounds the schedule: a retry that
would come after the delivery's ``expires_at`` is not made, and the delivery expires instead.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from clarion.domain import errors


@dataclass(frozen=True, slots=True)
class RetryDecision:
    retry: bool
    delay: float = 0.0
    #: not retried because the next attempt would come after the delivery's ttl: it expires now
    expired: bool = False


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 10
    base_seconds: float = 10.0
    max_seconds: float = 1200.0

    def decide(
        self,
        attempts: int,
        error: Exception,
        rand: random.Random | None = None,
        *,
        remaining: float | None = None,
    ) -> RetryDecision:
        """``attempts`` counts the attempts made so far, including the one that just failed; ``remaining`` is
        how many seconds the delivery has left before its ttl runs out (None: it has no ttl).

        Transient errors back off exponentially with "equal jitter" (half fixed, half random, so retries of
        a burst spread out but never come sooner than half the nominal delay); a vendor's Retry-After wins
        when it asks for longer. Permanent errors, and anything past ``max_attempts``, stop here; so does a
        retry that would come after the ttl (``expired``): it would be sent late.
        """
        if isinstance(error, errors.PermanentSendError) or attempts >= self.max_attempts:
            return RetryDecision(retry=False)
        nominal = self.nominal(attempts)
        delay = nominal / 2 + (rand or random).uniform(0, nominal / 2)
        retry_after = getattr(error, "retry_after", None)
        if retry_after:
            delay = max(delay, min(float(retry_after), self.max_seconds))
        if remaining is not None and delay >= remaining:
            return RetryDecision(retry=False, delay=delay, expired=True)
        return RetryDecision(retry=True, delay=delay)

    def nominal(self, attempts: int) -> float:
        """The nominal wait after attempt number ``attempts`` (the actual one is between half of it and all of it)."""
        return min(self.max_seconds, self.base_seconds * 2 ** (attempts - 1))

    def span(self) -> tuple[float, float]:
        """The shortest and the longest time from the first attempt to the last, without Retry-After: how long
        an outage the schedule rides out at least, and at most."""
        longest = sum(self.nominal(n) for n in range(1, self.max_attempts))
        return longest / 2, longest
