"""Analytics: ``GET /v1/analytics/funnel`` — requested → filtered/deferred/expired → sent → delivered → opened →
clicked → converted → unsubscribed, with the brief's rates, read from the rollups the timeline keeps
(``store.rollups``), never by scanning deliveries; ``GET /v1/analytics/copy`` — the copy knowledge base: each
template version's copy per variant and channel with its sends, clicks and conversions from the same rollups,
ranked fairly (``analytics.copy_terms``), and the words that set the best apart. Reading needs any valid key."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, Field

from clarion.analytics import copy_terms, funnel
from clarion.api import deps, problems, views
from clarion.api.responses import JSON
from clarion.domain import errors, model, variants
from clarion.store import rollups, templates
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
    version: int | None = Query(default=None, ge=1, le=2**31 - 1),
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
) -> JSON:
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
    # built by funnel.report to the documented shape (its tests check it against ``Funnel``): sent as it is, not
    # validated again field by field (an hour-by-week answer has 168 groups of a dozen counts and five rates)
    return JSON({"since": _iso(since), "until": _iso(until), **answer})


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


# -- the copy knowledge base -----------------------------------------------------------------------------------

EXCERPT = 280  # characters of a copy shown in a row; its terms come from all of it


class Interval(views.View):
    rate: float = Field(description="per message sent (0 when none was)")
    low: float = Field(description="the Wilson 95 % interval's lower bound")
    high: float


class CopyRow(views.View):
    template: str
    version: int
    variant: str | None = Field(description="the A/B variant (null: the template's own content)")
    channel: model.Channel
    text: str = Field(description=f"the copy as written (template syntax kept), its first {EXCERPT} characters")
    sent: int
    clicked: int
    converted: int
    click_rate: Interval = Field(description="clicked / sent")
    conversion_rate: Interval = Field(description="converted / sent")
    click_rank: int | None = Field(description="1 is the best; null when not ranked (too few sends)")
    conversion_rank: int | None
    top: bool = Field(description="one of the top copies whose terms are compared with the rest")


class CopyTerm(views.View):
    term: str = Field(description="a word (Chinese segmented), or two adjacent English words")
    score: float = Field(description="the weighted log-odds z-score, top copies against the rest")
    top_count: int
    rest_count: int


class CopyKnowledge(views.View):
    rank_by: Literal["click", "conversion"]
    min_sends: int
    ranked: list[CopyRow] = Field(description="copies with at least min_sends sends, best first by rank_by")
    not_enough_data: list[CopyRow] = Field(description="copies with fewer sends: listed, never ranked")
    terms: list[CopyTerm] = Field(description="what the top copies say that the other ranked ones do not")


_COPY_GROUPS = ["template", "version", "variant", "channel"]


@router.get("/copy", response_model=CopyKnowledge, responses=problems.answers(422))
async def copy_knowledge(
    clarion: deps.Services,
    channel: model.Channel | None = None,
    category: model.Category | None = None,
    template: str | None = Query(default=None, max_length=128),
    rank_by: Literal["click", "conversion"] = Query(default="click", description="the rate that orders the copies"),
    min_sends: int = Query(default=100, ge=1, le=1_000_000, description="fewer sends than this: not ranked"),
) -> dict[str, Any]:
    """Every copy sent — a template version's content on a channel, per A/B variant — with its sends, clicks
    and conversions (all time, from the daily rollup) and both rates with their Wilson intervals, ranked by
    the lower bound so a small lucky sample does not win; and the words and phrases that distinguish the top
    third of the ranked copies from the rest (Chinese segmented, English words and bigrams). Shaped as examples
    for copy generation: each row carries its text."""
    given = {"channel": channel and channel.value, "category": category and category.value, "template_key": template}
    filters = {k: v for k, v in given.items() if v is not None}
    async with clarion.db.read() as conn:
        cells = await rollups.cells(
            conn, table=t.funnel_daily, since=None, until=None, filters=filters, group_by=_COPY_GROUPS
        )
        counts: dict[tuple[str, int, str, str], dict[str, int]] = {}
        for cell in cells:
            if cell.template and cell.channel and cell.stage in ("sent", "clicked", "converted"):
                key = (cell.template, int(cell.version), cell.variant, cell.channel)
                into = counts.setdefault(key, {"sent": 0, "clicked": 0, "converted": 0})
                into[cell.stage] += int(cell.n)
        keys = sorted(k for k, c in counts.items() if c["sent"])
        texts = await _copies(conn, keys)
    copies = [copy_terms.Copy(texts[k], **counts[k]) for k in keys]
    found = copy_terms.knowledge(copies, by=rank_by, min_sends=min_sends)
    click_rank = {int(r.key): n for n, r in enumerate(found.clicks.ranked, 1)}
    conversion_rank = {int(r.key): n for n, r in enumerate(found.conversions.ranked, 1)}
    top = set(found.top)

    def row(i: int) -> dict[str, Any]:
        name, version, variant, on = keys[i]
        c = copies[i]
        return {
            "template": name,
            "version": version,
            "variant": variant or None,
            "channel": on,
            "text": c.text[:EXCERPT],
            "sent": c.sent,
            "clicked": c.clicked,
            "converted": c.converted,
            "click_rate": _interval(c.clicked, c.sent),
            "conversion_rate": _interval(c.converted, c.sent),
            "click_rank": click_rank.get(i),
            "conversion_rank": conversion_rank.get(i),
            "top": i in top,
        }

    ranking = found.clicks if rank_by == "click" else found.conversions
    return {
        "rank_by": rank_by,
        "min_sends": min_sends,
        "ranked": [row(int(r.key)) for r in ranking.ranked],
        "not_enough_data": [row(int(r.key)) for r in ranking.not_enough_data],
        "terms": [
            {"term": x.term, "score": round(x.z, 4), "top_count": x.top_count, "rest_count": x.rest_count}
            for x in found.terms
        ],
    }


def _interval(successes: int, trials: int) -> dict[str, float]:
    low, high = copy_terms.wilson(successes, trials)
    return {"rate": successes / trials if trials else 0.0, "low": low, "high": high}


async def _copies(conn: Any, keys: list[tuple[str, int, str, str]]) -> dict[tuple[str, int, str, str], str]:
    """The copy of each (template, version, variant, channel) as its version was saved: the variant's content
    for the channel, else the template's; an empty content is the default it is adapted from. A template or
    version deleted since reads as no text."""
    rows = {key: await templates.template_rows(conn, key=key) for key in {k[0] for k in keys}}
    saved: dict[tuple[str, int], model.Template | None] = {}
    out = {}
    for key in keys:
        name, number, variant, channel = key
        if (name, number) not in saved:
            version = await templates.get_version(conn, name, number)
            found = rows[name]
            saved[name, number] = templates.template_at(found[0], version.body, number) if found and version else None
        template = saved[name, number]
        out[key] = _copy_of(template, model.Channel(channel), variant or None) if template else ""
    return out


def _copy_of(template: model.Template, channel: model.Channel, variant: str | None) -> str:
    chosen = variants.find(template, variant)
    content = chosen.channels.get(channel) if chosen is not None else None
    if content is None:
        content = template.channels.get(channel) or {}
    if not content:
        default = chosen.default if chosen is not None and chosen.default is not None else template.default
        content = default or {}
    return copy_terms.copy_text(content)
