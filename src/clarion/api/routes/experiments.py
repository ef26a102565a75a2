"""``GET /v1/templates/{key}/experiment``: how a template's A/B variants are doing, and whether the sequential
rule (``analytics.experiments``) has decided — read from the funnel rollups, never from deliveries; and
``POST /v1/templates/{key}/experiment:revert``, which undoes a winner the experiment loop applied.

Exposures are a variant's deliveries sent; successes are its deliveries clicked (``click_rate``) or converted
(``conversion_rate``), so variants are compared per message handed over. The rule is the template's
``experiment`` (query parameters override it for a look). Reading needs any valid key; reverting ``editor`` or
``admin``. With ``auto_apply`` the experiment loop gives a decided winner 100 % of the traffic
(``pipeline.experiments``); ``applied`` shows it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.api import deps, problems, views
from clarion.api.routes.templates import KeyPath
from clarion.domain import approval, errors
from clarion.pipeline import experiments as running
from clarion.store import templates as template_store

router = APIRouter(prefix="/v1", tags=["templates"], dependencies=deps.AUTH)


class ArmView(views.View):
    name: str
    exposures: int = Field(description="deliveries of the variant sent")
    successes: int = Field(description="of them clicked (click_rate) or converted (conversion_rate)")
    rate: float
    low: float = Field(description="always-valid confidence sequence of the rate: lower bound")
    high: float
    p_value: float | None = Field(description="always-valid, Bonferroni-adjusted, against the best arm (null: it)")


class AppliedView(views.View):
    winner: str
    version: int = Field(description="the version that gave the winner 100 % of the traffic")
    at: views.Timestamp
    stated: str = Field(description="the verdict as it was when applied")


class Experiment(views.View):
    template: str
    rule: dict[str, Any]
    auto_apply: bool = Field(description="whether the experiment loop applies a winner by itself")
    state: Literal["collecting", "running", "winner", "no_winner_yet"]
    winner: str | None
    stated: str = Field(description="what the rule concluded, and with which error rate")
    applied: AppliedView | None = Field(description="the winner in force, applied by the experiment loop")
    arms: list[ArmView]


class Reverted(views.View):
    template: str
    version: int = Field(description="the new version, with the weights from before the winner")
    weights: dict[str, int]


@router.get("/templates/{key}/experiment", response_model=Experiment, responses=problems.answers(404, 409, 422))
async def experiment(
    clarion: deps.Services,
    key: str = KeyPath,
    metric: Literal["click_rate", "conversion_rate"] | None = None,
    min_sample: int | None = Query(default=None, ge=1, le=100_000_000),
    alpha: float | None = Query(default=None, gt=0, le=0.5),
) -> dict[str, Any]:
    """Per variant still competing (weight above 0; all of them once a winner is applied): exposures,
    successes, the rate with its interval and p-value, and the rule's decision."""
    async with clarion.db.read() as conn:
        rows = await template_store.template_rows(conn, key=key)
        if not rows:
            raise errors.NotFound("template", key)
        row = rows[0]
        variants = [v["name"] for v in row.variants or ()]
        if len(variants) < 2:
            raise errors.Conflict(f"template {key!r} has no A/B variants", details={"field": "variants"})
        rule = running.rule_of(row.experiment, metric=metric, min_sample=min_sample, alpha=alpha)
        entry = await running.applied_winner(conn, key)
        names = variants if entry is not None else (running.competing(row.variants) or variants)
        if len(names) < 2:
            names = variants
        verdict = await running.observe(conn, key, names, rule)
    applied = None
    if entry is not None:
        applied = {
            "winner": entry.detail["winner"],
            "version": int(entry.subject.rsplit("@", 1)[1]),
            "at": entry.at.isoformat(),
            "stated": entry.detail["stated"],
        }
    return {
        "template": key,
        "rule": rule.to_json(),
        "auto_apply": bool((row.experiment or {}).get("auto_apply", False)),
        "state": verdict.state,
        "winner": verdict.winner,
        "stated": verdict.stated,
        "applied": applied,
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


@router.post("/templates/{key}/experiment:revert", response_model=Reverted, responses=problems.answers(403, 404, 409))
async def revert(clarion: deps.Services, caller: deps.Caller, key: str = KeyPath) -> dict[str, Any]:
    """Undo the winner the experiment loop applied: a new version with the weights from before it, and the
    experiment's ``auto_apply`` off (turn it on again with a PUT). Audited as ``experiment.revert``. 409 when no
    winner is in force, when a version awaits review, or when the variants were renamed since."""
    approval.require(caller.roles, approval.EDIT)
    now = datetime.now(UTC)

    async def job(conn: AsyncConnection) -> tuple[int, dict[str, int]]:
        if not await template_store.template_rows(conn, key=key):
            raise errors.NotFound("template", key)
        number = await running.revert(conn, key, actor=caller.name, now=now)
        entry = (await template_store.audit_entries(conn, subject=template_store.subject(key, number), limit=1))[0]
        return number, entry.detail["weights"]

    number, weights = await clarion.db.write(job)
    clarion.invalidate()
    return {"template": key, "version": number, "weights": weights}
