"""Frequency caps and the per-user safety valve, as counter requests.

Each delivery becomes one ``Hit`` holding every limit that applies to it, so it is counted against all of
them or none (the counters apply a hit atomically: two workers racing for the last slot never both win).
Calendar windows are the user's local day or week. Protected messages (verification, transactional, urgent)
are counted by the caps but never refused by them: "30 SMS a day" counts the codes a user received, yet a
code is never the message that gets dropped. A template marked ``exempt_caps`` is neither counted nor
refused. The safety valve counts and refuses everything: it is the guard against a runaway business system.

Dedup rides in the same hit as a limit of 1 over a rolling window keyed by the content's hash, listed first:
a duplicate is refused (and reported as a duplicate) without touching the caps, and a delivery refused by a
cap leaves no dedup mark behind, so one counter round trip per batch gives both answers.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from clarion.counters import base as counters
from clarion.domain import timewindows
from clarion.domain.policy import config, dedup
from clarion.domain.policy.decision import ALLOW, Candidate, Decision, Drop

CAPS, VALVE = "caps", "safety_valve"
_UNLIMITED = 2**31 - 1


@dataclass(frozen=True, slots=True)
class DedupMark:
    seconds: int


Source = config.Cap | config.SafetyValve | DedupMark


@dataclass(frozen=True, slots=True)
class Counted:
    """The limits one delivery is checked against, with what each stands for (for the explanation)."""

    limits: tuple[counters.Limit, ...]
    sources: tuple[Source, ...]

    def hit(self) -> counters.Hit | None:
        return counters.Hit(self.limits) if self.limits else None


def _window(spec: config.CapWindow, candidate: Candidate, zone: ZoneInfo) -> counters.Window:
    if spec.unit is not None:
        start, seconds = timewindows.calendar_bucket(candidate.now, zone, spec.unit)
        return _fixed(seconds, start)
    assert spec.seconds is not None
    return _rolling(spec.seconds)


# Windows are immutable values shared by every delivery of a day and zone: built (and validated) once.
@functools.lru_cache(maxsize=4096)
def _fixed(seconds: int, start: float) -> counters.Window:
    return counters.Window("fixed", seconds, start)


@functools.lru_cache(maxsize=256)
def _rolling(seconds: int) -> counters.Window:
    return counters.Window("rolling", seconds)


def _tag(spec: config.CapWindow) -> str:
    return spec.unit or f"{spec.seconds}s"


def limits_for(
    candidate: Candidate,
    caps: Sequence[config.Cap],
    settings: config.PolicySettings,
    zone: ZoneInfo,
    dedup_key: str | None = None,
) -> Counted:
    """Every limit one delivery must pass: its dedup mark (when ``dedup_key`` is given and dedup is on for it),
    the caps that match it, and the safety valve."""
    user = candidate.user.user_id
    limits: list[counters.Limit] = []
    sources: list[Source] = []
    seconds = dedup.window(candidate, settings)
    if dedup_key is not None and settings.on(dedup.POLICY) and seconds > 0:
        limits.append(counters.Limit(dedup_key, 1, _rolling(seconds)))
        sources.append(DedupMark(seconds))
    if settings.on(CAPS) and not candidate.overrides.exempt_caps:
        department = candidate.template.department or "-"
        for cap in caps:
            if not cap.matches(candidate.channel, candidate.category):
                continue
            key = f"cap:{cap.key}:{_tag(cap.window)}:{user}"
            if cap.per_department:
                key += f":{department}"
            limit = _UNLIMITED if candidate.protected else cap.limit
            limits.append(counters.Limit(key, limit, _window(cap.window, candidate, zone)))
            sources.append(cap)
    valve = settings.safety_valve
    if settings.on(VALVE) and valve is not None:
        limits.append(
            counters.Limit(f"valve:{_tag(valve.window)}:{user}", valve.limit, _window(valve.window, candidate, zone))
        )
        sources.append(valve)
    return Counted(tuple(limits), tuple(sources))


def decide(candidate: Candidate, counted: Counted, result: counters.HitResult | None) -> Decision:
    """Turn the counters' answer into a decision that names the cap and the count it saw."""
    if result is None or result.allowed or result.blocked is None:
        return ALLOW
    source = counted.sources[result.blocked]
    count = result.counts[result.blocked]
    if isinstance(source, DedupMark):
        return dedup.duplicate(candidate, source.seconds)
    detail: dict[str, Any] = {"limit": source.limit, "count": count, "window": source.window.to_json()}
    if isinstance(source, config.Cap):
        detail["cap"] = source.key
        return Drop(CAPS, f"frequency_cap: {source.key} ({source.describe()}; {count} already)", detail)
    return Drop(
        VALVE,
        f"safety_valve: at most {source.limit} deliveries per user {source.window.describe()} ({count} already)",
        detail,
    )


def seen_counts(counted: Counted, counts: Sequence[int]) -> list[dict[str, Any]]:
    """Each limit with the count it holds, for ``POST /v1/policies/check``."""
    out = []
    for source, limit, count in zip(counted.sources, counted.limits, counts, strict=True):
        if isinstance(source, DedupMark):
            out.append({"policy": dedup.POLICY, "window_seconds": source.seconds, "seen": count > 0})
        elif isinstance(source, config.Cap):
            entry = {"policy": CAPS, "cap": source.key, "limit": source.limit, "count": count}
            out.append({**entry, "counts_only": limit.limit == _UNLIMITED})
        else:
            out.append({"policy": VALVE, "limit": source.limit, "count": count})
    return out
