"""Pending channel fallbacks: the durable steps of ``fallback_steps``, and what changes them.

A step is written with its message (``pipeline.intake``) and leaves ``pending`` exactly once: ``fired`` (its held
delivery judged and placed) or ``cancelled`` (its original reached the user; the held delivery becomes
``cancelled``). Every change is conditional on the step still being ``pending``, in the transaction that also
writes the held delivery, so a crash, a restart or a second firer can neither lose a step nor fire it twice.

Statuses of originals come from the places that write them — a send's outcome (``outbox.complete``), a receipt
or an inbox read (``pipeline.feedback.settle``), an expiry — through ``on_status``, in their own transaction: a
reached original cancels its steps there and then; a failed one makes them due at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import fallback as rules
from clarion.domain import ids, model
from clarion.store import outbox, rollups
from clarion.store import tables as t

S = model.DeliveryStatus
PENDING, FIRED, CANCELLED = "pending", "fired", "cancelled"
#: statuses of an original that change its pending steps (the others leave them waiting)
_DECISIVE = frozenset().union(*rules.REACHED.values(), rules.FAILED)
_f, _d = t.fallback_steps, t.deliveries


def step_row(
    *,
    message_id: str,
    original_id: str,
    fallback_id: str,
    index: int,
    step: rules.Step,
    run_at: datetime | None,
    now: datetime,
) -> dict[str, Any]:
    return {
        "id": ids.new_id(),
        "message_id": message_id,
        "original_id": original_id,
        "fallback_id": fallback_id,
        "step": index,
        "when": step.when.value,
        "within": step.within,
        "run_at": run_at,
        "state": PENDING,
        "reason": None,
        "lease_owner": None,
        "lease_until": None,
        "created_at": now,
        "updated_at": now,
    }


@dataclass(slots=True)
class Due:
    """A claimed step with what judging it needs: its original's status and its held delivery."""

    id: str
    message_id: str
    original_id: str
    fallback_id: str
    step: int
    when: str
    within: int | None
    run_at: datetime
    original_channel: str
    original_status: str
    channel: str
    status: str
    user_id: str
    content: Any
    template_key: str
    category: str
    priority: str


@dataclass(slots=True)
class Placed:
    """A fired step's held delivery as the policies placed it."""

    due: Due
    status: model.DeliveryStatus
    reason: str
    run_at: datetime
    address: Any
    content: Any
    detail: dict[str, Any] = field(default_factory=dict)


# -- from the statuses of originals ---------------------------------------------------------------------------


async def on_status(conn: AsyncConnection, changes: Mapping[str, str], now: datetime) -> int:
    """Originals in ``changes`` (delivery id → its new status) moved: their pending steps are cancelled when it
    reached the user, or made due now when it failed for good. Returns how many steps became due."""
    decisive = {k: str(v) for k, v in changes.items() if v in _DECISIVE}

    if not decisive:
        return 0
    rows = (
        await conn.execute(
            sa.select(_f.c.id, _f.c.message_id, _f.c.fallback_id, _f.c.when, _f.c.run_at, _f.c.original_id).where(
                _f.c.original_id.in_(list(decisive)), _f.c.state == PENDING
            )
        )
    ).all()
    cancels: dict[str, str] = {}
    due = []
    for row in rows:
        status = decisive[row.original_id]
        verdict = rules.judge(row.when, status, deadline_passed=False)
        if verdict == "cancel":
            cancels[row.id] = f"fallback cancelled: the delivery {row.original_id} it stood behind is {status}"
        elif verdict == "fire" and (row.run_at is None or row.run_at > now):
            due.append(row.id)
    if cancels:
        await cancel(conn, cancels, now)
    if due:
        await conn.execute(
            _f.update().where(_f.c.id.in_(due), _f.c.state == PENDING).values(run_at=now, updated_at=now)
        )
    return len(due)


async def cancel(conn: AsyncConnection, reasons: Mapping[str, str], now: datetime) -> int:
    """Cancel the pending steps ``reasons`` names (step id → why), their held deliveries, and the steps behind
    those (a chain ends where its first unneeded fallback is). Returns how many steps were cancelled."""
    done = 0
    while reasons:
        rows = (
            await conn.execute(
                _f.update()
                .where(_f.c.id.in_(list(reasons)), _f.c.state == PENDING)
                .values(state=CANCELLED, lease_owner=None, lease_until=None, updated_at=now)
                .returning(_f.c.id, _f.c.message_id, _f.c.fallback_id)
            )
        ).all()
        if not rows:
            break
        done += len(rows)
        await _set_reasons(conn, {r.id: reasons[r.id] for r in rows})
        held = (
            await conn.execute(
                _d.update()
                .where(_d.c.id.in_([r.fallback_id for r in rows]), _d.c.status == S.ACCEPTED.value)
                .values(status=S.CANCELLED.value, updated_at=now)
                .returning(_d.c.id)
            )
        ).all()
        cancelled = {r.id for r in held}
        events = [
            outbox.event_row(r.message_id, r.fallback_id, S.CANCELLED, reasons[r.id], now, {"fallback_step": r.id})
            for r in rows
            if r.fallback_id in cancelled
        ]
        await rollups.append(conn, events)
        await outbox.refresh_messages(conn, {r.message_id for r in rows}, now)
        behind = (
            await conn.execute(
                sa.select(_f.c.id, _f.c.original_id).where(
                    _f.c.original_id.in_([r.fallback_id for r in rows]), _f.c.state == PENDING
                )
            )
        ).all()
        reasons = {
            b.id: f"fallback cancelled: the fallback {b.original_id} it stood behind was cancelled" for b in behind
        }
    return done


async def _set_reasons(conn: AsyncConnection, reasons: Mapping[str, str]) -> None:
    if reasons:
        await conn.execute(
            _f.update().where(_f.c.id == sa.bindparam("b_id")).values(reason=sa.bindparam("b_reason")),
            [{"b_id": k, "b_reason": v} for k, v in reasons.items()],
        )


# -- the firer's side -------------------------------------------------------------------------------------------


def _claim_statement(*, skip_locked: bool) -> Any:
    now = sa.bindparam("now", type_=t.UTCDateTime())
    free = sa.or_(_f.c.lease_until.is_(None), _f.c.lease_until < now)
    due = (
        sa.select(_f.c.id)
        .where(_f.c.state == PENDING, _f.c.run_at <= now, free)
        .order_by(_f.c.run_at)
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )
    if skip_locked:
        due = due.with_for_update(skip_locked=True)
    return (
        _f.update()
        .where(_f.c.id.in_(due.scalar_subquery()))
        .values(lease_owner=sa.bindparam("owner"), lease_until=sa.bindparam("lease_until", type_=t.UTCDateTime()))
        .returning(_f.c.id)
    )


_CLAIM = {sqlite: _claim_statement(skip_locked=not sqlite) for sqlite in (True, False)}


async def claim(
    conn: AsyncConnection, *, owner: str, now: datetime, lease: timedelta, limit: int, is_sqlite: bool
) -> list[Due]:
    """Lease up to ``limit`` due pending steps to ``owner`` (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
    firers never take the same step); a lease left by a firer that died runs out and the step is taken again."""
    params = {"owner": owner, "now": now, "lease_until": now + lease, "limit": limit}
    claimed = [row.id for row in (await conn.execute(_CLAIM[is_sqlite], params)).all()]
    if not claimed:
        return []
    o, h, m = _d.alias("o"), _d.alias("h"), t.messages
    query = (
        sa.select(
            _f.c.id,
            _f.c.message_id,
            _f.c.original_id,
            _f.c.fallback_id,
            _f.c.step,
            _f.c.when,
            _f.c.within,
            _f.c.run_at,
            o.c.channel.label("original_channel"),
            o.c.status.label("original_status"),
            h.c.channel,
            h.c.status,
            h.c.user_id,
            h.c.content,
            m.c.template_key,
            m.c.category,
            m.c.priority,
        )
        .join(o, o.c.id == _f.c.original_id)
        .join(h, h.c.id == _f.c.fallback_id)
        .join(m, m.c.id == _f.c.message_id)
        .where(_f.c.id.in_(claimed))
        .order_by(_f.c.run_at, _f.c.id)
    )
    return [Due(**row._mapping) for row in (await conn.execute(query)).all()]


async def finish(
    conn: AsyncConnection,
    *,
    owner: str,
    now: datetime,
    placed: Sequence[Placed],
    cancels: Mapping[str, str],
    waiting: Iterable[str] = (),
) -> list[Placed]:
    """Write what the firer decided, each step only if it is still pending and leased to ``owner`` (a receipt
    may have cancelled it meanwhile, or its lease run out and another firer taken it): ``placed`` fire — the
    held delivery placed, on its timeline, and the steps behind it armed — ``cancels`` are cancelled, and
    ``waiting`` go back to waiting for their original's failure. Returns the placements written."""
    written = []
    mine = sa.and_(_f.c.state == PENDING, _f.c.lease_owner == owner)
    for p in placed:
        due = p.due
        fired = (
            await conn.execute(
                _f.update()
                .where(_f.c.id == due.id, mine)
                .values(state=FIRED, reason=p.reason, lease_owner=None, lease_until=None, updated_at=now)
                .returning(_f.c.id)
            )
        ).first()
        if fired is None:
            continue
        moved = (
            await conn.execute(
                _d.update()
                .where(_d.c.id == due.fallback_id, _d.c.status == S.ACCEPTED.value)
                .values(status=p.status.value, run_at=p.run_at, address=p.address, content=p.content, updated_at=now)
                .returning(_d.c.id)
            )
        ).first()
        if moved is None:
            continue
        written.append(p)
        detail = {"fallback_of": due.original_id, "fallback_step": due.id, **p.detail}
        await rollups.append(conn, [outbox.event_row(due.message_id, due.fallback_id, p.status, p.reason, now, detail)])
        await _arm(conn, due.fallback_id, p, now)
    if cancels:
        query = sa.select(_f.c.id).where(_f.c.id.in_(list(cancels)), mine)
        owned: list[str] = list((await conn.execute(query)).scalars().all())
        await cancel(conn, {k: cancels[k] for k in owned}, now)
    waits = list(waiting)
    if waits:
        await conn.execute(
            _f.update().where(_f.c.id.in_(waits), mine).values(run_at=None, lease_owner=None, lease_until=None)
        )
    await outbox.refresh_messages(conn, {p.due.message_id for p in written}, now)
    return written


async def _arm(conn: AsyncConnection, delivery_id: str, placed: Placed, now: datetime) -> None:
    """The steps behind a fallback that just fired get their time: ``within`` after it goes out, or now when it
    was filtered (it will not reach the user; ``failed`` steps wait for a failure otherwise)."""
    rows = (
        await conn.execute(
            sa.select(_f.c.id, _f.c.when, _f.c.within).where(_f.c.original_id == delivery_id, _f.c.state == PENDING)
        )
    ).all()
    for row in rows:
        if placed.status is S.FILTERED:
            run_at: datetime | None = now
        else:
            run_at = placed.run_at + timedelta(seconds=row.within) if row.within is not None else None
        if run_at is not None:
            await conn.execute(_f.update().where(_f.c.id == row.id).values(run_at=run_at, updated_at=now))


async def steps_of(conn: AsyncConnection, message_id: str) -> list[Any]:
    """A message's steps in chain order (for support and the tests)."""
    query = sa.select(_f).where(_f.c.message_id == message_id).order_by(_f.c.step)
    return list((await conn.execute(query)).all())
