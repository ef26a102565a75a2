"""Conversions: a tracked event that is a template's goal converts the user's most recent eligible message of it.

A template's ``goal`` — ``{"event": "coupon.claimed", "within_hours": 72, "attribution": "click"}`` — says which
event counts, how long after the message, and after what: a click on one of its short links (``click``), or its
hand-over to the provider (``delivery``: sent, or any later status short of undelivered or bounced). The event
converts the most recent such delivery before it, once per message: ``converted`` goes on that delivery's timeline
with the event, its time and its ``properties.amount`` (the revenue the funnel sums), in the same transaction as
the event itself. An event that no message led to converts nothing; a second goal event for a message that
already converted is kept as an event and counted no further.

The same transaction fires the feedback rules on conversions (``pipeline.feedback_rules``): each event is a
``convert`` fact, of the message it converted or, when it converted none, of no message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from clarion.pipeline import feedback_rules
from clarion.store import outbox, rollups
from clarion.store import tables as t
from clarion.store.bulk import Event
from clarion.store.driver import Conn, fetch

_E, _D, _M, _T, _C = t.delivery_events, t.deliveries, t.messages, t.templates, t.campaigns
#: how long after a click a campaign's goal event converts the campaign's message
CAMPAIGN_WINDOW = timedelta(hours=72)
CONVERTED = "converted"
_NOT_REACHED = ("failed", "undelivered", "bounced", "filtered", "expired", "cancelled", "deferred", "queued")


@dataclass(frozen=True, slots=True)
class Goal:
    """What converts the messages of a template (``scope`` "template") or of a campaign ("campaign": its
    ``goal`` names the event; 72 hours after a click)."""

    key: str
    event: str
    within: timedelta
    attribution: str  # click | delivery
    scope: str = "template"

    @classmethod
    def of(cls, key: str, goal: Any) -> Goal | None:
        if not isinstance(goal, dict) or not isinstance(goal.get("event"), str):
            return None
        hours = goal.get("within_hours", 72)
        return cls(key, goal["event"], timedelta(hours=hours), goal.get("attribution", "click"))

    def counts(self, touch: Touch) -> bool:
        """Whether a touch of this kind is one this goal converts."""
        return (touch.template_key if self.scope == "template" else touch.campaign_key) == self.key


@dataclass(frozen=True, slots=True)
class Touch:
    """A moment a message reached the user, which a later goal event may be attributed to."""

    delivery_id: str
    message_id: str
    user_id: str
    template_key: str
    campaign_key: str | None
    at: datetime


async def convert(conn: Conn, events: Sequence[Event], *, retagged: set[str] | None = None) -> int:
    """Record the conversions ``events`` make and fire the feedback rules on them, in the caller's transaction;
    returns how many conversions. The users the rules changed are added to ``retagged`` when it is given."""
    rows, facts = await _conversions(conn, events)
    await rollups.append(conn, rows)
    changed = await feedback_rules.fire(conn, facts, now=datetime.now(UTC))
    if retagged is not None:
        retagged.update(changed)
    return len(rows)


async def _conversions(conn: Conn, events: Sequence[Event]) -> tuple[list[dict[str, Any]], list[feedback_rules.Fact]]:
    """The timeline rows of the conversions ``events`` make, and each event as a fact for the feedback rules."""
    facts = {id(e): feedback_rules.Fact("convert", e.user_id, event=e.event) for e in events}
    goals = await _goals(conn, {e.event for e in events})
    relevant = [e for e in events if e.event in goals]
    touches = await _touches(conn, relevant, goals) if relevant else []
    if not touches:
        return [], list(facts.values())
    done = await _converted(conn, {touch.message_id for touch in touches})
    by_user: dict[str, list[Touch]] = {}
    for each in touches:
        by_user.setdefault(each.user_id, []).append(each)
    rows = []
    for event in sorted(relevant, key=lambda e: e.at):
        touch = _attributed(event, goals[event.event], by_user.get(event.user_id, []), done)
        if touch is None:
            continue
        done.add(touch.message_id)
        rows.append(_row(event, touch, goals[event.event]))
        facts[id(event)] = feedback_rules.Fact(
            "convert", event.user_id, touch.message_id, touch.template_key, touch.campaign_key, event.event
        )
    return rows, list(facts.values())


async def _goals(conn: Conn, names: set[str]) -> dict[str, list[Goal]]:
    """The templates and campaigns whose goal is one of ``names``, by event name."""
    out: dict[str, list[Goal]] = {}
    wanted = sorted(names)
    templates = sa.select(_T.c.key, _T.c.goal).where(_T.c.goal["event"].as_string().in_(wanted))
    for row in await fetch(conn, templates):
        goal = Goal.of(row.key, row.goal)
        if goal is not None and goal.event in names:
            out.setdefault(goal.event, []).append(goal)
    event = _C.c.definition["goal"].as_string()
    for row in await fetch(conn, sa.select(_C.c.key, event.label("event")).where(event.in_(wanted))):
        out.setdefault(row.event, []).append(Goal(row.key, row.event, CAMPAIGN_WINDOW, "click", "campaign"))
    return out


async def _touches(conn: Conn, events: Sequence[Event], goals: dict[str, list[Goal]]) -> list[Touch]:
    """The clicks and hand-overs of the goals' templates to the events' users, within the widest window."""
    users = sorted({e.user_id for e in events})
    earliest = min(e.at for e in events) - max(g.within for gs in goals.values() for g in gs)
    latest = max(e.at for e in events)
    every = [g for gs in goals.values() for g in gs]
    by_click = sorted({g.key for g in every if g.attribution == "click" and g.scope == "template"})
    by_delivery = sorted({g.key for g in every if g.attribution == "delivery" and g.scope == "template"})
    campaigns = sorted({g.key for g in every if g.scope == "campaign"})  # by click
    touches: list[Touch] = []
    for chunk in range(0, len(users), rollups.CHUNK):
        some = users[chunk : chunk + rollups.CHUNK]
        if by_click or campaigns:
            query = (
                sa.select(
                    _E.c.delivery_id, _E.c.message_id, _M.c.user_id, _M.c.template_key, _M.c.campaign_key, _E.c.at
                )
                .join(_M, _M.c.id == _E.c.message_id)
                .where(_M.c.user_id.in_(some), _E.c.status == "clicked")
                .where(sa.or_(_M.c.template_key.in_(by_click), _M.c.campaign_key.in_(campaigns)))
                .where(_E.c.at >= earliest, _E.c.at <= latest)
            )
            touches += [Touch(*row) for row in await fetch(conn, query)]
        if by_delivery:
            query = (
                sa.select(_D.c.id, _D.c.message_id, _D.c.user_id, _M.c.template_key, _M.c.campaign_key, _D.c.sent_at)
                .join(_M, _M.c.id == _D.c.message_id)
                .where(_D.c.user_id.in_(some), _M.c.template_key.in_(by_delivery), _D.c.status.not_in(_NOT_REACHED))
                .where(_D.c.sent_at >= earliest, _D.c.sent_at <= latest)
            )
            touches += [Touch(*row) for row in await fetch(conn, query)]
    return touches


async def _converted(conn: Conn, message_ids: set[str]) -> set[str]:
    out: set[str] = set()
    ids = sorted(message_ids)
    for i in range(0, len(ids), rollups.CHUNK):
        query = sa.select(_E.c.message_id).where(
            _E.c.message_id.in_(ids[i : i + rollups.CHUNK]), _E.c.status == CONVERTED
        )
        out.update(row.message_id for row in await fetch(conn, query))
    return out


def _attributed(event: Event, goals: list[Goal], touches: list[Touch], done: set[str]) -> Touch | None:
    """The most recent of the user's ``touches`` before ``event`` that one of its goals counts, of a message not
    yet converted."""
    best: Touch | None = None
    for touch in touches:
        if touch.message_id in done or touch.at > event.at:
            continue
        goal = _goal_of(goals, touch)
        if goal is None or event.at - touch.at > goal.within:
            continue
        if best is None or touch.at > best.at:
            best = touch
    return best


def _goal_of(goals: list[Goal], touch: Touch) -> Goal | None:
    """The goal that counts ``touch``: its template's, else its campaign's."""
    return next((g for g in goals if g.scope == "template" and g.counts(touch)), None) or next(
        (g for g in goals if g.scope == "campaign" and g.counts(touch)), None
    )


def _row(event: Event, touch: Touch, goals: list[Goal]) -> dict[str, Any]:
    goal = _goal_of(goals, touch)
    assert goal is not None  # ``_attributed`` chose the touch for one
    detail: dict[str, Any] = {"event": event.event, "attribution": goal.attribution, "touched_at": touch.at.isoformat()}
    if goal.scope == "campaign":
        detail["campaign"] = goal.key
    amount = (event.properties or {}).get("amount")
    if isinstance(amount, int | float) and not isinstance(amount, bool):
        detail["amount"] = amount
    hours = int(goal.within.total_seconds() // 3600)
    after = "its click" if goal.attribution == "click" else "its delivery"
    reason = f"goal {event.event} within {hours} h of {after}"
    return outbox.event_row(touch.message_id, touch.delivery_id, CONVERTED, reason, event.at, detail)
