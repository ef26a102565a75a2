"""Reads and writes of SMS replies and of the keyword table (a document in ``policy_settings``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import replies
from clarion.store import tables as t

KEYWORDS_KEY = "sms_keywords"


async def load_keywords(conn: AsyncConnection) -> tuple[replies.Keyword, ...]:
    """The keyword table; the defaults (``TD 退订 T N STOP UNSUBSCRIBE``, every sender) until one is saved."""
    table = t.policy_settings
    row = (await conn.execute(sa.select(table.c.value).where(table.c.key == KEYWORDS_KEY))).first()
    return replies.table_from_json(row.value) if row is not None else replies.default_table()


async def save_keywords(conn: AsyncConnection, keywords: Sequence[replies.Keyword], now: datetime) -> None:
    table = t.policy_settings
    value = replies.table_to_json(keywords)
    updated = await conn.execute(table.update().where(table.c.key == KEYWORDS_KEY).values(value=value, updated_at=now))
    if not updated.rowcount:
        await conn.execute(table.insert().values(key=KEYWORDS_KEY, value=value, updated_at=now))


async def record(conn: AsyncConnection, provider: str, row: dict[str, Any]) -> int | None:
    """Store a reply; None when the vendor already reported it (same provider and vendor id): nothing again."""
    table = t.sms_replies
    seen = await conn.execute(
        sa.select(table.c.id).where(table.c.provider == provider, table.c.vendor_id == row["vendor_id"])
    )
    if seen.first() is not None:
        return None
    inserted = await conn.execute(table.insert().values(provider=provider, **row).returning(table.c.id))
    return int(inserted.scalar_one())


async def suppressed(conn: AsyncConnection, reply_id: int, suppression_id: str) -> None:
    table = t.sms_replies
    await conn.execute(table.update().where(table.c.id == reply_id).values(suppression_id=suppression_id))


async def confirmed(conn: AsyncConnection, reply_id: int, outcome: str, reason: str | None) -> None:
    table = t.sms_replies
    await conn.execute(
        table.update().where(table.c.id == reply_id).values(confirmation=outcome, confirmation_reason=reason)
    )


async def page(conn: AsyncConnection, *, phone: str | None, before: int | None, limit: int) -> list[Any]:
    """Replies newest first (``before``: the id the previous page ended at)."""
    table = t.sms_replies
    query = sa.select(table).order_by(table.c.id.desc()).limit(limit)
    if phone is not None:
        query = query.where(table.c.phone == phone)
    if before is not None:
        query = query.where(table.c.id < before)
    return list((await conn.execute(query)).all())
