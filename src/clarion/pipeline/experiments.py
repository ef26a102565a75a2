"""A/B experiments observed, decided and applied.

A template's ``experiment`` names the rule (``analytics.experiments``: an always-valid sequential test, so looking
every few minutes is safe). ``observe`` counts each variant's exposures (deliveries sent) and successes (clicked,
or converted) from the funnel rollups and asks the rule. ``apply_winners`` — the experiment loop, every
``experiment_interval_seconds`` — looks at every template whose experiment has ``auto_apply``, and when the rule
names a winner it gives the winner 100 % of the traffic: a new version of the live one with only the weights
changed (so no new review, ``approval.weights_only``), written with an ``experiment.winner`` audit entry holding
the weights before, the verdict and its counts. ``revert`` puts those weights back in another such version and
turns ``auto_apply`` off, so the loop does not decide again until someone turns it on.

Each message records the variant its user got (``messages.variant``), so who saw what is on every timeline. The
variant a user gets is a stable hash of (template, user) over the weights (``domain.variants``): at 100/0 everyone
gets the winner, and reverting to the old weights puts every user back on the variant they had.

A template is left alone while a newer version than the live one awaits review: a weights-only version written on
top of the live one would outrank the draft, which could then never go live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.analytics import experiments
from clarion.domain import approval, errors
from clarion.store import rollups
from clarion.store import tables as t
from clarion.store import templates as template_store
from clarion.store.db import Database

log = logging.getLogger(__name__)

T = t.templates
#: who the audit log and the versions name for what the loop does
ACTOR = "clarion:experiment"
SUCCESS = {"click_rate": "clicked", "conversion_rate": "converted"}
WINNER_WEIGHT = 100


def rule_of(experiment: Mapping[str, Any] | None, **overrides: Any) -> experiments.Rule:
    """The decision rule of a template's stored ``experiment`` (click rate, 200 a variant, 5 % when it has none),
    with ``overrides`` (a query's) that are not None taking precedence."""
    stored = {k: v for k, v in (experiment or {}).items() if k in experiments.RULE_FIELDS}
    given = {k: v for k, v in overrides.items() if v is not None}
    return experiments.Rule.from_json({"metric": "click_rate", **stored, **given})


async def observe(
    conn: AsyncConnection, key: str, names: Sequence[str], rule: experiments.Rule, *, run: str | None = None
) -> experiments.Verdict:
    """The rule's verdict on the variants ``names`` of template ``key``, counted from the daily rollups over the
    template's whole life (or a campaign ``run``'s messages alone): exposures are sends, successes clicks or
    conversions (never more than the sends)."""
    filters = {"template_key": key} if run is None else {"template_key": key, "campaign_run": run}
    cells = await rollups.cells(
        conn, table=t.funnel_daily, since=None, until=None, filters=filters, group_by=["variant"]
    )
    counts: dict[str, dict[str, int]] = {name: {} for name in names}
    for cell in cells:
        if cell.variant in counts:
            counts[cell.variant][cell.stage] = counts[cell.variant].get(cell.stage, 0) + int(cell.n)
    success = SUCCESS[rule.metric]
    arms = [experiments.Arm(n, c.get("sent", 0), min(c.get(success, 0), c.get("sent", 0))) for n, c in counts.items()]
    return experiments.decide(arms, rule)


def competing(variants: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """The variants still being tested: those with a positive weight (a variant at 0 gets nobody)."""
    return [v["name"] for v in variants or () if v.get("weight", 0) > 0]


@dataclass(frozen=True, slots=True)
class Applied:
    template: str
    winner: str
    version: int
    stated: str


async def applied_winner(conn: AsyncConnection, key: str) -> Any | None:
    """The ``experiment.winner`` audit entry in force for template ``key``: the latest experiment entry, when it
    is a winner (a revert after it means none is)."""
    for entry in await template_store.audit_entries(conn, subject=template_store.subject(key), limit=1000):
        if entry.action == "experiment.winner":
            return entry
        if entry.action == "experiment.revert":
            return None
    return None


async def _live_body(conn: AsyncConnection, key: str) -> tuple[Any, dict[str, Any]] | None:
    """The template's row (locked) and its live version's body, when the live version is also its latest."""
    row = (await conn.execute(sa.select(T).where(T.c.key == key).with_for_update())).first()
    if row is None or row.live_version is None or row.live_version != row.version:
        return None
    return row, dict((await template_store.get_version(conn, key, row.live_version)).body)


def _weighted(variants: Sequence[Mapping[str, Any]], weights: Mapping[str, int]) -> list[dict[str, Any]]:
    return [{**v, "weight": weights.get(v["name"], 0)} for v in variants]


async def _save(conn: AsyncConnection, key: str, body: dict[str, Any], *, author: str, now: datetime) -> int:
    settings = await template_store.load_settings(conn)
    saved = await template_store.save(conn, key, body, author=author, settings=settings, now=now)
    if saved.status is not approval.Status.APPROVED:  # only the weights and the experiment differ: never happens
        raise errors.Conflict(f"template {key!r}: the new weights would need a review", details={"field": "variants"})
    return saved.version


async def apply_winner(
    conn: AsyncConnection, key: str, version: int, verdict: experiments.Verdict, now: datetime
) -> int | None:
    """Give ``verdict.winner`` 100 % of template ``key``'s traffic, if the template is still at ``version`` (the
    one observed); the new version's number, or None when it changed meanwhile."""
    found = await _live_body(conn, key)
    if found is None or found[0].version != version or verdict.winner is None:
        return None
    row, body = found
    before = {v["name"]: v.get("weight", 0) for v in body["variants"]}
    body["variants"] = _weighted(body["variants"], {verdict.winner: WINNER_WEIGHT})
    number = await _save(conn, key, body, author=ACTOR, now=now)
    await template_store.audit(
        conn,
        actor=ACTOR,
        action="experiment.winner",
        subject=template_store.subject(key, number),
        at=now,
        detail={
            "winner": verdict.winner,
            "from_version": row.version,
            "weights_before": before,
            "stated": verdict.stated,
            "arms": [{"name": a.name, "exposures": a.exposures, "successes": a.successes} for a in verdict.arms],
        },
    )
    return number


async def revert(conn: AsyncConnection, key: str, *, actor: str, now: datetime) -> int:
    """Put back the weights the applied winner replaced, in a new version with ``auto_apply`` off; its number.
    ``Conflict`` when no winner is in force, when a version awaits review, or when the variants were renamed."""
    entry = await applied_winner(conn, key)
    if entry is None:
        raise errors.Conflict(f"template {key!r} has no experiment winner to revert", details={"field": "experiment"})
    found = await _live_body(conn, key)
    if found is None:
        raise errors.Conflict(
            f"template {key!r} has a version awaiting review; revert after it is approved or rejected",
            details={"field": "version"},
        )
    _, body = found
    before: dict[str, int] = entry.detail["weights_before"]
    if sorted(v["name"] for v in body["variants"]) != sorted(before):
        raise errors.Conflict(
            f"template {key!r}: its variants changed since the winner was applied; set the weights with a PUT",
            details={"field": "variants"},
        )
    body["variants"] = _weighted(body["variants"], before)
    body["experiment"] = {**(body.get("experiment") or {}), "auto_apply": False}
    number = await _save(conn, key, body, author=actor, now=now)
    await template_store.audit(
        conn,
        actor=actor,
        action="experiment.revert",
        subject=template_store.subject(key, number),
        at=now,
        detail={"winner": entry.detail["winner"], "weights": before, "reverted_entry": entry.id},
    )
    return number


async def apply_winners(db: Database, now: datetime | None = None) -> list[Applied]:
    """One pass of the experiment loop over every template whose experiment has ``auto_apply``: each decided
    winner applied (see the module's docstring), in a transaction of its own."""
    now = now or datetime.now(UTC)
    async with db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(T.c.key, T.c.version, T.c.live_version, T.c.variants, T.c.experiment).where(
                    T.c.experiment.is_not(None)
                )
            )
        ).all()
    done: list[Applied] = []
    for row in rows:
        names = competing(row.variants)
        if not (row.experiment or {}).get("auto_apply") or len(names) < 2 or row.live_version != row.version:
            continue
        async with db.read() as conn:
            verdict = await observe(conn, row.key, names, rule_of(row.experiment))
        if verdict.state != "winner":
            continue

        async def job(
            conn: AsyncConnection, key: str = row.key, version: int = row.version, v: Any = verdict
        ) -> int | None:
            return await apply_winner(conn, key, version, v, now)

        number = await db.write(job)
        if number is not None:
            log.info("experiment %s: %s", row.key, verdict.stated)
            done.append(Applied(row.key, verdict.winner or "", number, verdict.stated))
    return done


async def run(db: Database, invalidate: Callable[[], None], stop: asyncio.Event, *, interval: float) -> None:
    """The experiment loop: ``apply_winners`` every ``interval`` seconds until ``stop``; ``invalidate`` tells the
    process's caches when a winner was applied."""
    while not stop.is_set():
        try:
            if await apply_winners(db):
                invalidate()
        except Exception:  # a pass that fails is logged and tried again next time; the loop never dies
            log.exception("experiment pass failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
