"""``GET /v1/templates/{key}/experiment``: how a template's A/B variants are doing, and whether the sequential
rule (``analytics.experiments``) has decided — read from the funnel rollups, never from deliveries.

Exposures are a variant's deliveries sent; successes are its deliveries clicked (``click_rate``) or converted
(``conversion_rate``), so variants are compared per message handed over. Reading needs any valid key. The
verdict is shown, not acted on: the winner is not yet given 100 % of the traffic by itself."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import Field

from clarion.analytics import experiments
from clarion.api import deps, problems, views
from clarion.domain import errors
from clarion.store import rollups
from clarion.store import tables as t
from clarion.store import templates as template_store

router = APIRouter(prefix="/v1", tags=["templates"], dependencies=deps.AUTH)
_SUCCESS = {"click_rate": "clicked", "conversion_rate": "converted"}


class ArmView(views.View):
    name: str
    exposures: int = Field(description="deliveries of the variant sent")
    successes: int = Field(description="of them clicked (click_rate) or converted (conversion_rate)")
    rate: float
    low: float = Field(description="always-valid confidence sequence of the rate: lower bound")
    high: float
    p_value: float | None = Field(description="always-valid, Bonferroni-adjusted, against the best arm (null: it)")


class Experiment(views.View):
    template: str
    rule: dict[str, Any]
    state: Literal["collecting", "running", "winner", "no_winner_yet"]
    winner: str | None
    stated: str = Field(description="what the rule concluded, and with which error rate")
    arms: list[ArmView]


@router.get("/templates/{key}/experiment", response_model=Experiment, responses=problems.answers(404, 409, 422))
async def experiment(
    key: str,
    clarion: deps.Services,
    metric: Literal["click_rate", "conversion_rate"] = "click_rate",
    min_sample: int = Query(default=200, ge=1, le=100_000_000),
    alpha: float = Query(default=0.05, gt=0, le=0.5),
) -> dict[str, Any]:
    """Per variant: exposures, successes, the rate with its interval and p-value, and the rule's decision."""
    rule = experiments.Rule.from_json({"metric": metric, "min_sample": min_sample, "alpha": alpha})
    async with clarion.db.read() as conn:
        rows = await template_store.template_rows(conn, key=key)
        if not rows:
            raise errors.NotFound("template", key)
        variants = [v["name"] for v in rows[0].variants or ()]
        if len(variants) < 2:
            raise errors.Conflict(f"template {key!r} has no A/B variants", details={"field": "variants"})
        cells = await rollups.cells(
            conn, table=t.funnel_daily, since=None, until=None, filters={"template_key": key}, group_by=["variant"]
        )
    counts: dict[str, dict[str, int]] = {name: {} for name in variants}
    for cell in cells:
        if cell.variant in counts:
            counts[cell.variant][cell.stage] = counts[cell.variant].get(cell.stage, 0) + int(cell.n)
    success = _SUCCESS[metric]
    arms = [
        experiments.Arm(name, c.get("sent", 0), min(c.get(success, 0), c.get("sent", 0))) for name, c in counts.items()
    ]
    verdict = experiments.decide(arms, rule)
    return {
        "template": key,
        "rule": rule.to_json(),
        "state": verdict.state,
        "winner": verdict.winner,
        "stated": verdict.stated,
        "arms": [
            {
                "name": a.name,
                "exposures": a.exposures,
                "successes": a.successes,
                "rate": a.rate,
                "low": a.low,
                "high": a.high,
                "p_value": a.p_value,
            }
            for a in verdict.arms
        ],
    }
