"""Deliveries seen across users: the dead letters (failed, undelivered, expired) an operator lists and requeues,
and the rows a re-send copies. SQL in, rows out; what to do with them is the callers'.

Dead letters are listed newest first by id (ids are time-ordered, see ``domain.ids``), one query per status
merged in memory, so that an index on (status, id) — which the schema does not have yet — serves each page by
a range scan; without it each status is found through the claim index (status, lane, run_at) and sorted."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import model
from clarion.store import outbox, rollups
from clarion.store import tables as t
from clarion.store.db import executemany

S = model.DeliveryStatus
DEAD = (S.FAILED, S.UNDELIVERED, S.EXPIRED)
D, M = t.deliveries, t.messages


@dataclass(frozen=True, slots=True)
class Filter:
    """Which dead letters: by status (all three when empty), channel, provider, template, and when the message was
    accepted (``since`` included, ``until`` excluded)."""

    statuses: tuple[model.DeliveryStatus, ...] = DEAD
    channel: str | None = None
    provider: str | None = None
    template: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        shown = {
            "status": [s.value for s in self.statuses],
            "channel": self.channel,
            "provider": self.provider,
            "template": self.template,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }
        return {k: v for k, v in shown.items() if v is not None}

    def where(self, status: model.DeliveryStatus) -> list[Any]:
        clauses: list[Any] = [D.c.status == status.value]
        if self.channel is not None:
            clauses.append(D.c.channel == self.channel)
        if self.provider is not None:
            clauses.append(D.c.provider == self.provider)
        if self.template is not None:
            clauses.append(M.c.template_key == self.template)
        if self.since is not None:
            clauses.append(D.c.created_at >= self.since)
        if self.until is not None:
            clauses.append(D.c.created_at < self.until)
        return clauses


_LISTED = sa.select(
    D.c.id,
    D.c.message_id,
    D.c.user_id,
    M.c.template_key,
    D.c.channel,
    D.c.provider,
    D.c.status,
    D.c.last_error,
    D.c.attempts,
    D.c.created_at,
    D.c.updated_at,
    D.c.sent_at,
    D.c.expires_at,
).select_from(D.join(M, M.c.id == D.c.message_id))


async def dead_letters(conn: AsyncConnection, which: Filter, *, limit: int, before: str | None = None) -> list[Any]:
    """Up to ``limit`` dead letters, newest first, with ids below ``before`` (the previous page's last)."""
    pages = []
    for status in dict.fromkeys(which.statuses):
        query = _LISTED.where(*which.where(status)).order_by(D.c.id.desc()).limit(limit)
        if before is not None:
            query = query.where(D.c.id < before)
        pages.append(list((await conn.execute(query)).all()))
    merged = heapq.merge(*pages, key=lambda row: row.id, reverse=True)
    return [row for _, row in zip(range(limit), merged, strict=False)]


@dataclass(slots=True)
class Requeued:
    requeued: int = 0
    #: past their ttl and left expired (the call did not renew it)
    skipped_expired: int = 0
    #: more dead letters matched than one call requeues
    more: bool = False
    ids: list[str] = field(default_factory=list)


async def requeue(
    conn: AsyncConnection,
    which: Filter,
    *,
    limit: int,
    now: datetime,
    reason: str,
    actor: str,
    renew_ttl: bool = False,
) -> Requeued:
    """Put up to ``limit`` matching dead letters, oldest first, back in the queue: due now, with their attempts
    reset (the whole retry schedule applies again), each change on its timeline with ``reason`` and ``actor``.
    One whose ttl has run out stays expired unless ``renew_ttl``, which gives it its ttl again from now."""
    rows: list[Any] = []
    for status in dict.fromkeys(which.statuses):
        query = (
            sa.select(D.c.id, D.c.message_id, D.c.created_at, D.c.expires_at)
            .select_from(D.join(M, M.c.id == D.c.message_id))
            .where(*which.where(status))
            .order_by(D.c.id)
            .limit(limit + 1)
        )
        rows.extend((await conn.execute(query.with_for_update(of=D))).all())
    rows.sort(key=lambda row: row.id)
    done = Requeued(more=len(rows) > limit)
    changes = []
    for row in rows[:limit]:
        expires_at = row.expires_at
        if expires_at is not None and expires_at <= now:
            if not renew_ttl:
                done.skipped_expired += 1
                continue
            expires_at = now + max(row.expires_at - row.created_at, timedelta(0))
        changes.append({"b_id": row.id, "b_expires": expires_at, "b_now": now, "message_id": row.message_id})
    if not changes:
        return done
    await executemany(conn, _REQUEUE, [{k: v for k, v in c.items() if k != "message_id"} for c in changes])
    detail = {"by": actor, "retry": "bulk"}
    events = [
        outbox.event_row(c["message_id"], c["b_id"], S.QUEUED, f"retry: {reason}", now, {**detail}) for c in changes
    ]
    await rollups.append(conn, events)
    await outbox.refresh_messages(conn, {c["message_id"] for c in changes}, now)
    done.requeued = len(changes)
    done.ids = [c["b_id"] for c in changes]
    return done


_REQUEUE = (
    D.update()
    .where(D.c.id == sa.bindparam("b_id"))
    .values(
        status=S.QUEUED.value,
        run_at=sa.bindparam("b_now", type_=t.UTCDateTime()),
        attempts=0,
        expires_at=sa.bindparam("b_expires", type_=t.UTCDateTime()),
        lease_owner=None,
        lease_until=None,
        updated_at=sa.bindparam("b_now", type_=t.UTCDateTime()),
    )
)


# -- re-send ----------------------------------------------------------------------------------------------------


async def message_row(conn: AsyncConnection, message_id: str) -> Any:
    return (await conn.execute(sa.select(M).where(M.c.id == message_id))).first()


async def deliveries_of(conn: AsyncConnection, message_id: str) -> list[Any]:
    """The message's deliveries, oldest first (what a re-send chooses its sources from)."""
    query = sa.select(D).where(D.c.message_id == message_id).order_by(D.c.id)
    return list((await conn.execute(query)).all())


async def add_deliveries(
    conn: AsyncConnection, rows: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]], now: datetime
) -> None:
    """New deliveries of existing messages, their first timeline entries, and the messages' statuses."""
    if rows:
        await conn.execute(D.insert(), list(rows))
    await rollups.append(conn, list(events), deliveries=rows, fresh=True)
    await outbox.refresh_messages(conn, {r["message_id"] for r in rows}, now)
