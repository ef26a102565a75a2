"""The policy stage's seam: between planning and composing, every planned message is checked.

Policies (consent, unsubscribe, quiet hours, caps, dedup, keywords) return per-channel decisions; this
module holds the decision values and the stage interface. Until policies are configured the stage allows
everything, so the triggered path already runs through it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from clarion.domain import model


@dataclass(frozen=True, slots=True)
class Allow:
    pass


@dataclass(frozen=True, slots=True)
class Drop:
    reason: str
    detail: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Defer:
    until: datetime
    reason: str
    detail: dict[str, object] = field(default_factory=dict)


Decision = Allow | Drop | Defer
ALLOW = Allow()


@dataclass(frozen=True, slots=True)
class Candidate:
    """One planned delivery as a policy sees it."""

    message_id: str
    user: model.User
    template: model.Template
    channel: model.Channel
    now: datetime


class PolicyStage(Protocol):
    async def decide(self, candidates: Sequence[Candidate]) -> list[Decision]: ...


class AllowAll:
    async def decide(self, candidates: Sequence[Candidate]) -> list[Decision]:
        return [ALLOW] * len(candidates)
