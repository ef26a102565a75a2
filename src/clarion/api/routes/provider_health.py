"""A provider account's health (``admin``): its last minute of outcomes (attempts, success rate, transient and
permanent counts, p50/p99 latency of the sends), its circuit breaker's state and why, and its last errors. The
window and the breaker are kept in the counters layer by the workers (``domain.breaker``); Prometheus exposes
the same as ``clarion_provider_outcomes``, ``clarion_provider_send_seconds`` and
``clarion_provider_breaker_state``."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import Field

from clarion.api import deps, problems, views
from clarion.api.routes.providers import Name
from clarion.domain import approval, breaker, errors
from clarion.store import records
from clarion.store import tables as t

router = APIRouter(prefix="/v1/providers", tags=["providers"], dependencies=deps.AUTH)


class Breaker(views.View):
    state: Literal["closed", "open", "half_open"]
    since: float = Field(description="unix time of the last transition (0: never moved)")
    reason: str | None = Field(description="why it entered this state")


class LastError(views.View):
    at: float = Field(description="unix time")
    kind: Literal["transient", "permanent", "misconfigured"]
    reason: str | None


class ProviderHealth(views.View):
    provider: str
    window_seconds: float
    attempts: int
    succeeded: int
    transient: int
    permanent: int = Field(description="permanent errors, misconfigurations included")
    success_rate: float | None
    latency_p50: float | None = Field(description="seconds, of the provider call that carried each send")
    latency_p99: float | None
    breaker: Breaker
    last_errors: list[LastError]


@router.get("/{name}/health", response_model=ProviderHealth, responses=problems.answers(403, 404))
async def provider_health(clarion: deps.Services, caller: deps.Caller, name: str = Name) -> dict[str, Any]:
    """The health of one provider account, configured or built-in (``admin``)."""
    approval.require(caller.roles, approval.ADMINISTER)
    if name not in clarion.providers.builtins and await records.get_one(clarion.db, t.providers, name) is None:
        raise errors.NotFound("provider", name)
    breakers = clarion.providers.breakers
    view = (
        await breakers.health(name, clarion.providers.clock())
        if breakers is not None
        else breaker.health(breaker.State(), 0.0)
    )
    return {"provider": name, **view}
