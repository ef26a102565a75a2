"""What customer support reads: a message with its deliveries and their timelines, a user's send record,
and the in-app inbox."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import pricing
from clarion.store import tables as t


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _event(row: Any) -> dict[str, Any]:
    out = {"status": row.status, "reason": row.reason, "at": _iso(row.at)}
    if row.detail:
        out["detail"] = row.detail
    return out


def _delivery(row: Any, timeline: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out = {
        "id": row.id,
        "channel": row.channel,
        "provider": row.provider,
        "status": row.status,
        "attempts": row.attempts,
        "provider_message_id": row.provider_message_id,
        "last_error": row.last_error,
        "run_at": _iso(row.run_at),
        "sent_at": _iso(row.sent_at),
    }
    if row.segments is not None:
        out["segments"] = row.segments
    if row.cost is not None:
        out["cost"], out["cost_currency"] = pricing.amount(row.cost), row.cost_currency
    if row.fallback_of is not None:
        out["fallback_of"] = row.fallback_of
    if timeline is not None:
        out["timeline"] = timeline
    return out


def _message(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "request_id": row.request_id,
        "user_id": row.user_id,
        "template": row.template_key,
        "template_version": row.template_version,
        "variant": row.variant,
        "category": row.category,
        "priority": row.priority,
        "status": row.status,
        "reason": row.reason,
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
    }


async def message_detail(conn: AsyncConnection, message_id: str) -> dict[str, Any] | None:
    row = (await conn.execute(sa.select(t.messages).where(t.messages.c.id == message_id))).first()
    if row is None:
        return None
    deliveries = (
        await conn.execute(
            sa.select(t.deliveries).where(t.deliveries.c.message_id == message_id).order_by(t.deliveries.c.id)
        )
    ).all()
    events = (
        await conn.execute(
            sa.select(t.delivery_events)
            .where(t.delivery_events.c.message_id == message_id)
            .order_by(t.delivery_events.c.id)
        )
    ).all()
    by_delivery: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        by_delivery[e.delivery_id].append(_event(e))
    return {
        **_message(row),
        "data": row.data,
        "timeline": by_delivery.get(None, []),
        "deliveries": [_explained(_delivery(d, by_delivery.get(d.id, []))) for d in deliveries],
    }


def _explained(delivery: dict[str, Any]) -> dict[str, Any]:
    """A filtered or deferred delivery says which policy decided, with its parameters and the counts it saw."""
    if delivery["status"] in ("filtered", "deferred"):
        for event in reversed(delivery.get("timeline", [])):
            policy = (event.get("detail") or {}).get("policy")
            if policy and event["status"] == delivery["status"]:
                detail = {k: v for k, v in event["detail"].items() if k != "policy"}
                delivery["decided_by"] = {"policy": policy, "reason": event["reason"], "detail": detail}
                break
    return delivery


@dataclass(frozen=True, slots=True)
class RecordFilter:
    status: str | None = None
    channel: str | None = None
    template: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def send_record(
    conn: AsyncConnection, user_id: str, flt: RecordFilter, *, limit: int, before: str | None
) -> dict[str, Any]:
    """Newest first, keyset-paginated on the message id (time-ordered to the millisecond, so the order and the
    cursor agree even for messages created in the same millisecond)."""
    m, d = t.messages, t.deliveries
    query = sa.select(m).where(m.c.user_id == user_id).order_by(m.c.id.desc())
    if flt.status:
        query = query.where(m.c.status == flt.status)
    if flt.template:
        query = query.where(m.c.template_key == flt.template)
    if flt.since:
        query = query.where(m.c.created_at >= flt.since)
    if flt.until:
        query = query.where(m.c.created_at < flt.until)
    if flt.channel:
        query = query.where(sa.exists().where(d.c.message_id == m.c.id, d.c.channel == flt.channel))
    if before:
        query = query.where(m.c.id < before)
    rows = (await conn.execute(query.limit(limit + 1))).all()
    page = rows[:limit]
    deliveries: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if page:
        for drow in (
            await conn.execute(sa.select(d).where(d.c.message_id.in_([r.id for r in page])).order_by(d.c.id))
        ).all():
            deliveries[drow.message_id].append(_delivery(drow))
    return {
        "messages": [{**_message(r), "deliveries": deliveries.get(r.id, [])} for r in page],
        "next_cursor": page[-1].id if len(rows) > limit else None,
    }


def _inbox_item(row: Any) -> dict[str, Any]:
    return {
        "message_id": row.message_id,
        "title": row.title,
        "body": row.body,
        "url": row.url,
        "created_at": _iso(row.created_at),
        "read_at": _iso(row.read_at),
    }


async def inbox(conn: AsyncConnection, user_id: str, *, unread: bool, limit: int, before: str | None) -> dict[str, Any]:
    i = t.inbox_items
    query = sa.select(i).where(i.c.user_id == user_id).order_by(i.c.message_id.desc())
    if unread:
        query = query.where(i.c.read_at.is_(None))
    if before:
        query = query.where(i.c.message_id < before)
    rows = (await conn.execute(query.limit(limit + 1))).all()
    page = rows[:limit]
    return {
        "items": [_inbox_item(r) for r in page],
        "next_cursor": page[-1].message_id if len(rows) > limit else None,
    }


async def inbox_count(conn: AsyncConnection, user_id: str) -> dict[str, int]:
    i = t.inbox_items
    total, unread = (
        await conn.execute(
            sa.select(sa.func.count(), sa.func.count().filter(i.c.read_at.is_(None))).where(i.c.user_id == user_id)
        )
    ).one()
    return {"total": int(total), "unread": int(unread)}


async def mark_read(conn: AsyncConnection, user_id: str, now: datetime, message_id: str | None = None) -> Sequence[Any]:
    """Mark one (or every) unread item read; returns their (message_id, delivery_id). What a read does to the
    delivery is ``pipeline.feedback.read_inbox``'s."""
    i = t.inbox_items
    query = i.update().where(i.c.user_id == user_id, i.c.read_at.is_(None))
    if message_id is not None:
        query = query.where(i.c.message_id == message_id)
    return (await conn.execute(query.values(read_at=now).returning(i.c.message_id, i.c.delivery_id))).all()
