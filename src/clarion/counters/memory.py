"""In-process counters for embedded mode (one Clarion process).

Every method does its work without awaiting, so under asyncio a call is atomic with respect to every other
task: no lock is needed and no two tasks can both take the last unit of a cap. (The object is not meant to be
shared between threads.)

Rolling windows keep a sorted log of ``(time, cost)`` per key (``Log``), pruned on access, so the count is
exact like the Redis sorted set. Fixed windows keep one ``(count, ends_at)`` per bucket key. Memory stays
bounded: entries that have expired are dropped when their key is touched, and a sweep over all keys runs at most
once per ``sweep_interval`` seconds of clock time to drop keys nobody touches any more.

The clock is injectable (``clock=``) so tests can move time without sleeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from clarion.counters.base import Breakers, Counters, Hit, HitResult, Limit, RateLimits, check_ttl
from clarion.domain import breaker, ratelimit

log = logging.getLogger(__name__)


#: A rolling key's log: one flat tuple ``(seconds, total, time, cost, time, cost, …)``, its entries sorted by
#: time, replaced whole when it changes. A campaign leaves a cap's key for every user: as tuples of numbers they
#: take about 180 bytes a key, its slot in the dict included, where an object and a list of pairs took 284 (the
#: 10^6-user campaign benchmark's peak RSS, two caps: 1,227 MB against 1,460), and the cyclic garbage
#: collector leaves them out, where a full collection walked every key's object and list (about 100 ms per
#: million keys, the event loop stopped).
Log = tuple[float, ...]


def _pruned(log: Log, now: float, seconds: int) -> Log:
    """``log`` without the entries that have left a window of ``seconds`` (its length, which may have changed,
    kept); the same tuple when nothing changes."""
    # Same boundary as the Redis script: an entry stamped exactly `seconds` ago has left the window.
    edge, n, i = now - seconds, len(log), 2
    gone: float = 0
    while i < n and log[i] <= edge:
        gone += log[i + 1]
        i += 2
    if i == 2 and log[0] == seconds:
        return log
    return (seconds, log[1] - gone, *log[i:])


def _added(log: Log, now: float, cost: int) -> Log:
    # in time order rather than appended: a clock that steps back must not leave old entries behind newer ones
    i = len(log)
    while i > 2 and log[i - 2] > now:
        i -= 2
    return (log[0], log[1] + cost, *log[2:i], now, cost, *log[i:])


def _total(log: Log) -> int:
    return int(log[1])


class MemoryCounters:
    """The ``Counters`` backend for a single process (also its breakers and rate limits: ``shared`` is False)."""

    shared = False

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        sweep_interval: float = 60.0,
        thresholds: Callable[[str], breaker.Thresholds] | None = None,
    ) -> None:
        self._clock = clock
        #: each account's breaker thresholds (the defaults unless wired otherwise)
        self.thresholds = thresholds or (lambda _account: breaker.DEFAULT)
        self._breakers: dict[str, breaker.State] = {}
        self._levels: dict[tuple[str, str], ratelimit.Level] = {}  # (account, bucket name) -> its level
        self._sweep_interval = sweep_interval
        self._next_sweep = clock() + sweep_interval
        self._rolling: dict[str, Log] = {}
        self._fixed: dict[str, tuple[int, float]] = {}  # "key:bucket" -> (count, ends_at)
        self._seen: dict[str, float] = {}  # key -> expires_at

    # -- the interface -----------------------------------------------------------------------------------

    async def hit(self, hits: Sequence[Hit], *, dry_run: bool = False) -> list[HitResult]:
        now = self._now()
        rolling, fixed = self._rolling, self._fixed
        # A dry run applies nothing, so later hits of the call see the earlier ones through this overlay.
        pending: dict[tuple[str, str], int] = {}
        # The fixed bucket holding `now`, per window: the windows of a day and zone are shared by many hits.
        buckets: dict[int, tuple[int, float]] = {}
        results: list[HitResult] = []
        for hit in hits:
            cost = hit.cost
            names: list[str] = []  # per limit: its rolling key, or its fixed bucket's key
            ends: list[float | None] = []  # per limit: when its fixed bucket ends (None: rolling)
            counts: list[int] = []
            blocked: int | None = None
            for i, limit in enumerate(hit.limits):
                window = limit.window
                if window.kind == "rolling":
                    name, ends_at = limit.key, None
                    log = rolling.get(name)
                    if log is None:
                        count = 0
                    else:
                        pruned = _pruned(log, now, window.seconds)
                        if pruned is not log:
                            rolling[name] = pruned
                        count = _total(pruned)
                else:
                    bucket = buckets.get(id(window))
                    if bucket is None:
                        bucket = buckets[id(window)] = window.bucket(now)
                    name, ends_at = f"{limit.key}:{bucket[0]}", bucket[1]
                    held = fixed.get(name)
                    count = held[0] if held is not None and held[1] > now else 0
                if pending:
                    count += pending.get(("r" if ends_at is None else "f", name), 0)
                if blocked is None and count + cost > limit.limit:
                    blocked = i
                names.append(name)
                ends.append(ends_at)
                counts.append(count)
            if blocked is not None:
                results.append(HitResult(False, tuple(counts), blocked))
                continue
            for name, ends_at, limit in zip(names, ends, hit.limits, strict=True):
                if dry_run:
                    slot = ("r" if ends_at is None else "f", name)
                    pending[slot] = pending.get(slot, 0) + cost
                elif ends_at is None:
                    log = rolling.get(name)
                    rolling[name] = (limit.window.seconds, cost, now, cost) if log is None else _added(log, now, cost)
                else:
                    held = fixed.get(name)
                    fixed[name] = (held[0] + cost if held is not None and held[1] > now else cost, ends_at)
            results.append(HitResult(True, tuple([count + cost for count in counts])))
        return results

    async def seen(self, keys: Sequence[str], ttl_seconds: int, *, dry_run: bool = False) -> list[bool]:
        ttl = check_ttl(ttl_seconds)
        now = self._now()
        marked: set[str] = set()  # dry run: keys this call would have marked
        answers: list[bool] = []
        for key in keys:
            live = self._seen.get(key, 0.0) > now or key in marked
            answers.append(live)
            if not live:
                if dry_run:
                    marked.add(key)
                else:
                    self._seen[key] = now + ttl
        return answers

    async def peek(self, limits: Sequence[Limit]) -> list[int]:
        now = self._now()
        return [self._count(limit, self._slot(limit, now), now) for limit in limits]

    async def close(self) -> None:
        self._rolling.clear()
        self._fixed.clear()
        self._seen.clear()
        self._breakers.clear()
        self._levels.clear()

    # -- breakers ----------------------------------------------------------------------------------------

    async def admit(self, accounts: Sequence[str], now: float, probes: set[str] | None = None) -> dict[str, str]:
        refused: dict[str, str] = {}
        states = self._breakers
        if not states:
            return refused
        for name in accounts:
            state = states.get(name)
            if state is None or state.name == "closed":
                continue
            allowed, state, transition = breaker.admit(name, state, now, self.thresholds(name))
            states[name] = state
            if transition is not None:
                log.warning("provider %s: breaker %s → %s: %s", name, *transition_parts(transition))
            if not allowed:
                refused[name] = breaker.why_closed_to(state)
            elif probes is not None:
                probes.add(name)
        return refused

    async def release(self, accounts: Sequence[str], granted_at: float) -> None:
        for name in accounts:
            if (state := self._breakers.get(name)) is not None:
                self._breakers[name] = breaker.release(state, granted_at)

    async def record(self, account: str, outcomes: Sequence[breaker.Outcome]) -> list[breaker.Transition]:
        limits = self.thresholds(account)
        state = self._breakers.get(account) or breaker.State()
        state, transitions = breaker.observe_many(account, state, outcomes, limits)
        self._breakers[account] = state
        return transitions

    async def health(self, account: str, now: float) -> dict[str, object]:
        state = self._breakers.get(account) or breaker.State()
        return breaker.health(state, now, self.thresholds(account))

    # -- rate limits -------------------------------------------------------------------------------------

    async def take(self, account: str, buckets: Sequence[ratelimit.Bucket], wanted: int, now: float) -> ratelimit.Grant:
        levels = self._levels
        held = [ratelimit.refill(b, levels.get((account, b.name)), now) for b in buckets]
        grant = ratelimit.take(buckets, held, wanted)
        for bucket, tokens in zip(buckets, grant.tokens, strict=True):
            levels[(account, bucket.name)] = ratelimit.Level(tokens, now)
        return grant

    # -- introspection -----------------------------------------------------------------------------------

    def entry_count(self) -> int:
        """How many keys are held: lets tests (and a gauge) check that memory stays bounded."""
        return len(self._rolling) + len(self._fixed) + len(self._seen)

    # -- internals ---------------------------------------------------------------------------------------

    def _now(self) -> float:
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
            self._next_sweep = now + self._sweep_interval
        return now

    @staticmethod
    def _slot(limit: Limit, now: float) -> tuple[str, str]:
        if limit.window.kind == "rolling":
            return "r", limit.key
        index, _ = limit.window.bucket(now)
        return "f", f"{limit.key}:{index}"

    def _count(self, limit: Limit, slot: tuple[str, str], now: float) -> int:
        kind, name = slot
        if kind == "r":
            log = self._rolling.get(name)
            if log is None:
                return 0
            pruned = self._rolling[name] = _pruned(log, now, limit.window.seconds)
            return _total(pruned)
        count, ends_at = self._fixed.get(name, (0, 0.0))
        return count if ends_at > now else 0

    def _sweep(self, now: float) -> None:
        rolling = self._rolling
        for name, log in list(rolling.items()):
            pruned = _pruned(log, now, int(log[0]))
            if len(pruned) == 2:  # no entry left
                del rolling[name]
            elif pruned is not log:
                rolling[name] = pruned
        for name, (_, ends_at) in list(self._fixed.items()):
            if ends_at <= now:
                del self._fixed[name]
        for name, expires_at in list(self._seen.items()):
            if expires_at <= now:
                del self._seen[name]


def transition_parts(transition: breaker.Transition) -> tuple[str, str, str]:
    return transition.before, transition.after, transition.reason


if TYPE_CHECKING:
    _conforms: type[Counters] = MemoryCounters
    _breaks: type[Breakers] = MemoryCounters
    _limits: type[RateLimits] = MemoryCounters
