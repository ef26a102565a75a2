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
from typing import Any, Literal, NamedTuple
from zoneinfo import ZoneInfo

from clarion.counters import base as counters
from clarion.domain import model, timewindows
from clarion.domain.policy import config, dedup
from clarion.domain.policy.decision import ALLOW, Candidate, Decision, Drop

CAPS, VALVE = "caps", "safety_valve"
_UNLIMITED = 2**31 - 1


@dataclass(frozen=True, slots=True)
class DedupMark:
    seconds: int


Source = config.Cap | config.SafetyValve | DedupMark


class Counted(NamedTuple):
    """The limits one delivery is checked against, with what each stands for (for the explanation)."""

    limits: tuple[counters.Limit, ...]
    sources: tuple[Source, ...]

    def hit(self) -> counters.Hit | None:
        return counters.Hit(self.limits) if self.limits else None


# Windows are immutable values shared by every delivery of a day and zone: built (and validated) once.
@functools.lru_cache(maxsize=4096)
def _fixed(seconds: int, start: float) -> counters.Window:
    return counters.Window("fixed", seconds, start)


@functools.lru_cache(maxsize=256)
def _rolling(seconds: int) -> counters.Window:
    return counters.Window("rolling", seconds)


def _tag(spec: config.CapWindow) -> str:
    return spec.unit or f"{spec.seconds}s"


@dataclass(frozen=True, slots=True)
class _Rule:
    """One cap or the safety valve as it applies to the deliveries of one template on one channel: the counter
    key is ``prefix + user id + suffix``; ``window`` is None for a calendar window (``unit``), which depends on
    the user's zone and the day."""

    prefix: str
    suffix: str
    limit: int
    unit: Literal["day", "week"] | None
    window: counters.Window | None


@dataclass(frozen=True, slots=True)
class _Plan:
    """What every delivery of one template on one channel is counted against, user ids and calendar days aside."""

    dedup: DedupMark | None
    rules: tuple[_Rule, ...]
    sources: tuple[Source, ...]  # of the rules
    sources_after_dedup: tuple[Source, ...]  # the dedup mark, then the rules' (a delivery with a dedup key)


class Limits:
    """The limits in force under one snapshot of the caps and settings, worked out once per template and channel:
    the stage keeps one while the catalog hands it the same caps and settings, so a delivery only fills in its
    user id, calendar day and dedup key."""

    _MAX_PLANS = 1024

    def __init__(self, caps: Sequence[config.Cap], settings: config.PolicySettings) -> None:
        self.caps = caps
        self.settings = settings
        self._plans: dict[tuple[int, model.Channel], tuple[model.Template, _Plan]] = {}  # by template identity

    def dedup_seconds(self, candidate: Candidate) -> int:
        """The dedup window counted for ``candidate`` (0: none, so it needs no dedup key)."""
        mark = self._plan(candidate).dedup
        return mark.seconds if mark is not None else 0

    def counted(self, candidate: Candidate, zone: ZoneInfo, dedup_key: str | None = None) -> Counted:
        """Every limit one delivery must pass: its dedup mark (when ``dedup_key`` is given and dedup is on for
        it), the caps that match it, and the safety valve."""
        plan = self._plan(candidate)
        user = candidate.user.user_id
        limits: list[counters.Limit] = []
        sources = plan.sources
        if dedup_key is not None and plan.dedup is not None:
            limits.append(counters.Limit(dedup_key, 1, _rolling(plan.dedup.seconds)))
            sources = plan.sources_after_dedup
        days: dict[str, counters.Window] = {}  # one calendar bucket per unit, shared by the caps counting in it
        for rule in plan.rules:
            window = rule.window
            if window is None:
                assert rule.unit is not None
                window = days.get(rule.unit)
                if window is None:
                    start, seconds = timewindows.calendar_bucket(candidate.now, zone, rule.unit)
                    window = days[rule.unit] = _fixed(seconds, start)
            limits.append(counters.Limit(f"{rule.prefix}{user}{rule.suffix}", rule.limit, window))
        return Counted(tuple(limits), sources)

    def _plan(self, candidate: Candidate) -> _Plan:
        template = candidate.template
        key = (id(template), candidate.channel)
        found = self._plans.get(key)
        if found is not None and found[0] is template:
            return found[1]
        plan = self._make_plan(candidate)
        if len(self._plans) >= self._MAX_PLANS:
            self._plans.clear()
        self._plans[key] = (template, plan)
        return plan

    def _make_plan(self, candidate: Candidate) -> _Plan:
        settings = self.settings
        rules: list[_Rule] = []
        sources: list[Source] = []
        seconds = dedup.window(candidate, settings)
        mark = DedupMark(seconds) if settings.on(dedup.POLICY) and seconds > 0 else None
        if settings.on(CAPS) and not candidate.overrides.exempt_caps:
            department = candidate.template.department or "-"
            for cap in self.caps:
                if not cap.matches(candidate.channel, candidate.category):
                    continue
                suffix = f":{department}" if cap.per_department else ""
                limit = _UNLIMITED if candidate.protected else cap.limit
                rules.append(_rule(f"cap:{cap.key}:{_tag(cap.window)}:", suffix, limit, cap.window))
                sources.append(cap)
        valve = settings.safety_valve
        if settings.on(VALVE) and valve is not None:
            rules.append(_rule(f"valve:{_tag(valve.window)}:", "", valve.limit, valve.window))
            sources.append(valve)
        return _Plan(mark, tuple(rules), tuple(sources), (mark, *sources) if mark is not None else tuple(sources))


def _rule(prefix: str, suffix: str, limit: int, spec: config.CapWindow) -> _Rule:
    if spec.unit is not None:
        return _Rule(prefix, suffix, limit, spec.unit, None)
    assert spec.seconds is not None
    return _Rule(prefix, suffix, limit, None, _rolling(spec.seconds))


def limits_for(
    candidate: Candidate,
    caps: Sequence[config.Cap],
    settings: config.PolicySettings,
    zone: ZoneInfo,
    dedup_key: str | None = None,
) -> Counted:
    """Every limit one delivery must pass (see ``Limits.counted``), for a one-off question."""
    return Limits(caps, settings).counted(candidate, zone, dedup_key)


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
