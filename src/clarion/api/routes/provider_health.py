"""A provider account's health (``admin``): its last minute of outcomes (attempts, success rate, transient and
permanent counts, p50/p99 latency of the sends), its circuit breaker's state, why and its thresholds, its rate
limit, and its last errors. The window and the breaker are kept in the counters layer by the workers
(``domain.breaker``) — shared by every process through Redis when it is configured (``breaker.shared``) —
and ``clarion_provider_rate_limited`` counts the deliveries a rate limit put back; Prometheus exposes
the same as ``clarion_provider_outcomes``, ``clarion_provider_send_seconds`` and
``clarion_provider_breaker_state``."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import Field

from clarion.api import deps, problems, views
from clarion.api.routes.providers import Name
from clarion.domain import approval
from clarion.pipeline import provisioning

router = APIRouter(prefix="/v1/providers", tags=["providers"], dependencies=deps.AUTH)


class Breaker(views.View):
    state: Literal["closed", "open", "half_open"]
    since: float = Field(description="unix time of the last transition (0: never moved)")
    reason: str | None = Field(description="why it entered this state")
    shared: bool = Field(
        default=False, description="true: this state and the window are shared by every process (through Redis)"
    )
    consecutive: int = Field(default=5, description="transient failures in a row that open it (config.breaker)")
    error_rate: float = Field(default=0.5, description="share of failed attempts in the window that opens it")
    min_attempts: int = Field(default=20, description="attempts in the window before the error rate counts")
    cool_down: float = Field(default=30, description="seconds open before a half-open probe")


class RateLimit(views.View):
    per_second: float | None = Field(description="deliveries a second at most (null: no limit per second)")
    per_minute: float | None = Field(description="deliveries a minute at most (null: no limit per minute)")
    source: Literal["account", "kind", "none"] = Field(
        description="account: its config's rate_limit; kind: the kind's documented default; none: unlimited"
    )


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
    rate_limit: RateLimit
    last_errors: list[LastError]


@router.get("/{name}/health", response_model=ProviderHealth, responses=problems.answers(403, 404))
async def provider_health(clarion: deps.Services, caller: deps.Caller, name: str = Name) -> dict[str, Any]:
    """The health of one provider account, configured or built-in (``admin``)."""
    approval.require(caller.roles, approval.ADMINISTER)
    return await provisioning.provider_health(clarion, name)
