"""The outbox is the queue: deliveries are rows that workers claim with a lease, send, and complete.

Claiming flips a batch of due rows to ``sending`` with ``lease_until`` in one statement (``UPDATE … RETURNING``;
``FOR UPDATE SKIP LOCKED`` on PostgreSQL so workers in several processes never take the same row). A worker
that dies leaves its leases to expire; ``reap_expired`` puts those rows back in the queue, and ``reclaim_gone`` does
so at once for the leases of a worker known to have stopped (see ``clarion.owners``). Completion only
touches rows still leased to the completing worker, so a worker whose lease was taken over cannot overwrite
the newer attempt's outcome.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import model
from clarion.store import costs, fallbacks, rollups
from clarion.store import tables as t
from clarion.store.db import ListStatement, executemany, fetch, insert_of

S = model.DeliveryStatus
CLAIMABLE = (S.QUEUED.value, S.DEFERRED.value)


@dataclass(slots=True)
class Claimed:
    id: str
    message_id: str
    user_id: str
    channel: str
    provider: str | None
    address: Any
    content: Any
    attempts: int
    lane: int
    created_at: datetime
    #: the template's ttl after acceptance: not handed to a provider by then, it expires (None: no ttl)
    expires_at: datetime | None = None


#: the ``deliveries`` columns a claim returns: ``Claimed``'s fields, in order
CLAIMED = tuple(f.name for f in fields(Claimed))


@dataclass(slots=True)
class Outcome:
    """What to record for one claimed delivery after its send."""

    delivery_id: str
    message_id: str
    status: model.DeliveryStatus
    reason: str | None = None
    provider: str | None = None
    provider_message_id: str | None = None
    run_at: datetime | None = None
    detail: dict[str, Any] | None = None
    #: False when no provider was tried (the delivery waited for one): the claim's attempt is taken back, so a
    #: long wait does not use up the retries the delivery will need once a provider can send
    attempted: bool = True


def event_row(
    message_id: str,
    delivery_id: str | None,
    status: str,
    reason: str | None,
    at: datetime,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "delivery_id": delivery_id,
        "status": status,
        "reason": reason,
        "detail": detail,
        "at": at,
    }


def _due(*, urgent: bool) -> Any:
    """The ids of the deliveries due now (``urgent``: of the urgent lane only, for its own loop)."""
    d = t.deliveries
    due = sa.select(d.c.id).where(d.c.status.in_([sa.literal(v) for v in CLAIMABLE]), d.c.run_at <= sa.bindparam("now"))
    return due.where(d.c.lane == sa.literal(model.Priority.URGENT.lane)) if urgent else due


def _claim_statement(*, skip_locked: bool, urgent: bool = False) -> Any:
    d = t.deliveries
    due = _due(urgent=urgent).order_by(d.c.lane, d.c.run_at).limit(sa.bindparam("limit", type_=sa.Integer))
    if skip_locked:
        due = due.with_for_update(skip_locked=True)
    return (
        d.update()
        .where(d.c.id.in_(due.scalar_subquery()))
        .values(
            status=S.SENDING.value,
            lease_owner=sa.bindparam("owner"),
            lease_until=sa.bindparam("lease_until"),
            attempts=d.c.attempts + 1,
            updated_at=sa.bindparam("now"),
        )
        .returning(*(d.c[name] for name in CLAIMED))
    )


_ANY_DUE = {urgent: _due(urgent=urgent).limit(1) for urgent in (True, False)}


async def any_due(conn: AsyncConnection, now: datetime, *, urgent: bool = False) -> bool:
    """Whether a delivery (``urgent``: of the urgent lane) waits to be claimed: a read on the claim's index, so
    that a dispatch loop's polls cost no write — and no wait for the writer — while there is nothing to claim."""
    return bool(await fetch(conn, _ANY_DUE[urgent], {"now": now}))


# by "is SQLite"; PostgreSQL skips rows another worker has locked, so workers in several processes never take
# the same row
_CLAIM = {
    (sqlite, urgent): _claim_statement(skip_locked=not sqlite, urgent=urgent)
    for sqlite in (True, False)
    for urgent in (True, False)
}


async def claim(
    conn: AsyncConnection,
    *,
    owner: str,
    now: datetime,
    lease_until: datetime,
    limit: int,
    is_sqlite: bool,
    expired: list[Claimed] | None = None,
    urgent: bool = False,
) -> list[Claimed]:
    """Lease up to ``limit`` due deliveries to ``owner``, lanes first (``urgent``: of the urgent lane only).
    Those claimed past their ``expires_at`` become ``expired`` (``ttl_expired`` on the timeline; added to
    ``expired`` when given) in the same transaction instead of being handed out: whatever held a delivery up (an
    outage, a breaker, a backlog, retries), it is never sent late. Judging the claimed rows costs nothing more
    on the queue's index, where a separate sweep would read every due row."""
    parameters = {"owner": owner, "now": now, "lease_until": lease_until, "limit": limit}
    rows = await fetch(conn, _CLAIM[is_sqlite, urgent], parameters)
    claimed = [Claimed(*row) for row in rows]
    late = [c for c in claimed if c.expires_at is not None and c.expires_at <= now]
    if late:
        await _expire(conn, late, now)
        if expired is not None:
            expired.extend(late)
        claimed = [c for c in claimed if c.expires_at is None or c.expires_at > now]
    claimed.sort(key=lambda c: (c.lane, c.id))
    if claimed:
        await executemany(conn, insert_of(t.delivery_events), [_sending(c, owner, now) for c in claimed])
    return claimed


def _sending(claimed: Claimed, owner: str, now: datetime) -> dict[str, Any]:
    """The timeline entry of a delivery leased to ``owner`` for an attempt."""
    return event_row(claimed.message_id, claimed.id, S.SENDING, f"attempt {claimed.attempts}", now, {"worker": owner})


def lease_new(
    deliveries: Sequence[dict[str, Any]],
    events: list[dict[str, Any]],
    *,
    owner: str,
    now: datetime,
    lease_until: datetime,
    lane: int | None = None,
) -> list[Claimed]:
    """Delivery rows not yet written, leased to ``owner`` as a claim would lease them once written: each queued
    and due one becomes ``sending`` (attempt 1, its ``sending`` entry added to ``events``), and is returned as
    claimed. Written so, the rows are the claim: whoever wrote them sends them from memory once they have
    committed (``worker.Dispatcher.take``), with no claim statement and no second write of each row; one that
    is never completed is taken back like any lease (``reclaim_gone``, ``reap_expired``). ``lane``: only the
    deliveries of that lane."""
    claimed = []
    for row in deliveries:
        if row["status"] != S.QUEUED or row["run_at"] > now or (lane is not None and row["lane"] != lane):
            continue
        row.update(status=S.SENDING.value, lease_owner=owner, lease_until=lease_until, attempts=1, updated_at=now)
        leased = Claimed(*(row[name] for name in CLAIMED))
        events.append(_sending(leased, owner, now))
        claimed.append(leased)
    return claimed


TTL_EXPIRED = "ttl_expired"
NOT_HANDED_OVER = f"{TTL_EXPIRED}: not handed to a provider within the template's ttl"


def expired_outcomes(late: Iterable[Claimed]) -> list[Outcome]:
    """Leased deliveries past their ttl before they could be sent, as outcomes (their attempt not counted)."""
    return [Outcome(c.id, c.message_id, S.EXPIRED, NOT_HANDED_OVER, detail=_expiry(c), attempted=False) for c in late]


def _expiry(claimed: Claimed) -> dict[str, Any] | None:
    return {"expires_at": claimed.expires_at.isoformat()} if claimed.expires_at is not None else None


async def _expire(conn: AsyncConnection, late: Sequence[Claimed], now: datetime) -> None:
    """The claimed ``late`` deliveries expire instead of being sent (their claim is not counted as an attempt)."""
    d = t.deliveries
    await conn.execute(
        d.update()
        .where(d.c.id.in_([c.id for c in late]))
        .values(
            status=S.EXPIRED.value,
            attempts=d.c.attempts - 1,
            last_error=NOT_HANDED_OVER,
            lease_owner=None,
            lease_until=None,
            updated_at=now,
        )
    )
    events = [event_row(c.message_id, c.id, S.EXPIRED, NOT_HANDED_OVER, now, _expiry(c)) for c in late if c.expires_at]
    await rollups.append(conn, events)
    await refresh_messages(conn, {c.message_id for c in late}, now)
    await fallbacks.on_status(conn, dict.fromkeys((c.id for c in late), S.EXPIRED), now)


async def complete(conn: AsyncConnection, *, owner: str, now: datetime, outcomes: Sequence[Outcome]) -> int:
    """Record each outcome (only for rows this worker still holds) and refresh the messages' statuses. A delivery
    handed to an account with ``prices`` keeps its cost, priced from the cached tables (``costs.prices``) and its
    own row, which the hold returns: no query per delivery."""
    # Take the right to complete first, in one statement: on PostgreSQL it locks the rows, so a reaper
    # cannot take them over between this check and the updates below.
    completing = f"{owner}#completing"
    hold = {"ids": [o.delivery_id for o in outcomes], "owner": owner, "completing": completing}
    book = await costs.prices(conn)
    priced = bool(book) and any(o.provider in book and o.status in _HANDED_OVER for o in outcomes)
    rows = await fetch(conn, (_HOLD_PRICED if priced else _HOLD).on(conn), hold)
    held = {row.id: row for row in rows}
    mine = [o for o in outcomes if o.delivery_id in held]
    if not mine:
        return 0
    cost: dict[str, tuple[int | None, str | None]] = {}
    if priced:
        facts = {row.id: row for row in rows}
        for o in mine:
            prices = book.get(o.provider) if o.status in _HANDED_OVER and o.provider else None
            if prices is not None:
                row = facts[o.delivery_id]
                amount = prices.cost(row.segments, row.address)
                cost[o.delivery_id] = _UNPRICED if amount is None else (amount, prices.currency)
    params = [
        {
            "b_id": o.delivery_id,
            "b_owner": completing,
            "b_status": o.status.value,
            "b_provider": o.provider,
            "b_pmid": o.provider_message_id,
            "b_error": o.reason if o.status in (S.FAILED, S.QUEUED, S.EXPIRED) else None,
            "b_run_at": o.run_at,
            "b_sent_at": now if o.status in _HANDED_OVER else None,
            "b_now": now,
            "b_unattempted": 0 if o.attempted else 1,
            "b_cost": cost.get(o.delivery_id, _UNPRICED)[0],
            "b_currency": cost.get(o.delivery_id, _UNPRICED)[1],
        }
        for o in mine
    ]
    await executemany(conn, _COMPLETE, params)
    events = []
    for o in mine:
        if o.status is S.DELIVERED:  # delivered by the send itself: it was sent (the attempt's line), then delivered
            events.append(event_row(o.message_id, o.delivery_id, S.SENT, f"accepted by {o.provider}", now, o.detail))
            events.append(event_row(o.message_id, o.delivery_id, o.status, o.reason, now))
        else:
            events.append(event_row(o.message_id, o.delivery_id, o.status, o.reason, now, o.detail))
    # the deliveries' funnel dimensions as the updates leave them (the provider: the outcome's, else the row's)
    dims = [
        {
            "id": o.delivery_id,
            "channel": held[o.delivery_id].channel,
            "provider": o.provider or held[o.delivery_id].provider,
        }
        for o in mine
    ]
    await rollups.append(conn, events, deliveries=dims)
    await refresh_messages(conn, {o.message_id for o in mine}, now)
    await fallbacks.on_status(conn, {o.delivery_id: o.status for o in mine}, now)  # a fallback cancelled or due
    named = [(o.provider, o.provider_message_id) for o in mine if o.status in _HANDED_OVER and o.provider_message_id]
    if named:
        # receipts that came before this outcome was written are applied now, in the same transaction; the
        # feedback stage builds on these rows, so it is imported where it is used
        from clarion.pipeline import feedback

        await feedback.apply_pending(conn, named, now)
    return len(mine)


#: outcomes that handed the delivery to a provider: they have a ``sent_at`` and a cost, and receipts may name them
_HANDED_OVER = frozenset({S.SENT, S.DELIVERED})
_UNPRICED: tuple[None, None] = (None, None)


_d = t.deliveries
_COMPLETE = (
    _d.update()
    .where(_d.c.id == sa.bindparam("b_id"), _d.c.lease_owner == sa.bindparam("b_owner"))
    .values(
        status=sa.bindparam("b_status"),
        provider=sa.func.coalesce(sa.bindparam("b_provider"), _d.c.provider),
        provider_message_id=sa.func.coalesce(sa.bindparam("b_pmid"), _d.c.provider_message_id),
        last_error=sa.bindparam("b_error"),
        run_at=sa.func.coalesce(sa.bindparam("b_run_at", type_=t.UTCDateTime()), _d.c.run_at),
        sent_at=sa.bindparam("b_sent_at", type_=t.UTCDateTime()),
        attempts=_d.c.attempts - sa.bindparam("b_unattempted", type_=sa.Integer),
        cost=sa.bindparam("b_cost", type_=sa.BigInteger),
        cost_currency=sa.bindparam("b_currency", type_=sa.String),
        lease_owner=None,
        lease_until=None,
        updated_at=sa.bindparam("b_now", type_=t.UTCDateTime()),
    )
)


def _hold(*returning: Any) -> ListStatement:
    """The rows of ``ids`` still leased to ``owner`` pass to ``completing``, returning ``returning``."""
    return ListStatement(
        lambda in_list: (
            _d.update()
            .where(in_list(_d.c.id, "ids"), _d.c.lease_owner == sa.bindparam("owner"), _d.c.status == S.SENDING.value)
            .values(lease_owner=sa.bindparam("completing"))
            .returning(*returning)
        )
    )


_HOLD = _hold(_d.c.id, _d.c.channel, _d.c.provider)
_HOLD_PRICED = _hold(_d.c.id, _d.c.channel, _d.c.provider, _d.c.address, _d.c.segments)
# each delivery's status and its message's current one, for the messages ``ids``
_STATUSES = ListStatement(
    lambda in_list: (
        sa.select(_d.c.message_id, _d.c.status, t.messages.c.status.label("current"))
        .join(t.messages, t.messages.c.id == _d.c.message_id)
        .where(in_list(_d.c.message_id, "ids"))
    )
)
_REFRESH = (
    t.messages.update()
    .where(t.messages.c.id == sa.bindparam("b_id"))
    .values(status=sa.bindparam("b_status"), updated_at=sa.bindparam("b_now", type_=t.UTCDateTime()))
)


async def refresh_messages(conn: AsyncConnection, message_ids: Iterable[str], now: datetime) -> None:
    """Set each message's status from its deliveries (see ``model.message_status``)."""
    ids = list(message_ids)
    if not ids:
        return
    rows = await fetch(conn, _STATUSES.on(conn), {"ids": ids})
    statuses: dict[str, list[str]] = defaultdict(list)
    current: dict[str, str] = {}
    for row in rows:
        statuses[row.message_id].append(row.status)
        current[row.message_id] = row.current
    changes = [
        {"b_id": mid, "b_status": new.value, "b_now": now}
        for mid, sts in statuses.items()
        if (new := model.message_status(sts)).value != current[mid]
    ]
    if changes:
        await executemany(conn, _REFRESH, changes)


async def reap_expired(conn: AsyncConnection, *, now: datetime, max_attempts: int = 1_000_000) -> int:
    """Deliveries whose worker's lease ran out (it died or hung) go back to the queue — or fail, once they
    have used every attempt, so a delivery that kills its worker each time cannot loop forever."""
    d = t.deliveries
    expired = sa.and_(d.c.status == S.SENDING.value, d.c.lease_until < now)
    return await _requeue(conn, expired, "lease_expired", "worker stopped before completing", now, max_attempts)


async def reclaim_gone(
    conn: AsyncConnection, *, now: datetime, gone: Callable[[str], str | None], max_attempts: int = 1_000_000
) -> int:
    """Deliveries leased to a worker known to have stopped go back to the queue at once, without waiting for
    their lease to run out (or fail, like ``reap_expired``, once they have used every attempt). ``gone(owner)``
    says why that owner no longer runs, or None when it may still run (its leases are then left alone)."""
    d = t.deliveries
    sending = d.c.status == S.SENDING.value
    owners: list[str | None] = list(
        (await conn.execute(sa.select(d.c.lease_owner).where(sending).distinct())).scalars()
    )
    reclaimed = 0
    for owner in owners:
        reason = gone(owner) if owner is not None else None
        if reason is not None:
            held = sa.and_(sending, d.c.lease_owner == owner)
            reclaimed += await _requeue(conn, held, "lease_reclaimed", reason, now, max_attempts)
    return reclaimed


async def _requeue(conn: AsyncConnection, leased: Any, code: str, why: str, now: datetime, max_attempts: int) -> int:
    """The ``leased`` deliveries back to the queue (failed if out of attempts), each change on the timeline."""
    d = t.deliveries
    changes = {"lease_owner": None, "lease_until": None, "updated_at": now}
    failed = (
        await conn.execute(
            d.update()
            .where(leased, d.c.attempts >= max_attempts)
            .values(status=S.FAILED.value, last_error=f"{code}: attempts exhausted", **changes)
            .returning(d.c.id, d.c.message_id)
        )
    ).all()
    requeued = (
        await conn.execute(
            d.update()
            .where(leased)
            .values(status=S.QUEUED.value, run_at=now, **changes)
            .returning(d.c.id, d.c.message_id)
        )
    ).all()
    events = [event_row(r.message_id, r.id, S.FAILED, f"{code}: attempts exhausted", now) for r in failed]
    events += [event_row(r.message_id, r.id, S.QUEUED, f"{code}: {why}", now) for r in requeued]
    await rollups.append(conn, events)
    if failed:
        await refresh_messages(conn, {r.message_id for r in failed}, now)
        await fallbacks.on_status(conn, dict.fromkeys((r.id for r in failed), S.FAILED), now)
    return len(failed) + len(requeued)


async def queue_depth(conn: AsyncConnection) -> dict[int, int]:
    d = t.deliveries
    rows = (
        await conn.execute(sa.select(d.c.lane, sa.func.count()).where(d.c.status.in_(CLAIMABLE)).group_by(d.c.lane))
    ).all()
    return {int(row[0]): int(row[1]) for row in rows}


async def cancel_pending(conn: AsyncConnection, *, user_id: str, reason: str, now: datetime) -> int:
    """Fail every delivery of a user that has not gone out yet (queued or deferred), with ``reason``."""
    d = t.deliveries
    rows = (
        await conn.execute(
            d.update()
            .where(d.c.user_id == user_id, d.c.status.in_(CLAIMABLE))
            .values(status=S.FAILED.value, last_error=reason, updated_at=now)
            .returning(d.c.id, d.c.message_id)
        )
    ).all()
    if rows:
        await rollups.append(conn, [event_row(r.message_id, r.id, S.FAILED, reason, now) for r in rows])
        await refresh_messages(conn, {r.message_id for r in rows}, now)
    return len(rows)
