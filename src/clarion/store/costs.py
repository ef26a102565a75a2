"""Costs in the store: the providers' price tables as the outbox prices with them, the monthly cost report,
department budgets and what they have spent, the vendors' bill lines reconciled against deliveries, and the
vendors' own daily counts from their statistics APIs (``vendor_statistics``, one row per account and vendor day).

A delivery's cost is written by ``outbox.complete`` when it is handed over, priced from ``prices(conn)``: the
accounts' tables read at most once per ``PRICE_TTL`` seconds per database, so the hot path adds no query per
delivery or per batch. A change saved through this process applies at once (the provider route's invalidation
reaches ``forget_prices``); other processes apply it within ``PRICE_TTL``, like the accounts themselves.

Spend is summed from the deliveries themselves over ``ix_deliveries_sent_at`` (a month's handed-over rows) joined
to their messages for the department, template and campaign; ``BudgetWatch`` keeps the result for the policy
stage a few seconds, so a marketing send does not query for it."""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from clarion.domain import errors, pricing
from clarion.store import tables as t
from clarion.store.db import Database, executemany, insert_of

log = logging.getLogger(__name__)
PRICE_TTL = 2.0
SPEND_TTL = 5.0
#: the key of an account's price table inside its stored ``config``
PRICES = "prices"

_d = t.deliveries
_m = t.messages
#: the cost report's group_by, and the column each reads
GROUPS = {
    "department": _m.c.department,
    "channel": _d.c.channel,
    "provider": _d.c.provider,
    "template": _m.c.template_key,
    "campaign": _m.c.campaign_key,
}

# -- price tables --------------------------------------------------------------------------------------------

# per database: a connection's dialect object is its engine's own, the same for every connection of it
_BOOKS: weakref.WeakKeyDictionary[Any, tuple[float, dict[str, pricing.Prices]]] = weakref.WeakKeyDictionary()


async def prices(conn: Any) -> dict[str, pricing.Prices]:
    """The priced accounts' tables by account name, read again once ``PRICE_TTL`` has passed."""
    now = time.monotonic()
    known = _BOOKS.get(conn.dialect)
    if known is not None and known[0] > now:
        return known[1]
    book = {}
    for name, config in (await conn.execute(sa.select(t.providers.c.name, t.providers.c.config))).all():
        if isinstance(config, dict) and config.get(PRICES) is not None:
            try:
                book[name] = pricing.parse(config[PRICES])
            except errors.InvalidInput as exc:  # saved valid: only a hand-edited row reads so
                log.warning("provider %s: its prices are unreadable, its deliveries go unpriced: %s", name, exc)
    _BOOKS[conn.dialect] = (now + PRICE_TTL, book)
    return book


def forget_prices() -> None:
    """A provider account changed through this process: the next completion reads the prices again."""
    _BOOKS.clear()


# -- the cost report -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CostCell:
    key: str | None
    currency: str | None  # None: deliveries handed to an account with no prices
    deliveries: int
    segments: int
    cost: int  # micro-units


async def report(conn: Any, group_by: str, start: datetime, end: datetime) -> list[CostCell]:
    """The deliveries handed over in [start, end), per ``group_by`` value and currency."""
    key = GROUPS[group_by]
    query = (
        sa.select(
            key.label("key"),
            _d.c.cost_currency,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(_d.c.segments), 0),
            sa.func.coalesce(sa.func.sum(_d.c.cost), 0),
        )
        .select_from(_d.join(_m, _m.c.id == _d.c.message_id) if key.table is _m else _d)
        .where(_d.c.sent_at >= start, _d.c.sent_at < end)
        .group_by(key, _d.c.cost_currency)
    )
    rows = (await conn.execute(query)).all()
    cells = [CostCell(r[0], r[1], int(r[2]), int(r[3]), int(r[4])) for r in rows]
    return sorted(cells, key=lambda c: (c.key is None, c.key or "", c.currency or ""))


# -- budgets ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Budget:
    department: str
    monthly: int  # micro-units
    currency: str
    refuse_marketing: bool
    created_at: datetime
    updated_at: datetime


def _budget(row: Any) -> Budget:
    return Budget(row.department, row.monthly, row.currency, row.refuse_marketing, row.created_at, row.updated_at)


async def budgets(conn: Any, departments: Iterable[str] | None = None) -> list[Budget]:
    b = t.budgets
    query = sa.select(b).order_by(b.c.department)
    if departments is not None:
        query = query.where(b.c.department.in_(list(departments)))
    return [_budget(r) for r in (await conn.execute(query)).all()]


async def budget(conn: Any, department: str) -> Budget | None:
    found = await budgets(conn, [department])
    return found[0] if found else None


async def delete_budget(conn: Any, department: str) -> bool:
    return bool((await conn.execute(t.budgets.delete().where(t.budgets.c.department == department))).rowcount)


def budget_json(b: Budget) -> dict[str, Any]:
    """What the audit log keeps of a budget."""
    return {"monthly": pricing.amount(b.monthly), "currency": b.currency, "refuse_marketing": b.refuse_marketing}


async def spent(conn: Any, start: datetime, end: datetime, departments: Sequence[str]) -> dict[tuple[str, str], int]:
    """What each of ``departments`` spent in [start, end), by (department, currency), in micro-units."""
    if not departments:
        return {}
    query = (
        sa.select(_m.c.department, _d.c.cost_currency, sa.func.sum(_d.c.cost))
        .select_from(_d.join(_m, _m.c.id == _d.c.message_id))
        .where(
            _d.c.sent_at >= start,
            _d.c.sent_at < end,
            _d.c.cost.is_not(None),
            _m.c.department.in_(list(departments)),
        )
        .group_by(_m.c.department, _d.c.cost_currency)
    )
    return {(r[0], r[1]): int(r[2]) for r in (await conn.execute(query)).all()}


async def month_use(conn: Any, month_start: datetime) -> dict[str, tuple[float, float]]:
    """Each budgeted department's (spent, budget) in the month starting at ``month_start``, in its budget's
    currency (costs in another currency are not in ``spent``): what the ``budget`` alert compares."""
    start, end = pricing.month_bounds(month_start.strftime("%Y-%m"))
    found = await budgets(conn)
    used = await spent(conn, start, end, [b.department for b in found])
    return {
        b.department: (pricing.amount(used.get((b.department, b.currency), 0)), pricing.amount(b.monthly))
        for b in found
    }


@dataclass(frozen=True, slots=True)
class Overspent:
    """A department whose marketing is refused: what it spent of its budget this month."""

    spent: int
    monthly: int
    currency: str
    month: str


class BudgetWatch:
    """The departments whose marketing is refused now (``refuse_marketing`` and spent ≥ budget this month), kept
    ``ttl`` seconds: the policy stage asks on every batch, the store is asked at most once per ``ttl``, and not
    about spend at all while no budget refuses anything. ``invalidate`` forgets it (a budget saved here)."""

    def __init__(self, db: Database, *, ttl: float = SPEND_TTL) -> None:
        self.db = db
        self.ttl = ttl
        self._until = float("-inf")
        self._over: dict[str, Overspent] = {}

    def invalidate(self) -> None:
        self._until = float("-inf")

    async def overspent(self, now: datetime) -> dict[str, Overspent]:
        if time.monotonic() < self._until:
            return self._over
        start = pricing.month_of(now)
        _, end = pricing.month_bounds(start.strftime("%Y-%m"))
        async with self.db.read() as conn:
            refusing = [b for b in await budgets(conn) if b.refuse_marketing]
            used = await spent(conn, start, end, [b.department for b in refusing])
        over = {}
        for b in refusing:
            total = used.get((b.department, b.currency), 0)
            if total >= b.monthly:
                over[b.department] = Overspent(total, b.monthly, b.currency, start.strftime("%Y-%m"))
        self._over, self._until = over, time.monotonic() + self.ttl
        return over


# -- bills and reconciliation ------------------------------------------------------------------------------------


async def store_bill(conn: Any, provider: str, lines: Sequence[pricing.BillLine], now: datetime) -> list[date]:
    """Keep an uploaded bill: its lines replace those stored for the same account and days (an upload again is
    a correction, not a second bill). Returns the days it covers."""
    days = sorted({line.day for line in lines})
    b = t.bill_lines
    await conn.execute(b.delete().where(b.c.provider == provider, b.c.day.in_(days)))
    rows = [
        {
            "provider": provider,
            "day": line.day,
            "line": line.line,
            "vendor_message_id": line.vendor_message_id,
            "recipient": line.recipient,
            "status": line.status,
            "vendor_status": line.vendor_status,
            "segments": line.segments,
            "fee": line.fee,
            "currency": line.currency,
            "uploaded_at": now,
        }
        for line in lines
    ]
    if rows:
        await executemany(conn, insert_of(b), rows)
    return days


_SENT = (_d.c.id, _d.c.provider_message_id, _d.c.address, _d.c.status, _d.c.segments, _d.c.cost, _d.c.cost_currency)


async def reconciliation_sides(
    conn: Any, provider: str, day: date
) -> tuple[list[pricing.SentDelivery], list[pricing.BillLine], list[pricing.SentDelivery], set[str]]:
    """What reconciling ``provider``'s ``day`` reads: our deliveries handed over that day, the bill's lines for
    it, and across the day's edge (a vendor's day is not always UTC's): our deliveries of other days that the
    bill names, and the vendor ids of ours that bills of other days name."""
    start, end = pricing.day_bounds(day)
    b = t.bill_lines
    ours = [
        _sent(r)
        for r in (
            await conn.execute(
                sa.select(*_SENT).where(_d.c.provider == provider, _d.c.sent_at >= start, _d.c.sent_at < end)
            )
        ).all()
    ]
    theirs = [
        pricing.BillLine(
            r.line, r.day, r.vendor_message_id, r.recipient, r.status, r.vendor_status, r.segments, r.fee, r.currency
        )
        for r in (
            await conn.execute(sa.select(b).where(b.c.provider == provider, b.c.day == day).order_by(b.c.line))
        ).all()
    ]
    ids = {o.vendor_message_id for o in ours if o.vendor_message_id}
    named = sorted({line.vendor_message_id for line in theirs} - ids)
    elsewhere = []
    if named:
        query = sa.select(*_SENT).where(_d.c.provider == provider, _d.c.provider_message_id.in_(named))
        elsewhere = [_sent(r) for r in (await conn.execute(query)).all()]
    unbilled = sorted(ids - {line.vendor_message_id for line in theirs})
    billed_elsewhere: set[str] = set()
    if unbilled:
        query = sa.select(b.c.vendor_message_id).where(
            b.c.provider == provider, b.c.day != day, b.c.vendor_message_id.in_(unbilled)
        )
        billed_elsewhere = set((await conn.execute(query)).scalars())
    return ours, theirs, elsewhere, billed_elsewhere


def _sent(row: Any) -> pricing.SentDelivery:
    return pricing.SentDelivery(
        row.id, row.provider_message_id, row.address, row.status, row.segments, row.cost, row.cost_currency
    )


# -- vendors' statistics ---------------------------------------------------------------------------------------


async def store_statistics(conn: Any, provider: str, found: pricing.VendorDay, now: datetime) -> None:
    """Keep what the vendor's statistics say of ``provider``'s day, replacing any fetched before for that day."""
    v = t.vendor_statistics
    await conn.execute(v.delete().where(v.c.provider == provider, v.c.day == found.day))
    offset = found.zone.utcoffset(None) or timedelta()
    await conn.execute(
        v.insert().values(
            provider=provider,
            day=found.day,
            utc_offset=int(offset.total_seconds() // 60),
            sent=found.sent,
            delivered=found.delivered,
            failed=found.failed,
            billed_segments=found.billed_segments,
            fee=found.fee,
            currency=found.currency,
            reported=dict(found.reported),
            fetched_at=now,
        )
    )


async def statistics(conn: Any, provider: str, day: date) -> tuple[pricing.VendorDay, datetime] | None:
    """The vendor's statistics of ``provider``'s ``day`` as last fetched, with when; None if never fetched."""
    v = t.vendor_statistics
    row = (await conn.execute(sa.select(v).where(v.c.provider == provider, v.c.day == day))).first()
    if row is None:
        return None
    zone = timezone(timedelta(minutes=row.utc_offset))
    found = pricing.VendorDay(
        row.day,
        zone,
        row.sent,
        row.delivered,
        row.failed,
        row.billed_segments,
        row.fee,
        row.currency,
        dict(row.reported or {}),
    )
    return found, row.fetched_at


async def handed_over(conn: Any, provider: str, start: datetime, end: datetime) -> list[pricing.SentDelivery]:
    """Our deliveries handed to ``provider`` in [start, end): what a vendor's day is compared with."""
    query = sa.select(*_SENT).where(_d.c.provider == provider, _d.c.sent_at >= start, _d.c.sent_at < end)
    return [_sent(r) for r in (await conn.execute(query)).all()]
