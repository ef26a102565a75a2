"""A campaign's A/B test (``Definition.ab``): test on a cohort, then send the rest the winner.

When a run starts, its frozen audience is put in a random order that is stable for the run (a hash of run and
user), so the first ``test_size`` positions are a random cohort. The runner sends the cohort with the template's
variants split by their weights, as any send. Then it waits: each look asks the sequential rule
(``analytics.experiments``, always valid however often it looks) with the counts of this run alone, from the
funnel rollups. When the rule names a winner, or ``decide_after_hours`` after the cohort was sent, the rest of
the audience gets one variant: the winner, or at the deadline the variant with the best rate so far — which is
said to be just that, not a tested result. The decision is kept in the run's counts (``ab``) and in the audit log.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.analytics import experiments
from clarion.campaigns.definition import AB
from clarion.domain import model
from clarion.pipeline import experiments as observed


def shuffled(run_id: str, audience: list[str]) -> list[str]:
    """The audience in the run's own random order: the test cohort is its head."""
    return sorted(audience, key=lambda u: hashlib.sha256(f"{run_id}\x00{u}".encode()).digest()[:8])


def competing(template: model.Template) -> list[str]:
    return [v.name for v in template.variants if v.weight > 0]


def winner_only(template: model.Template, name: str) -> model.Template:
    """``template`` with every user given the variant ``name``."""
    chosen = tuple(replace(v, weight=1 if v.name == name else 0) for v in template.variants)
    return replace(template, variants=chosen)


def testing(size: int) -> dict[str, Any]:
    """The run's ``ab`` state while its cohort is being sent."""
    return {"state": "testing", "test_size": size}


def sent(state: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The state once the cohort's last batch is written: the wait for a decision starts."""
    return {**state, "state": "deciding", "test_sent_at": now.isoformat()}


async def decide(
    conn: AsyncConnection, run_id: str, ab: AB, template: model.Template, state: dict[str, Any], now: datetime
) -> dict[str, Any] | None:
    """The decision for the rest of the audience, or None to keep waiting."""
    names = competing(template)
    verdict = await observed.observe(conn, template.key, names, ab.rule(), run=run_id)
    if verdict.state == "winner" and verdict.winner is not None:
        return _decided(state, verdict, verdict.winner, "rule", now)
    deadline = datetime.fromisoformat(state["test_sent_at"]) + timedelta(hours=ab.decide_after_hours)
    if now < deadline:
        return None
    arms = [experiments.Arm(a.name, a.exposures, a.successes) for a in verdict.arms]
    final = experiments.decide(arms, ab.rule(), final=True)
    best = experiments.best_so_far(arms)
    if final.state != "no_winner_yet":  # still collecting at the deadline: say what was known
        rate = next(a.rate for a in arms if a.name == best)
        words = experiments.METRIC_WORDS[ab.metric]
        stated = f"No winner at the deadline: {final.stated} {best} has the highest {words} so far ({rate:.1%}), "
        final = replace(final, stated=stated + "which is not a tested result.")
    return _decided(state, final, best, "deadline", now)


def _decided(
    state: dict[str, Any], verdict: experiments.Verdict, winner: str, by: str, now: datetime
) -> dict[str, Any]:
    return {
        **state,
        "state": "decided",
        "winner": winner,
        "by": by,  # rule: a tested winner; deadline: the best so far, not a tested result
        "stated": verdict.stated,
        "decided_at": now.isoformat(),
        "arms": [{"name": a.name, "exposures": a.exposures, "successes": a.successes} for a in verdict.arms],
    }
