"""Reads and writes of campaigns, their runs and the runs' frozen audiences. SQL in, rows out; the lifecycle's
rules are ``clarion.campaigns.lifecycle``'s.

A run's frozen audience is cut into parts (``campaign_run_parts``), each leased to one runner at a time, so several
runners fan one run out together. A part's progress moves only through ``advance_part``, which the fan-out calls
inside the transaction that writes a batch's messages: the part's cursor moves from the value the batch was read
at, or the whole batch is rolled back. That one guard is what makes a resumed run exact. The run's own cursor,
``processed`` and counts are the sums over its parts, added in the same transaction (``add_progress``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import errors, model
from clarion.store import outbox, rollups
from clarion.store import tables as t
from clarion.store.db import executemany, insert_of

C = t.campaigns
R = t.campaign_runs
A = t.campaign_audience
P = t.campaign_run_parts
M = t.messages
ACTIVE = ("running", "paused")
NOT_REACHED = (model.MessageStatus.FILTERED.value, model.MessageStatus.FAILED.value)


class Moved(errors.Conflict):
    """The run moved under a batch (another runner took it over, or it was finished): the batch is not written."""


def subject(key: str) -> str:
    """How the audit log names a campaign."""
    return f"campaign:{key}"


# -- campaigns -----------------------------------------------------------------------------------------------


async def get(conn: AsyncConnection, key: str, *, for_update: bool = False) -> Any:
    query = sa.select(C).where(C.c.key == key)
    return (await conn.execute(query.with_for_update() if for_update else query)).first()


async def list_page(conn: AsyncConnection, *, limit: int, after: str | None = None) -> list[Any]:
    query = sa.select(C).order_by(C.c.key).limit(limit)
    if after is not None:
        query = query.where(C.c.key > after)
    return list((await conn.execute(query)).all())


async def save(conn: AsyncConnection, key: str, definition: Mapping[str, Any], *, author: str, now: datetime) -> bool:
    """Store the definition as a draft (a saved change is reviewed again); True when the campaign is new."""
    values = {"definition": dict(definition), "status": "draft", "author": author, "approvals": [], "updated_at": now}
    values["next_run_at"] = None
    if (await conn.execute(C.update().where(C.c.key == key).values(values))).rowcount:
        return False
    await conn.execute(C.insert().values(key=key, created_at=now, **values))
    return True


async def update(conn: AsyncConnection, key: str, now: datetime, **values: Any) -> None:
    await conn.execute(C.update().where(C.c.key == key).values(updated_at=now, **values))


async def due(conn: AsyncConnection, now: datetime, *, limit: int = 10) -> list[Any]:
    query = sa.select(C).where(C.c.status == "scheduled", C.c.next_run_at <= now).order_by(C.c.next_run_at).limit(limit)
    return list((await conn.execute(query)).all())


# -- runs ----------------------------------------------------------------------------------------------------


async def run(conn: AsyncConnection, run_id: str) -> Any:
    return (await conn.execute(sa.select(R).where(R.c.id == run_id))).first()


async def runs_of(conn: AsyncConnection, key: str, *, limit: int = 20) -> list[Any]:
    query = sa.select(R).where(R.c.campaign_key == key).order_by(R.c.started_at.desc(), R.c.id.desc()).limit(limit)
    return list((await conn.execute(query)).all())


async def active_run(conn: AsyncConnection, key: str) -> Any:
    query = sa.select(R).where(R.c.campaign_key == key, R.c.status.in_(ACTIVE))
    return (await conn.execute(query)).first()


async def insert_audience(conn: AsyncConnection, run_id: str, start: int, user_ids: Sequence[str]) -> None:
    if user_ids:
        await executemany(
            conn,
            insert_of(A),
            [{"run_id": run_id, "position": start + i, "user_id": u} for i, u in enumerate(user_ids)],
        )


async def delete_audience(conn: AsyncConnection, run_id: str) -> None:
    await conn.execute(A.delete().where(A.c.run_id == run_id))


async def create_run(
    conn: AsyncConnection,
    run_id: str,
    campaign: Any,
    *,
    audience: int,
    counts: Mapping[str, Any],
    now: datetime,
    next_run_at: datetime | None,
    parts: Sequence[tuple[int, int]] | None = None,
) -> None:
    """The run's row and its parts (``(start, stop)`` positions; one part of the whole audience unless given),
    and the campaign moved to running — only if it is still the scheduled campaign that was found due (another
    runner may have started it meanwhile): raises ``Moved`` otherwise."""
    moved = await conn.execute(
        C.update()
        .where(C.c.key == campaign.key, C.c.status == "scheduled", C.c.next_run_at == campaign.next_run_at)
        .values(status="running", next_run_at=next_run_at, updated_at=now)
    )
    if not moved.rowcount:
        raise Moved("the campaign was started elsewhere", details={"campaign": campaign.key})
    await conn.execute(
        R.insert().values(
            id=run_id,
            campaign_key=campaign.key,
            status="running",
            audience=audience,
            processed=0,
            cursor=0,
            counts=dict(counts),
            lease_owner=None,
            lease_until=None,
            started_at=now,
            finished_at=None,
        )
    )
    bounds = list(parts) if parts is not None else [(0, audience)]
    if bounds and audience:
        await executemany(
            conn,
            insert_of(P),
            [
                {
                    "run_id": run_id,
                    "part": i,
                    "start": a,
                    "stop": b,
                    "cursor": a,
                    "lease_owner": None,
                    "lease_until": None,
                }
                for i, (a, b) in enumerate(bounds)
            ],
        )


async def lease_parts(
    conn: AsyncConnection, *, owner: str, now: datetime, until: datetime, limit: int, is_sqlite: bool
) -> list[Any]:
    """Parts of running runs this owner may advance now — at most one per run, its own first, then unleased
    ones and those whose lease ran out (their runner died), of up to ``limit`` runs in the order they started —
    leased to it (taken or extended) in the same transaction. Several runners asking at once get different
    parts (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; one writer on SQLite)."""
    free = sa.or_(P.c.lease_owner.is_(None), P.c.lease_owner == owner, P.c.lease_until < now)
    candidates = (
        sa.select(P.c.run_id, P.c.part)
        .join(R, R.c.id == P.c.run_id)
        .where(R.c.status == "running", P.c.cursor < P.c.stop, free)
        .order_by(R.c.started_at, R.c.id, sa.case((P.c.lease_owner == owner, 0), else_=1), P.c.part)
        .limit(limit * 8)
    )
    if not is_sqlite:
        candidates = candidates.with_for_update(of=P, skip_locked=True)
    chosen: dict[str, int] = {}
    for row in (await conn.execute(candidates)).all():
        if row.run_id not in chosen and len(chosen) < limit:
            chosen[row.run_id] = row.part
    leased = []
    for run_id, part in chosen.items():
        row = (
            await conn.execute(
                P.update()
                .where(P.c.run_id == run_id, P.c.part == part)
                .values(lease_owner=owner, lease_until=until)
                .returning(*P.c)
            )
        ).one()
        leased.append(row)
    return leased


async def parts_of(conn: AsyncConnection, run_id: str) -> list[Any]:
    return list((await conn.execute(sa.select(P).where(P.c.run_id == run_id).order_by(P.c.part))).all())


async def done_unfinished(conn: AsyncConnection) -> list[Any]:
    """Running runs whose every user is processed but that were not finished (their runner stopped between the
    last batch and finishing the run)."""
    query = sa.select(R.c.id, R.c.campaign_key).where(R.c.status == "running", R.c.cursor >= R.c.audience)
    return list((await conn.execute(query)).all())


async def audience_slice(conn: AsyncConnection, run_id: str, start: int, size: int) -> list[str]:
    query = (
        sa.select(A.c.user_id)
        .where(A.c.run_id == run_id, A.c.position >= start, A.c.position < start + size)
        .order_by(A.c.position)
    )
    return list((await conn.execute(query)).scalars())


async def advance_part(
    conn: AsyncConnection,
    run_id: str,
    part: int,
    *,
    owner: str,
    cursor: int,
    to: int,
    lease_until: datetime,
) -> None:
    """Move a part's cursor from ``cursor`` to ``to``, as the owner of its lease; raises ``Moved`` (rolling the
    batch back) when it is not there any more."""
    moved = await conn.execute(
        P.update()
        .where(P.c.run_id == run_id, P.c.part == part, P.c.cursor == cursor, P.c.lease_owner == owner)
        .values(cursor=to, lease_until=lease_until)
    )
    if not moved.rowcount:
        raise Moved("the run moved on under this batch", details={"run": run_id, "part": part, "cursor": cursor})


async def add_progress(
    conn: AsyncConnection,
    run_id: str,
    users: int,
    merge: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    *,
    is_sqlite: bool,
) -> None:
    """Add a written batch to its run: ``users`` more processed, its counts merged into the run's (``merge``
    gets the run's counts as they are now, the row locked on PostgreSQL). Raises ``Moved`` when the run is
    finished (cancelled meanwhile)."""
    query = sa.select(R.c.counts).where(R.c.id == run_id, R.c.status.in_(ACTIVE))
    found = (await conn.execute(query if is_sqlite else query.with_for_update())).first()
    if found is None:
        raise Moved("the run was finished under this batch", details={"run": run_id})
    await conn.execute(
        R.update()
        .where(R.c.id == run_id)
        .values(cursor=R.c.cursor + users, processed=R.c.processed + users, counts=dict(merge(found.counts)))
    )


async def set_counts(conn: AsyncConnection, run_id: str, counts: Mapping[str, Any]) -> None:
    """Replace a run's counts (its A/B decision, say) without moving its cursor."""
    await conn.execute(R.update().where(R.c.id == run_id).values(counts=dict(counts)))


async def finish_run(conn: AsyncConnection, run_id: str, status: str, now: datetime, **values: Any) -> None:
    """End the run; its parts go (a finished run is not advanced again)."""
    await conn.execute(
        R.update()
        .where(R.c.id == run_id)
        .values(status=status, finished_at=now, lease_owner=None, lease_until=None, **values)
    )
    await conn.execute(P.delete().where(P.c.run_id == run_id))


async def set_run_status(conn: AsyncConnection, run_id: str, status: str, *, keep_lease: bool = False) -> None:
    """``keep_lease`` (a pause): the batches in flight still commit; otherwise any runner may take its parts."""
    await conn.execute(R.update().where(R.c.id == run_id).values(status=status))
    if not keep_lease:
        await conn.execute(P.update().where(P.c.run_id == run_id).values(lease_owner=None, lease_until=None))


# -- who a campaign reached ----------------------------------------------------------------------------------


async def reached_since(conn: AsyncConnection, key: str, since: datetime) -> set[str]:
    """Users holding a message (not filtered, not failed) of a run of ``key`` started since ``since``."""
    runs: list[str] = list(
        (await conn.execute(sa.select(R.c.id).where(R.c.campaign_key == key, R.c.started_at >= since))).scalars()
    )
    if not runs:
        return set()
    query = sa.select(M.c.user_id).where(M.c.campaign_run.in_(runs), M.c.status.not_in(NOT_REACHED))
    return set((await conn.execute(query)).scalars())


async def holding_message(conn: Any, run_id: str, user_ids: Sequence[str]) -> set[str]:
    """Those of ``user_ids`` who already have a message of the run."""
    if not user_ids:
        return set()
    query = sa.select(M.c.user_id).where(M.c.campaign_run == run_id, M.c.user_id.in_(list(user_ids)))
    return set((await conn.execute(query)).scalars())


async def message_statuses(conn: AsyncConnection, run_id: str) -> dict[str, int]:
    """How many of the run's messages are in each status now (the dispatcher keeps them current)."""
    query = sa.select(M.c.status, sa.func.count()).where(M.c.campaign_run == run_id).group_by(M.c.status)
    return {row[0]: int(row[1]) for row in (await conn.execute(query)).all()}


async def cancel_pending(conn: AsyncConnection, run_id: str, *, reason: str, now: datetime) -> int:
    """Fail the run's deliveries that have not gone out yet (queued or deferred): a cancelled campaign stops."""
    d = t.deliveries
    mine = sa.select(M.c.id).where(M.c.campaign_run == run_id).scalar_subquery()
    rows = (
        await conn.execute(
            d.update()
            .where(d.c.message_id.in_(mine), d.c.status.in_(("queued", "deferred")))
            .values(status="failed", last_error=reason, updated_at=now)
            .returning(d.c.id, d.c.message_id)
        )
    ).all()
    if rows:
        await rollups.append(conn, [outbox.event_row(r.message_id, r.id, "failed", reason, now) for r in rows])
        await outbox.refresh_messages(conn, {r.message_id for r in rows}, now)
    return len(rows)


# A part's lease names its runner as ``clarion.owners`` does (host, pid, process start). When a runner process on
# this host is known to have stopped, its parts are released so the next runner continues them straight away; the
# run itself (status, cursor, counts) is not touched, so a pause or a cancel meanwhile stands. The deliveries'
# own leases are taken back by ``outbox.reclaim_gone``.
async def release_runs(conn: AsyncConnection, *, gone: Callable[[str], str | None]) -> dict[str, str]:
    """Release the parts of runs leased to an owner ``gone`` says has stopped; returns the ids of the runs whose
    parts were released → why."""
    active = sa.select(R.c.id).where(R.c.status.in_(ACTIVE)).scalar_subquery()
    leased = sa.and_(P.c.run_id.in_(active), P.c.lease_owner.is_not(None))
    owners: list[str] = list((await conn.execute(sa.select(P.c.lease_owner).where(leased).distinct())).scalars())
    released: dict[str, str] = {}
    for owner in owners:
        reason = gone(owner)
        if reason is None:
            continue
        ids = (
            await conn.execute(
                P.update()
                .where(leased, P.c.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
                .returning(P.c.run_id)
            )
        ).scalars()
        released.update(dict.fromkeys(ids, reason))
    return released
