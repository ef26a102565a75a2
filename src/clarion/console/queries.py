"""The reads the console needs that no API route makes yet: finding a user by an address, and the age of the
oldest urgent delivery waiting in the outbox."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import model, phones
from clarion.store import outbox
from clarion.store import tables as t


async def find_users(conn: AsyncConnection, text: str, *, limit: int = 20) -> list[str]:
    """The ids of the users ``text`` names: a user id, an e-mail address, or a phone number as people type it
    (with or without the country code, spaces or dashes; at least 7 digits)."""
    u = t.users
    text = text.strip()
    found = sa.or_(u.c.user_id == text)
    if "@" in text:
        found = sa.or_(found, sa.func.lower(u.c.addresses["email"].as_string()) == text.lower())
    digits = "".join(c for c in text if c.isdecimal())
    if phones.looks_like_phone(text) and len(digits) >= 7:
        # E.164 is "+" and digits: a number typed without its country code (13800138000) still ends one
        found = sa.or_(found, u.c.addresses["sms"].as_string().like(f"%{digits}"))
    rows = (await conn.execute(sa.select(u.c.user_id).where(found).order_by(u.c.user_id).limit(limit))).all()
    return [r.user_id for r in rows]


async def oldest_urgent(conn: AsyncConnection, now: datetime) -> datetime | None:
    """When the oldest urgent delivery that is due and still waiting to be claimed became due."""
    d = t.deliveries
    urgent = model.Priority.URGENT.lane
    query = sa.select(sa.func.min(d.c.run_at)).where(
        d.c.status.in_(outbox.CLAIMABLE), d.c.lane == urgent, d.c.run_at <= now
    )
    return (await conn.execute(query)).scalar_one()
