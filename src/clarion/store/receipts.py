"""The rows feedback reads and writes: deliveries found by the vendor's id, what their timelines already hold, and
the receipts kept until they can be applied (``receipts`` table), and what the receipt poller asks vendors about
(``pipeline.polling``). The decisions are ``domain.receipts``'; the order of the writes is ``pipeline.feedback``'s."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import receipts
from clarion.store import tables as t
from clarion.store.db import ListStatement, executemany, fetch

_d, _e, _r = t.deliveries, t.delivery_events, t.receipts
_COLUMNS = (_d.c.id, _d.c.message_id, _d.c.channel, _d.c.provider, _d.c.address, _d.c.status)

# the deliveries of ``provider`` carrying one of the vendor ids ``pmids`` (``lock`` serialises their receipts)
_BY_PMID = ListStatement(
    lambda in_list: (
        sa.select(*_COLUMNS, _d.c.provider_message_id)
        .where(_d.c.provider == sa.bindparam("provider"), in_list(_d.c.provider_message_id, "pmids"))
        .order_by(_d.c.id)
    )
)
# one transaction-scoped advisory lock per key, taken in one order so that two transactions cannot deadlock
_LOCK = sa.text(
    "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest(CAST(:keys AS text[])) AS k"
    " ORDER BY 1) AS keys"
)
_BY_ID = ListStatement(
    lambda in_list: (
        sa.select(*_COLUMNS, _d.c.provider_message_id)
        .where(in_list(_d.c.id, "ids"))
        .order_by(_d.c.id)
        .with_for_update()
    )
)
# the statuses already on the timelines of the deliveries ``ids``
_SEEN = ListStatement(lambda in_list: sa.select(_e.c.delivery_id, _e.c.status).where(in_list(_e.c.delivery_id, "ids")))
# the kept receipts of ``provider`` for the vendor ids ``pmids`` (on the table's index)
_PENDING = ListStatement(
    lambda in_list: (
        sa.select(_r)
        .where(_r.c.provider == sa.bindparam("provider"), in_list(_r.c.provider_message_id, "pmids"))
        .order_by(_r.c.id)
    )
)
_MOVE = (
    _d.update()
    .where(_d.c.id == sa.bindparam("b_id"))
    .values(status=sa.bindparam("b_status"), updated_at=sa.bindparam("b_now", type_=t.UTCDateTime()))
)


async def lock(conn: AsyncConnection, named: Iterable[tuple[str | None, str | None]]) -> None:
    """Serialise what is done about these (provider, vendor id) pairs until the transaction ends.

    On PostgreSQL a receipt and the outcome naming its id can be written at the same time: the receipt, finding
    no delivery, would be kept after the outcome had looked for kept receipts, and never applied; and two copies
    of one receipt would both find it new. Both sides take this lock first — a receipt before it looks for its
    delivery, an outcome before it looks for kept receipts — so the later one sees what the earlier committed.
    SQLite runs one write transaction at a time: nothing to do."""
    keys = sorted({f"{p}\n{m}" for p, m in named if p and m})
    if keys and conn.dialect.name == "postgresql":
        await conn.execute(_LOCK, {"keys": keys})


async def by_provider_message_id(conn: AsyncConnection, provider: str, pmids: Sequence[str]) -> dict[str, list[Any]]:
    """The deliveries each vendor id names (usually one; none when no delivery carries it yet)."""
    found: dict[str, list[Any]] = {}
    if pmids:
        for row in await fetch(conn, _BY_PMID.on(conn), {"provider": provider, "pmids": sorted(set(pmids))}):
            found.setdefault(row.provider_message_id, []).append(row)
    return found


async def by_id(conn: AsyncConnection, ids: Sequence[str]) -> dict[str, Any]:
    if not ids:
        return {}
    return {row.id: row for row in await fetch(conn, _BY_ID.on(conn), {"ids": sorted(set(ids))})}


async def seen(conn: AsyncConnection, delivery_ids: Iterable[str]) -> set[tuple[str, str]]:
    """(delivery id, status) for every event already on these deliveries' timelines."""
    ids = sorted(set(delivery_ids))
    if not ids:
        return set()
    return {(row.delivery_id, row.status) for row in await fetch(conn, _SEEN.on(conn), {"ids": ids})}


async def move(conn: AsyncConnection, changes: dict[str, str], now: datetime) -> None:
    """Set each delivery's status (its rows are locked: see ``by_provider_message_id``)."""
    if changes:
        await executemany(conn, _MOVE, [{"b_id": i, "b_status": s, "b_now": now} for i, s in changes.items()])


async def hold(conn: AsyncConnection, provider: str, receipt: receipts.Receipt, now: datetime) -> bool:
    """Keep a receipt until the outcome naming its id is recorded; False when the same one is already kept."""
    same = sa.select(_r.c.id).where(
        _r.c.provider == provider,
        _r.c.provider_message_id == receipt.provider_message_id,
        _r.c.status == receipt.event.value,
    )
    if (await conn.execute(same.limit(1))).first() is not None:
        return False
    detail = {"vendor": receipt.detail, "address": receipt.address, "suppress": receipt.suppress}
    row = {
        "provider": provider,
        "provider_message_id": receipt.provider_message_id,
        "status": receipt.event.value,
        "reason": receipt.reason,
        "detail": detail,
        "received_at": now,
    }
    await conn.execute(_r.insert().values(row))
    return True


async def take_pending(
    conn: AsyncConnection, named: Iterable[tuple[str | None, str | None]]
) -> list[tuple[str, receipts.Receipt, datetime]]:
    """The kept receipts of these (provider, vendor id) pairs, removed from the table: (provider, receipt,
    received at), oldest first."""
    named = list(named)
    await lock(conn, named)
    wanted: dict[str, set[str]] = {}
    for provider, pmid in named:
        if provider and pmid:
            wanted.setdefault(provider, set()).add(pmid)
    mine: list[Any] = []
    for provider, pmids in wanted.items():
        mine += await fetch(conn, _PENDING.on(conn), {"provider": provider, "pmids": sorted(pmids)})
    if not mine:
        return []
    await conn.execute(_r.delete().where(_r.c.id.in_([row.id for row in mine])))
    taken = []
    for row in mine:
        detail = row.detail or {}
        receipt = receipts.Receipt(
            row.provider_message_id,
            receipts.Event(row.status),
            row.reason,
            detail.get("vendor") or {},
            detail.get("address"),
            bool(detail.get("suppress")),
        )
        taken.append((row.provider, receipt, row.received_at))
    return taken


# -- polling -------------------------------------------------------------------------------------------------

# The deliveries of ``provider`` still ``sent`` with a vendor id, sent since ``since``, in id order after ``after``:
# one page of what the poller asks the vendor about. No index yet leads with (provider, status, sent_at): the
# ones there are read every delivery the account (or every ``sent`` one) ever had; such an index would bound it.
_STILL_SENT = (
    sa.select(_d.c.id, _d.c.provider_message_id)
    .where(
        _d.c.status == "sent",
        _d.c.provider == sa.bindparam("provider"),
        _d.c.provider_message_id.is_not(None),
        _d.c.sent_at >= sa.bindparam("since", type_=t.UTCDateTime()),
        _d.c.id > sa.bindparam("after"),
    )
    .order_by(_d.c.id)
    .limit(sa.bindparam("limit"))
)


async def pollable_accounts(conn: AsyncConnection) -> list[tuple[str, str]]:
    """(name, kind) of every enabled configured account, by name: the poller keeps those whose kind polls."""
    p = t.providers
    query = sa.select(p.c.name, p.c.kind).where(p.c.enabled.is_(True)).order_by(p.c.name)
    return [(row.name, row.kind) for row in (await conn.execute(query)).all()]


async def still_sent(
    conn: AsyncConnection, provider: str, *, since: datetime, after: str, limit: int
) -> list[tuple[str, str]]:
    """(delivery id, vendor id) of up to ``limit`` deliveries of ``provider`` waiting for a receipt, after
    the delivery id ``after`` ("" for the first page)."""
    params = {"provider": provider, "since": since, "after": after, "limit": limit}
    return [(row.id, row.provider_message_id) for row in (await conn.execute(_STILL_SENT, params)).all()]


async def forget_pending(conn: AsyncConnection, received_before: datetime) -> int:
    """Delete the kept receipts that came before ``received_before`` and never met their delivery (an id the
    vendor knows and Clarion never sent, or one whose send was never recorded); returns how many."""
    result = await conn.execute(_r.delete().where(_r.c.received_at < received_before))
    return int(result.rowcount or 0)
