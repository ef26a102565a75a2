"""Analytics: ``GET /v1/analytics/funnel`` — requested → filtered/deferred/expired → sent → delivered → opened →
clicked → converted → unsubscribed, with the brief's rates, read from the rollups the timeline keeps
(``store.rollups``), never by scanning deliveries. Reading needs any valid key."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, Field

from clarion.analytics import funnel
from clarion.api import deps, problems, views
from clarion.domain import errors, model
from clarion.store import rollups
from clarion.store import tables as t

router = APIRouter(prefix="/v1/analytics", tags=["analytics"], dependencies=deps.AUTH)


class Rate(views.View):
    rate: float | None = Field(description="numerator / denominator; null when the denominator is 0")
    numerator: int
    denominator: int


class FunnelCell(views.View):
    stages: dict[str, int] = Field(description=f"count at each stage: {', '.join(funnel.STAGES)}")
    filtered_by: dict[str, int] = Field(description="the filtered, by the policy that decided")
    deferred_by: dict[str, int] = Field(description="the deferred, by the policy that decided")
    revenue: float = Field(description="the sum of the conversions' amounts (properties.amount)")
    rates: dict[str, Rate] = Field(
        description="delivery_rate = delivered/sent, open_rate = opened/delivered, click_rate = clicked/delivered, "
        "conversion_rate = converted/clicked, unsubscribe_rate = unsubscribed/delivered"
    )


class FunnelGroup(FunnelCell):
    key: dict[str, Any] = Field(description="the group's value of each group_by dimension (null: none)")


class Funnel(views.View):
    since: views.Timestamp | None
    until: views.Timestamp | None
    group_by: list[str]
    groups: list[FunnelGroup]
    total: FunnelCell


_FILTERS = {
    "template": "template_key",
    "version": "template_version",
    "variant": "variant",
    "campaign": "campaign_key",
    "run": "campaign_run",
    "channel": "channel",
    "provider": "provider",
    "department": "department",
    "category": "category",
}


@router.get("/funnel", response_model=Funnel, responses=problems.answers(422))
async def funnel_report(
    clarion: deps.Services,
    template: str | None = Query(default=None, max_length=128),
    version: int | None = Query(default=None, ge=1),
    variant: str | None = Query(default=None, max_length=64),
    campaign: str | None = Query(default=None, max_length=128),
    run: str | None = Query(default=None, max_length=32, description="a campaign run's id"),
    channel: model.Channel | None = None,
    provider: str | None = Query(default=None, max_length=128),
    department: str | None = Query(default=None, max_length=100),
    category: model.Category | None = None,
    since: AwareDatetime | None = Query(default=None, description="from this time (counted by the hour it is in)"),
    until: AwareDatetime | None = Query(default=None, description="before this time"),
    group_by: list[str] | None = Query(
        default=None, description=f"one or two of {'|'.join(funnel.GROUPS)} (repeated or comma separated)"
    ),
) -> dict[str, Any]:
    """The funnel over the filters and time range, per group and in total. Counts are exact: each delivery is
    counted once at each stage it reached (``requested`` counts messages), in the hour of the event that took it
    there; ``since``/``until`` select whole hours (an hour counts when it starts in the range)."""
    groups = _group_by(group_by)
    if since is not None and until is not None and since >= until:
        raise errors.InvalidInput("until: must come after since", details={"field": "until"})
    given = {
        "template": template,
        "version": version,
        "variant": variant,
        "campaign": campaign,
        "run": run,
        "channel": channel.value if channel else None,
        "provider": provider,
        "department": department,
        "category": category.value if category else None,
    }
    filters = {_FILTERS[k]: v for k, v in given.items() if v is not None}
    table = t.funnel_daily if _by_day(groups, since, until) else t.funnel_hourly
    async with clarion.db.read() as conn:
        # hourly cells grouped by day are merged by ``funnel.report`` (a range of part days reads hours)
        cells = await rollups.cells(
            conn, table=table, since=since and rollups.floor_hour(since), until=until, filters=filters, group_by=groups
        )
    answer = funnel.report(cells, groups)
    return {"since": _iso(since), "until": _iso(until), **answer}


def _group_by(values: list[str] | None) -> list[str]:
    groups = [g.strip() for v in values or () for g in v.split(",") if g.strip()]
    unknown = [g for g in groups if g not in funnel.GROUPS]
    if unknown:
        raise errors.InvalidInput(
            f"group_by: {unknown[0]!r} is not one of {', '.join(funnel.GROUPS)}", details={"field": "group_by"}
        )
    if len(groups) > 2 or len(set(groups)) != len(groups):
        raise errors.InvalidInput("group_by: one or two different dimensions", details={"field": "group_by"})
    if {"day", "hour"} <= set(groups):
        raise errors.InvalidInput("group_by: day or hour, not both", details={"field": "group_by"})
    return groups


def _by_day(groups: list[str], since: datetime | None, until: datetime | None) -> bool:
    """The daily rollup answers when nothing asks for hours: no hour grouping, and a range of whole UTC days."""
    if "hour" in groups:
        return False
    return all(at is None or rollups.floor_day(at) == at for at in (since, until))


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()
