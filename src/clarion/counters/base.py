"""The counters interface shared by frequency caps, dedup windows and the per-user safety ceiling.

Policies run on the hot path, so the interface is batched: one ``hit()`` call carries every message of a
batch and a backend answers it in one round trip (one Lua script on Redis). Everything here is plain data so
that policies can build requests without importing a backend; the two backends (``memory`` for embedded mode,
``redis`` for several processes) give the same answers for the same sequence of calls.

Time zones stay out of the counters: a calendar window ("per user per day") is a ``fixed`` window whose
``start`` the caller computes (the user's local midnight as a unix time). Buckets are then
``[start + k*seconds, start + (k+1)*seconds)``; each bucket expires at its end, so a caller that passes a new
anchor every day (index 0 each time) still gets a fresh bucket.

One key names one limit: use a given key with one window only (two rolling windows on one key would share one
log and prune each other's entries). Rolling, fixed and ``seen`` keys live in separate namespaces, so a cap and
a dedup key may share a name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol, runtime_checkable

from clarion.domain import breaker, ratelimit

WindowKind = Literal["rolling", "fixed"]


@dataclass(frozen=True, slots=True)
class Window:
    """``rolling``: the last ``seconds`` (exact, not bucketed). ``fixed``: buckets anchored at ``start``.

    ``start`` is a unix time; for a fixed window it defaults to 0 (UTC-aligned buckets). It is meaningless for a
    rolling window and refused there, so a caller who meant "fixed" finds out at once.
    """

    kind: WindowKind
    seconds: int
    start: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("rolling", "fixed"):
            raise ValueError(f"window kind must be 'rolling' or 'fixed', not {self.kind!r}")
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, int) or self.seconds < 1:
            raise ValueError(f"window seconds must be a positive integer, not {self.seconds!r}")
        if self.kind == "rolling" and self.start is not None:
            raise ValueError("a rolling window has no start; use kind='fixed' for anchored buckets")
        if self.start is not None and not math.isfinite(self.start):
            raise ValueError(f"window start must be a finite unix time, not {self.start!r}")

    @property
    def anchor(self) -> float:
        """Where fixed buckets are counted from (0 = the unix epoch)."""
        return 0.0 if self.start is None else float(self.start)

    def bucket(self, now: float) -> tuple[int, float]:
        """The fixed bucket holding ``now``: its index from ``anchor`` and the unix time at which it ends."""
        index = math.floor((now - self.anchor) / self.seconds)
        return index, self.anchor + (index + 1) * self.seconds


class _LimitFields(NamedTuple):
    key: str
    limit: int
    window: Window


class Limit(_LimitFields):
    """At most ``limit`` units under ``key`` per ``window``, e.g. ``Limit("cap:sms-daily:u1", 30, day)``.

    A named tuple rather than a dataclass: every delivery builds several, and a tuple is the cheapest immutable
    value to build."""

    __slots__ = ()

    def __new__(cls, key: str, limit: int, window: Window) -> Limit:
        if not key:
            raise ValueError("a limit needs a key")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be a non-negative integer, not {limit!r}")
        return super().__new__(cls, key, limit, window)


@dataclass(frozen=True, slots=True)
class Hit:
    """One message: it consumes ``cost`` of every limit in ``limits``, or of none of them.

    A (kind, key) pair may appear once per hit: twice would count one message twice against one store.
    """

    limits: tuple[Limit, ...]
    cost: int = 1

    def __post_init__(self) -> None:
        limits = self.limits
        if type(limits) is not tuple:
            limits = tuple(limits)
            object.__setattr__(self, "limits", limits)
        if not limits:
            raise ValueError("a hit needs at least one limit")
        if isinstance(self.cost, bool) or not isinstance(self.cost, int) or self.cost < 1:
            raise ValueError(f"cost must be a positive integer, not {self.cost!r}")
        if len(limits) > 1 and len({(limit.window.kind, limit.key) for limit in limits}) != len(limits):
            raise ValueError(f"a hit names the same key twice: {[limit.key for limit in limits]}")


class HitResult(NamedTuple):
    """The answer for one ``Hit``.

    ``counts`` has one entry per limit: the count after the hit if it was allowed, the count before it if it
    was refused (so "explain" output shows what stood in the way). ``blocked`` is the index of the first limit
    that refused, ``None`` when allowed. (A named tuple: a backend builds one per delivery.)
    """

    allowed: bool
    counts: tuple[int, ...]
    blocked: int | None = None


@runtime_checkable
class Counters(Protocol):
    """Frequency caps and dedup marks; see the module docstring for the shared rules."""

    async def hit(self, hits: Sequence[Hit], *, dry_run: bool = False) -> list[HitResult]:
        """Apply ``hits`` in order, each all-or-nothing; a later hit sees the earlier ones of the same call.

        With ``dry_run`` nothing is stored; the results say what the same call would have done (still in order,
        so a dry run of a batch reports where the batch would start being refused).
        """
        ...

    async def seen(self, keys: Sequence[str], ttl_seconds: int, *, dry_run: bool = False) -> list[bool]:
        """Dedup: ``True`` if a key was marked within its ttl, else mark it now (set-if-absent, with expiry).

        A mark is not extended by later sightings: the window runs from the first send. A key repeated in one
        call is seen by its second occurrence. ``dry_run`` answers without marking.
        """
        ...

    async def peek(self, limits: Sequence[Limit]) -> list[int]:
        """The current count of each limit (nothing is consumed), for "explain" output."""
        ...

    async def close(self) -> None:
        """Release connections or memory held by the backend."""
        ...


@runtime_checkable
class Breakers(Protocol):
    """Provider health windows and circuit breakers (``domain.breaker``), kept where every process that sends
    through an account sees them: in this process (memory), or in Redis, where a breaker opened by one process
    is open for all, a half-open probe is let through once across them, and the health window is the shared one.
    ``shared`` says which. Each account's ``breaker.Thresholds`` come from ``thresholds(account)`` (bootstrap
    wires the registry's, which reads the account's ``breaker`` config)."""

    shared: bool
    thresholds: Callable[[str], breaker.Thresholds]

    async def admit(self, accounts: Sequence[str], now: float, probes: set[str] | None = None) -> dict[str, str]:
        """One call per claimed batch: the accounts of ``accounts`` that may not send now → why (an open breaker
        in its cool-down, a half-open one whose probe is in flight). A half-open account left out of the answer
        has been granted its probe (added to ``probes`` when given); transitions made here (open → half-open)
        are logged by the backend. ``now`` (unix time) is the dispatcher's clock, as are the outcomes' ``at``:
        tests that move that clock move the breakers' cool-downs and windows with it."""
        ...

    async def release(self, accounts: Sequence[str], granted_at: float) -> None:
        """Hand back the probes ``admit(..., now=granted_at)`` granted to ``accounts`` that no delivery of the
        batch was routed to (``breaker.release``); a probe granted since to another batch is left alone."""
        ...

    async def record(self, account: str, outcomes: Sequence[breaker.Outcome]) -> list[breaker.Transition]:
        """Add one account's outcomes to its window; the transitions they caused, in order."""
        ...

    async def health(self, account: str, now: float) -> dict[str, object]:
        """The health view of one account (``breaker.health``)."""
        ...


@runtime_checkable
class RateLimits(Protocol):
    """Provider accounts' token buckets (``domain.ratelimit``), in this process or shared through Redis."""

    async def take(self, account: str, buckets: Sequence[ratelimit.Bucket], wanted: int, now: float) -> ratelimit.Grant:
        """Take up to ``wanted`` tokens from every one of ``account``'s ``buckets`` at once, after refilling them
        to ``now`` (the memory backend's clock; Redis uses its own, so that processes agree): how many were
        granted, and each bucket's level after, from which ``ratelimit.turns`` tells when the rest may go."""
        ...


def check_ttl(ttl_seconds: int) -> int:
    """``seen`` ttls are whole seconds ≥ 1; both backends refuse the same inputs."""
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds < 1:
        raise ValueError(f"ttl_seconds must be a positive integer, not {ttl_seconds!r}")
    return ttl_seconds
