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
from clarion.domain import approval, breaker, errors
from clarion.store import records
from clarion.store import tables as t

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
    row = await records.get_one(clarion.db, t.providers, name)
    if name not in clarion.providers.builtins and row is None:
        raise errors.NotFound("provider", name)
    breakers = clarion.providers.breakers
    thresholds, rate = await clarion.providers.limits(name)
    view = (
        await breakers.health(name, clarion.providers.clock())
        if breakers is not None
        else breaker.health(breaker.State(), 0.0)
    )
    view["breaker"] = {
        **view["breaker"],  # type: ignore[dict-item]
        "shared": bool(getattr(breakers, "shared", False)),
        "consecutive": thresholds.consecutive,
        "error_rate": thresholds.error_rate,
        "min_attempts": thresholds.min_attempts,
        "cool_down": thresholds.cool_down,
    }
    own = row is not None and (row.config or {}).get("rate_limit") is not None
    source = "none" if rate.unlimited else "account" if own else "kind"
    view["rate_limit"] = {"per_second": rate.per_second, "per_minute": rate.per_minute, "source": source}
    return {"provider": name, **view}
