"""Failed logins, throttled per account and per client address: after ``limit`` failures within ``window``
seconds the account (or the address) is refused until the oldest of them leaves the window, whatever password
comes next. Kept in the process: a console is served by one process in the embedded mode, and an attacker
spreading over N processes gets N times the budget, still far too few guesses for an argon2-hashed password."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable


class Throttle:
    def __init__(
        self,
        *,
        per_account: int = 5,
        per_address: int = 20,
        window: float = 15 * 60,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = {"account": per_account, "address": per_address}
        self.window = window
        self.clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        seen = self._failures.get(key)
        if seen is None:
            return deque()
        while seen and seen[0] <= now - self.window:
            seen.popleft()
        if not seen:
            del self._failures[key]
        return seen

    def _keys(self, account: str, address: str) -> Iterable[tuple[str, str]]:
        return (("account", account.lower()), ("address", address))

    def retry_after(self, account: str, address: str) -> float:
        """Seconds until a login for ``account`` from ``address`` is heard again; 0 when it is now."""
        now = self.clock()
        wait = 0.0
        for key in self._keys(account, address):
            seen = self._recent(key, now)
            if len(seen) >= self.limits[key[0]]:
                wait = max(wait, seen[0] + self.window - now)
        return wait

    def failed(self, account: str, address: str) -> None:
        now = self.clock()
        if len(self._failures) > 100_000:  # a flood of made-up names: forget the oldest half rather than grow
            for key in list(self._failures)[:50_000]:
                del self._failures[key]
        for key in self._keys(account, address):
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, account: str) -> None:
        """The account's failures are forgotten (the address's are not: it may be guessing other accounts)."""
        self._failures.pop(("account", account.lower()), None)
