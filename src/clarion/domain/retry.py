"""When to try a failed delivery again: a pure policy returning a decision the dispatcher applies."""

from __future__ import annotations

import random
from dataclasses import dataclass

from clarion.domain import errors


@dataclass(frozen=True, slots=True)
class RetryDecision:
    retry: bool
    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 6
    base_seconds: float = 2.0
    max_seconds: float = 600.0

    def decide(self, attempts: int, error: Exception, rand: random.Random | None = None) -> RetryDecision:
        """``attempts`` counts the attempts made so far, including the one that just failed.

        Transient errors back off exponentially with "equal jitter" (half fixed, half random, so retries of
        a burst spread out but never come sooner than half the nominal delay); a vendor's Retry-After wins
        when it asks for longer. Permanent errors, and anything past ``max_attempts``, stop here.
        """
        if isinstance(error, errors.PermanentSendError) or attempts >= self.max_attempts:
            return RetryDecision(retry=False)
        nominal = min(self.max_seconds, self.base_seconds * 2 ** (attempts - 1))
        delay = nominal / 2 + (rand or random).uniform(0, nominal / 2)
        retry_after = getattr(error, "retry_after", None)
        if retry_after:
            delay = max(delay, min(float(retry_after), self.max_seconds))
        return RetryDecision(retry=True, delay=delay)
