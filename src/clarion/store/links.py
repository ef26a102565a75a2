"""Short links in the store: the rows a delivery's links add at intake (``Finisher``), and the clicks that come
back (``record_click``).

A click is an outcome event on the delivery's timeline, like ``read`` for the inbox. The first click on a link
adds a ``clicked`` event (with the code, the target and the user agent) and moves the delivery's status to
``clicked`` from any status a click moves forward (``domain.receipts``: sent, delivered, read, and those a click
proves wrong: failed, undelivered, bounced); later clicks are counted on the link (``short_links.clicks``) and
leave the timeline alone, so a user tapping a link ten times gives one line, not ten. A delivery that is still
``queued`` or ``sending`` keeps its status: those rows belong to the outbox, whose completion would otherwise
overwrite or be confused by it; the event is recorded all the same. The message follows its furthest delivery.

A link's first click also fires the feedback rules on clicks (``pipeline.feedback_rules``) in the same
transaction; ``Click.retagged`` names the users they changed, for the caller to tell the segment index.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import links, model, receipts
from clarion.domain.policy.decision import Candidate
from clarion.pipeline import feedback_rules
from clarion.store import outbox, rollups
from clarion.store import tables as t

CLICKED = model.DeliveryStatus.CLICKED
#: the statuses a first click moves to ``clicked``
MOVABLE = tuple(str(s) for s in receipts.RANK if receipts.judge(s, receipts.Event.CLICKED).action == "move")
_USER_AGENT_MAX = 300


@dataclass(frozen=True, slots=True)
class Click:
    """A counted click: where to send the user, and how many clicks the link has had (this one included)."""

    target: str
    clicks: int
    delivery_id: str
    message_id: str
    retagged: tuple[str, ...] = ()


class Finisher:
    """The intake finisher (``pipeline.intake.Finisher``) that rewrites a delivery's URLs to short links and adds
    their ``short_links`` rows to the request's transaction, so a link exists exactly when its delivery does."""

    def __init__(self, shortener: links.Shortener) -> None:
        self.shortener = shortener
        # the codes of the request being finished, so that no two of its links share one (see ``_taken``)
        self._pending: list[dict[str, Any]] | None = None
        self._codes: set[str] = set()

    def __call__(
        self,
        candidate: Candidate,
        delivery_id: str,
        content: dict[str, Any],
        rows: dict[sa.Table, list[dict[str, Any]]],
    ) -> dict[str, Any]:
        pending = rows.setdefault(t.short_links, [])
        values = {
            "channel": candidate.channel.value,
            "template": candidate.template.key,
            "category": candidate.category.value,
        }
        content, made = self.shortener.rewrite(candidate.channel, content, values, self._taken(pending))
        for link in made:
            self._codes.add(link.code)
            pending.append(
                {
                    "code": link.code,
                    "delivery_id": delivery_id,
                    "message_id": candidate.message_id,
                    "user_id": candidate.user.user_id,
                    "channel": candidate.channel.value,
                    "url": link.target,
                    "clicks": 0,
                    "first_clicked_at": None,
                    "created_at": candidate.now,
                }
            )
        return content

    def _taken(self, pending: list[dict[str, Any]]) -> set[str]:
        """The codes already in ``pending``, kept as a set while the same request is being finished (its
        deliveries are finished one after another, with no await between them), rebuilt for a new one."""
        if pending is not self._pending:
            self._pending = pending
            self._codes = {row["code"] for row in pending}
        return self._codes


async def target(conn: AsyncConnection, code: str) -> str | None:
    """Where ``code`` leads, without counting anything (HEAD requests, link previewers)."""
    s = t.short_links
    return (await conn.execute(sa.select(s.c.url).where(s.c.code == code))).scalar_one_or_none()


async def record_click(
    conn: AsyncConnection, code: str, *, now: datetime, user_agent: str | None = None
) -> Click | None:
    """Count one click on ``code`` and, on its first, put it on the delivery's timeline (see the module
    docstring). Run it inside one write transaction. ``None`` for an unknown code."""
    s, d = t.short_links, t.deliveries
    row = (
        await conn.execute(
            s.update()
            .where(s.c.code == code)
            .values(
                clicks=s.c.clicks + 1,
                first_clicked_at=sa.func.coalesce(s.c.first_clicked_at, sa.literal(now, t.UTCDateTime())),
            )
            .returning(s.c.delivery_id, s.c.message_id, s.c.user_id, s.c.url, s.c.clicks)
        )
    ).first()
    if row is None:
        return None
    retagged: list[str] = []
    if row.clicks == 1:
        before = (await conn.execute(sa.select(d.c.status).where(d.c.id == row.delivery_id))).scalar()
        await conn.execute(
            d.update().where(d.c.id == row.delivery_id, d.c.status.in_(MOVABLE)).values(status=CLICKED, updated_at=now)
        )
        detail: dict[str, Any] = {"code": code, "url": row.url, "clicks": 1}
        implied = receipts.judge(before, receipts.Event.CLICKED).implied if before in MOVABLE else ()
        if implied:
            detail["implies"] = list(implied)  # clicked straight after sent: it was delivered (the funnel counts it)
        if user_agent:
            detail["user_agent"] = user_agent[:_USER_AGENT_MAX]
        await rollups.append(
            conn, [outbox.event_row(row.message_id, row.delivery_id, CLICKED, "short link opened", now, detail)]
        )
        await outbox.refresh_messages(conn, [row.message_id], now)
        fact = feedback_rules.Fact("click", row.user_id, row.message_id, link=row.url)
        retagged = await feedback_rules.fire(conn, [fact], now=now)
    return Click(row.url, row.clicks, row.delivery_id, row.message_id, tuple(retagged))
