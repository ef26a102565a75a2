"""Alert rules: what an operator wants to hear about, validated from JSON, and judged by pure functions.

The caller computes the figures a rule needs from the rollups (an ``Observation``) for each subject the rule
watches — a provider, channel, template or department — and keeps the previous ``AlertState`` per (rule,
subject). ``evaluate`` returns a ``Transition``: ``fire`` (new: notify), ``repeat`` (still firing and
``repeat_minutes`` since the last notice: notify again), ``hold`` (still firing: no notice, so a breach is told
once), ``recover`` (was firing, now fine: a recovery notice) or ``quiet``.

Kinds and their conditions:

* ``delivery_rate`` — delivered / sent over ``window_minutes`` below ``threshold`` (0–1), and/or more than
  ``drop_points`` percentage points below its baseline (the same hour of day over the previous 7 days); judged
  only with at least ``min_sent`` (default 50) sends in the window, so 1 delivered of 2 never fires.
* ``failure_spike`` — failures in the window at least ``min_failures`` and at least ``factor`` × the baseline
  failures of the same window length (no history counts as a baseline of 0).
* ``urgent_queue_age`` — the oldest queued urgent delivery older than ``seconds``.
* ``breaker_opened`` — a provider's breaker is open.
* ``budget`` — a department's month spend at least ``share`` (default 0.8) of its budget.

Figures that cannot be judged (too few sends, no baseline for a drop-only rule, no budget) leave the alert as it
was: a firing alert holds, a quiet one stays quiet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from clarion.domain import fields

KINDS = ("delivery_rate", "failure_spike", "urgent_queue_age", "breaker_opened", "budget")
#: the dimensions a rule's ``condition.scope`` may name, per kind
SCOPES: dict[str, tuple[str, ...]] = {
    "delivery_rate": ("provider", "channel", "template"),
    "failure_spike": ("provider", "channel", "template"),
    "urgent_queue_age": (),
    "breaker_opened": ("provider",),
    "budget": ("department",),
}
KEY_MAX = 128
Action = Literal["fire", "repeat", "hold", "recover", "quiet"]


_check = fields.Fields("invalid_alert")
_bad, _obj, _known, _int, _number = _check.bad, _check.obj, _check.known, _check.int, _check.number


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= KEY_MAX:
        raise _bad(field, f"must be a string of 1 to {KEY_MAX} characters")
    return value


def _pct(share: float) -> str:
    return f"{share * 100:.1f}%"


@dataclass(frozen=True, slots=True)
class Subject:
    """What a figure is for: ``Subject("provider", "aliyun-a")``; ``Subject.everything()`` for a whole figure."""

    dimension: str
    key: str

    @classmethod
    def everything(cls) -> Subject:
        return cls("all", "")

    def __str__(self) -> str:
        return "all deliveries" if self.dimension == "all" else f"{self.dimension} {self.key}"


@dataclass(frozen=True, slots=True)
class Notify:
    """The provider account to notify through (webhook, robot or e-mail account) and the address, if it needs one."""

    provider: str
    to: str | None = None


@dataclass(frozen=True, slots=True)
class Condition:
    """A rule's condition; the fields a kind does not use keep their defaults and are left out of the JSON."""

    scope: Subject | None = None
    window_minutes: int = 15
    threshold: float | None = None
    drop_points: float | None = None
    min_sent: int = 50
    min_failures: int = 10
    factor: float = 3.0
    seconds: int = 300
    share: float = 0.8


#: the condition fields each kind reads (besides ``scope``)
FIELDS: dict[str, tuple[str, ...]] = {
    "delivery_rate": ("window_minutes", "threshold", "drop_points", "min_sent"),
    "failure_spike": ("window_minutes", "min_failures", "factor"),
    "urgent_queue_age": ("seconds",),
    "breaker_opened": (),
    "budget": ("share",),
}


def _condition(kind: str, value: Any) -> Condition:
    body = _obj(value, "condition")
    _known(body, "condition", {"scope", *FIELDS[kind]})
    scope = None
    if body.get("scope") is not None:
        raw = _obj(body["scope"], "condition.scope")
        if len(raw) != 1 or next(iter(raw)) not in SCOPES[kind]:
            allowed = ", ".join(SCOPES[kind]) or "nothing"
            raise _bad("condition.scope", f"must name one of: {allowed}", allowed=list(SCOPES[kind]))
        ((dimension, key),) = raw.items()
        scope = Subject(dimension, _name(key, f"condition.scope.{dimension}"))
    c = Condition(scope=scope)
    if kind in ("delivery_rate", "failure_spike"):
        c = replace(c, window_minutes=_int(body.get("window_minutes", 15), "condition.window_minutes", minimum=1))
    if kind == "delivery_rate":
        threshold, drop = body.get("threshold"), body.get("drop_points")
        if threshold is None and drop is None:
            raise _bad("condition.threshold", 'give "threshold", "drop_points" or both')
        c = replace(
            c,
            threshold=None if threshold is None else _number(threshold, "condition.threshold", minimum=0, maximum=1),
            drop_points=None if drop is None else _number(drop, "condition.drop_points", minimum=0, maximum=100),
            min_sent=_int(body.get("min_sent", 50), "condition.min_sent", minimum=1),
        )
    elif kind == "failure_spike":
        c = replace(
            c,
            min_failures=_int(body.get("min_failures", 10), "condition.min_failures", minimum=1),
            factor=_number(body.get("factor", 3.0), "condition.factor", minimum=1, maximum=1000),
        )
    elif kind == "urgent_queue_age":
        c = replace(c, seconds=_int(body.get("seconds", 300), "condition.seconds", minimum=1))
    elif kind == "budget":
        c = replace(c, share=_number(body.get("share", 0.8), "condition.share", minimum=0.01, maximum=10))
    return c


@dataclass(frozen=True, slots=True)
class AlertRule:
    key: str
    kind: str
    condition: Condition
    notify: Notify
    repeat_minutes: int = 60
    enabled: bool = True

    @classmethod
    def from_json(cls, value: Any) -> AlertRule:
        body = _obj(value, "rule")
        _known(body, "rule", {"key", "kind", "condition", "notify", "repeat_minutes", "enabled"})
        key = _name(body.get("key"), "key")
        kind = body.get("kind")
        if kind not in KINDS:
            raise _bad("kind", f"must be one of {', '.join(KINDS)}", allowed=list(KINDS))
        notify = _obj(body.get("notify"), "notify")
        _known(notify, "notify", {"provider", "to"})
        to = notify.get("to")
        if to is not None and (not isinstance(to, str) or not to.strip()):
            raise _bad("notify.to", "must be an address or null")
        enabled = body.get("enabled", True)
        if not isinstance(enabled, bool):
            raise _bad("enabled", "must be true or false")
        return cls(
            key=key,
            kind=kind,
            condition=_condition(kind, body.get("condition", {})),
            notify=Notify(_name(notify.get("provider"), "notify.provider"), to),
            repeat_minutes=_int(body.get("repeat_minutes", 60), "repeat_minutes", minimum=0, maximum=60 * 24 * 30),
            enabled=enabled,
        )

    def to_json(self) -> dict[str, Any]:
        c = self.condition
        condition: dict[str, Any] = {f: getattr(c, f) for f in FIELDS[self.kind] if getattr(c, f) is not None}
        if c.scope is not None:
            condition["scope"] = {c.scope.dimension: c.scope.key}
        return {
            "key": self.key,
            "kind": self.kind,
            "condition": condition,
            "notify": {"provider": self.notify.provider, "to": self.notify.to},
            "repeat_minutes": self.repeat_minutes,
            "enabled": self.enabled,
        }

    def covers(self, subject: Subject) -> bool:
        """Whether the rule watches ``subject``: any subject when unscoped, else only its scope."""
        return self.condition.scope is None or self.condition.scope == subject


@dataclass(frozen=True, slots=True)
class RateWindow:
    """Counts over the rule's window, and the 7-day same-hour baseline (None without history)."""

    sent: int
    delivered: int
    failed: int
    baseline_rate: float | None = None
    baseline_failed: float | None = None


@dataclass(frozen=True, slots=True)
class QueueAge:
    """Age of the oldest queued urgent delivery; None when none is queued."""

    seconds: float | None


@dataclass(frozen=True, slots=True)
class BreakerState:
    open_providers: frozenset[str]


@dataclass(frozen=True, slots=True)
class BudgetUse:
    """A department's spend this month and its budget (0 or less: no budget set)."""

    spent: float
    budget: float


Observation = RateWindow | QueueAge | BreakerState | BudgetUse


@dataclass(frozen=True, slots=True)
class AlertState:
    """What is kept per (rule, subject) between evaluations."""

    firing_since: datetime | None = None
    notified_at: datetime | None = None
    value: float | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    action: Action
    state: AlertState
    text: str

    @property
    def notifies(self) -> bool:
        return self.action in ("fire", "repeat", "recover")


@dataclass(frozen=True, slots=True)
class _Verdict:
    breached: bool | None  # None: the figures cannot be judged
    value: float | None
    text: str


def _expect(observation: Observation, kind: type[Any], rule: AlertRule) -> Any:
    if not isinstance(observation, kind):
        raise TypeError(f"a {rule.kind} rule needs a {kind.__name__}, not {type(observation).__name__}")
    return observation


def _delivery_rate(c: Condition, subject: Subject, w: RateWindow) -> _Verdict:
    head = f"delivery rate of {subject}"
    if w.sent < c.min_sent:
        return _Verdict(None, None, f"{head}: {w.sent} sent over {c.window_minutes} min, fewer than {c.min_sent}")
    rate = w.delivered / w.sent
    figure = f"{head} {_pct(rate)} over {c.window_minutes} min"
    below: list[str] = []
    judged = False
    if c.threshold is not None:
        judged = True
        if rate < c.threshold:
            below.append(f"below {_pct(c.threshold)}")
    if c.drop_points is not None and w.baseline_rate is not None:
        judged = True
        drop = (w.baseline_rate - rate) * 100
        if drop > c.drop_points:
            below.append(f"{drop:.1f} points below its baseline {_pct(w.baseline_rate)} (limit {c.drop_points:.1f})")
    if not judged:
        return _Verdict(None, rate, f"{figure}, no baseline to compare with")
    if below:
        return _Verdict(True, rate, f"{figure}, {' and '.join(below)}")
    return _Verdict(False, rate, f"{figure}, within limits")


def _failure_spike(c: Condition, subject: Subject, w: RateWindow) -> _Verdict:
    baseline = w.baseline_failed or 0.0
    figure = f"failures of {subject} {w.failed} over {c.window_minutes} min, baseline {baseline:.1f}"
    breached = w.failed >= c.min_failures and w.failed >= c.factor * baseline
    limit = f"{c.factor:.1f}× baseline and at least {c.min_failures}"
    return _Verdict(breached, float(w.failed), f"{figure}, {'at or above' if breached else 'under'} {limit}")


def _queue_age(c: Condition, q: QueueAge) -> _Verdict:
    if q.seconds is None:
        return _Verdict(False, None, "no urgent delivery queued")
    breached = q.seconds > c.seconds
    figure = f"oldest queued urgent delivery waiting {math.floor(q.seconds)} s"
    return _Verdict(breached, q.seconds, f"{figure}, {'over' if breached else 'within'} {c.seconds} s")


def _breaker(subject: Subject, b: BreakerState) -> _Verdict:
    is_open = subject.key in b.open_providers
    return _Verdict(is_open, 1.0 if is_open else 0.0, f"breaker of {subject} {'open' if is_open else 'closed'}")


def _budget(c: Condition, subject: Subject, u: BudgetUse) -> _Verdict:
    if u.budget <= 0:
        return _Verdict(None, None, f"spend of {subject} {u.spent:,.2f} this month, no budget set")
    share = u.spent / u.budget
    breached = share >= c.share
    figure = f"spend of {subject} {u.spent:,.2f} of budget {u.budget:,.2f} this month ({_pct(share)})"
    return _Verdict(breached, share, f"{figure}, {'at or above' if breached else 'below'} {_pct(c.share)}")


def _verdict(rule: AlertRule, subject: Subject, observation: Observation) -> _Verdict:
    c = rule.condition
    if rule.kind == "delivery_rate":
        return _delivery_rate(c, subject, _expect(observation, RateWindow, rule))
    if rule.kind == "failure_spike":
        return _failure_spike(c, subject, _expect(observation, RateWindow, rule))
    if rule.kind == "urgent_queue_age":
        return _queue_age(c, _expect(observation, QueueAge, rule))
    if rule.kind == "breaker_opened":
        return _breaker(subject, _expect(observation, BreakerState, rule))
    return _budget(c, subject, _expect(observation, BudgetUse, rule))


def evaluate(
    rule: AlertRule, subject: Subject, observation: Observation, state: AlertState | None, now: datetime
) -> Transition:
    """Judge one subject's figures against ``rule``, given the state left by the previous evaluation."""
    before = state or AlertState()
    firing = before.firing_since is not None
    if not rule.enabled:
        return Transition("quiet", AlertState(value=before.value), f"rule {rule.key} is disabled")
    verdict = _verdict(rule, subject, observation)
    value = before.value if verdict.value is None else verdict.value
    if verdict.breached is None:
        return Transition("hold" if firing else "quiet", replace(before, value=value), verdict.text)
    if verdict.breached:
        if not firing:
            return Transition("fire", AlertState(now, now, value), verdict.text)
        due = before.notified_at is None or (
            rule.repeat_minutes > 0 and now - before.notified_at >= timedelta(minutes=rule.repeat_minutes)
        )
        if due:
            return Transition("repeat", replace(before, notified_at=now, value=value), verdict.text)
        return Transition("hold", replace(before, value=value), verdict.text)
    if firing:
        return Transition("recover", AlertState(None, now, value), f"recovered: {verdict.text}")
    return Transition("quiet", replace(before, value=value), verdict.text)
