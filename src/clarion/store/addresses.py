"""Address hygiene: the addresses a vendor declared gone for good are removed from their users.

A push token FCM answers ``UNREGISTERED`` for, an APNs 410, a Web Push subscription answering 404/410, an openid
that unfollowed: sending to them again only fails again (and vendors count it against the sender). The dispatch
stage records them on the delivery's timeline (``dead_addresses`` in the outcome's detail) and this removes them
in the same transaction, so the next message to that user goes to the addresses that still work. A push address
is a list: only the dead tokens leave it (a typed item ``{"platform", "token"}`` is matched by its token); a
single address (an openid) is removed when it is the dead one. A user who changed the address meanwhile keeps the
new one."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.store import tables as t


def _token(item: Any) -> Any:
    if isinstance(item, dict):
        return item.get("token", item.get("endpoint", item))
    return item


def _same(item: Any, dead: Any) -> bool:
    return item == dead or _token(item) == _token(dead)


def without(current: Any, dead: Sequence[Any]) -> tuple[Any, list[Any]]:
    """``current`` (one address or a list of them) less the ``dead`` ones, and those it removed."""
    if isinstance(current, list):
        kept = [item for item in current if not any(_same(item, d) for d in dead)]
        removed = [item for item in current if item not in kept]
        return (kept or None), removed
    if current is not None and any(_same(current, d) for d in dead):
        return None, [current]
    return current, []


async def remove_dead(
    conn: AsyncConnection, found: Iterable[tuple[str, Sequence[Any]]], now: datetime
) -> dict[str, list[Any]]:
    """Remove each delivery's dead addresses (``(delivery id, addresses)``) from its user's address on the
    delivery's channel; returns what was removed, by delivery id."""
    wanted = {delivery_id: list(dead) for delivery_id, dead in found if dead}
    if not wanted:
        return {}
    d, u = t.deliveries, t.users
    rows = (await conn.execute(sa.select(d.c.id, d.c.user_id, d.c.channel).where(d.c.id.in_(list(wanted))))).all()
    by_user: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        by_user.setdefault(row.user_id, []).append((row.id, row.channel))
    removed: dict[str, list[Any]] = {}
    for user in (await conn.execute(sa.select(u.c.user_id, u.c.addresses).where(u.c.user_id.in_(list(by_user))))).all():
        addresses = dict(user.addresses or {})
        changed = False
        for delivery_id, channel in by_user[user.user_id]:
            kept, gone = without(addresses.get(channel), wanted[delivery_id])
            if gone:
                changed = True
                removed[delivery_id] = gone
                if kept is None:
                    addresses.pop(channel, None)
                else:
                    addresses[channel] = kept
        if changed:
            await conn.execute(
                u.update().where(u.c.user_id == user.user_id).values(addresses=addresses, updated_at=now)
            )
    return removed
