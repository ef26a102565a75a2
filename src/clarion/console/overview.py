"""The Overview page's figures, from the same reads as the API: the funnel rollups (``GET
/v1/analytics/funnel``), the providers' health and breakers (``GET /v1/providers/{name}/health``), and the
outbox's depth (``/metrics``). Charts are geometry computed here and drawn as inline SVG by the template."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from clarion import bootstrap
from clarion.analytics import funnel
from clarion.console import queries
from clarion.domain import breaker
from clarion.store import outbox, records, rollups
from clarion.store import tables as t

BAR_WIDTH = 360  # px of the longest bar


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: int
    width: int  # px, proportional to the largest value of its chart


def bars(counts: dict[str, int]) -> list[Bar]:
    """A horizontal bar chart of ``counts``, largest first; a zero is drawn as no bar, not as a sliver."""
    top = max(counts.values(), default=0) or 1
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [Bar(label, value, round(BAR_WIDTH * value / top)) for label, value in ordered]


async def _report(clarion: bootstrap.Clarion, since: datetime, group_by: list[str]) -> dict[str, Any]:
    async with clarion.db.read() as conn:
        cells = await rollups.cells(
            conn, table=t.funnel_hourly, since=rollups.floor_hour(since), until=None, filters={}, group_by=group_by
        )
    return funnel.report(cells, group_by)


def _by(report: dict[str, Any], group: str, stage: str) -> dict[str, int]:
    return {str(g["key"][group] or "-"): int(g["stages"].get(stage, 0)) for g in report["groups"]}


async def _health(clarion: bootstrap.Clarion) -> list[dict[str, Any]]:
    configured = [row.name for row in await records.list_all(clarion.db, t.providers)]
    names = sorted({*clarion.providers.builtins, *configured})
    breakers, now = clarion.providers.breakers, clarion.providers.clock()
    out = []
    for name in names:
        view = await breakers.health(name, now) if breakers is not None else breaker.health(breaker.State(), 0.0)
        out.append({"provider": name, **view})
    return out


async def figures(clarion: bootstrap.Clarion, now: datetime) -> dict[str, Any]:
    """Today's and this week's (since Monday, UTC days) sends by channel, this week's funnel, today's failures by
    provider, each provider's health, the outbox's depth by lane and the age of the oldest urgent delivery
    waiting."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    week = today - timedelta(days=today.weekday())
    by_channel_today = await _report(clarion, today, ["channel"])
    by_channel_week = await _report(clarion, week, ["channel"])
    by_provider_today = await _report(clarion, today, ["provider"])
    stages = (await _report(clarion, week, []))["total"]["stages"]
    async with clarion.db.read() as conn:
        depth = await outbox.queue_depth(conn)
        oldest = await queries.oldest_urgent(conn, now)
    shown = ("requested", "sent", "delivered", "opened", "clicked", "converted")
    funnel_bars = {b.label: b for b in bars({s: stages.get(s, 0) for s in shown})}
    return {
        "today": bars(_by(by_channel_today, "channel", "sent")),
        "week": bars(_by(by_channel_week, "channel", "sent")),
        "funnel": [funnel_bars[s] for s in shown],
        "dropped": {s: stages.get(s, 0) for s in ("filtered", "deferred", "failed", "expired")},
        "failures": bars({k: v for k, v in _by(by_provider_today, "provider", "failed").items() if v}),
        "health": await _health(clarion),
        "depth": bars({str(lane): n for lane, n in sorted(depth.items())}),
        "queued": sum(depth.values()),
        "oldest_urgent_seconds": (now - oldest).total_seconds() if oldest is not None else None,
    }
