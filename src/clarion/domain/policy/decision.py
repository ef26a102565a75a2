"""What a policy decides, and what it decides about.

Every policy is a function over values returning a ``Decision`` for one candidate delivery: ``Allow``,
``Drop(policy, reason, detail)`` or ``Defer(until, policy, reason, detail)``. A message is narrowed to fewer
channels by dropping some of its deliveries and allowing the others. The stage runner
(``pipeline.policies``) applies the decisions and records them on the delivery's timeline, with ``detail``
holding the parameters and counter values the policy saw, so "why didn't I get it?" has an answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from clarion.domain import model
from clarion.domain.policy import config


@dataclass(frozen=True, slots=True)
class Allow:
    pass


@dataclass(frozen=True, slots=True)
class Drop:
    policy: str
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Defer:
    until: datetime
    policy: str
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)


Decision = Allow | Drop | Defer
ALLOW = Allow()


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a decision puts a new delivery: its first status and reason, when it is due, the timeline detail
    naming the policy that decided, and whether its rendered content is kept (a dropped one keeps none)."""

    status: model.DeliveryStatus
    reason: str | None
    run_at: datetime
    detail: dict[str, Any] | None
    keeps_content: bool


def placement(decision: Decision, now: datetime) -> Placement:
    """A new delivery's placement by ``decision``: filtered, deferred to its time, or queued now."""
    if isinstance(decision, Drop):
        detail = {"policy": decision.policy, **decision.detail}
        return Placement(model.DeliveryStatus.FILTERED, decision.reason, now, detail, False)
    if isinstance(decision, Defer):
        detail = {"policy": decision.policy, **decision.detail}
        return Placement(model.DeliveryStatus.DEFERRED, decision.reason, decision.until, detail, True)
    return Placement(model.DeliveryStatus.QUEUED, None, now, None, True)


def explain(decision: Decision) -> dict[str, Any]:
    """A decision as JSON for the timeline and for ``POST /v1/policies/check``."""
    if isinstance(decision, Allow):
        return {"decision": "allow"}
    out: dict[str, Any] = {"decision": "drop" if isinstance(decision, Drop) else "defer", "policy": decision.policy}
    out["reason"] = decision.reason
    if isinstance(decision, Defer):
        out["until"] = decision.until.isoformat()
    if decision.detail:
        out["detail"] = decision.detail
    return out


@dataclass(frozen=True, slots=True)
class Candidate:
    """One planned delivery as the policies see it: who, what, on which channel, at what time."""

    message_id: str
    user: model.User
    template: model.Template
    channel: model.Channel
    now: datetime
    address: Any = None
    dedup_key: str | None = None
    preferences: config.Preferences = config.NO_PREFERENCES

    @property
    def category(self) -> model.Category:
        return self.template.category

    @property
    def protected(self) -> bool:
        """Verification, transactional and urgent messages: never dropped by marketing policies (quiet hours,
        caps); still subject to unsubscribes, dedup, keywords and the safety valve."""
        return (
            self.template.category in (model.Category.VERIFICATION, model.Category.TRANSACTIONAL)
            or self.template.priority is model.Priority.URGENT
        )

    @property
    def overrides(self) -> config.TemplatePolicy:
        policy = self.template.policy
        return policy if isinstance(policy, config.TemplatePolicy) else config.DEFAULT_TEMPLATE_POLICY


def addresses_of(address: Any) -> list[str]:
    """A delivery's address as a list of strings (push holds several device tokens; a typed one
    ``{"platform", "token"}`` is its token, a Web Push subscription its endpoint)."""
    if address is None:
        return []
    if isinstance(address, list | tuple):
        return [_one(a) for a in address]
    if isinstance(address, Mapping):
        return [str(v) for v in address.values()]
    return [str(address)]


def _one(item: Any) -> str:
    if not isinstance(item, Mapping):
        return str(item)
    token = item.get("token", item)
    if isinstance(token, Mapping):  # a Web Push subscription: its endpoint names it
        return str(token.get("endpoint", token))
    return str(token)
