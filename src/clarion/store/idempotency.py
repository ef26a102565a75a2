"""Idempotency keys claimed in the database, so that several processes given one key compose it once.

A request with a key first writes a claim, in a short transaction of its own: a ``send_requests`` row holding
the key in ``claimed_key``, with no response. Only the claimant runs the policies (whose caps and dedup marks are
spent in counters the processes share). Its answer is an ordinary ``send_requests`` row holding the key in
``idempotency_key``, inserted with the messages and deliveries — a plain insert, so it is group-committed with
the other requests' rows in one ordered write — and the claim is then deleted. So a claim never leaves
half-written rows, and the unique ``idempotency_key`` still refuses a second answer should two claimants ever
compose at once (one outlived its lease).

Another process that finds the claim waits for the answer and replays it. A claim whose holder died (no answer
after the lease) is taken over by an update conditional on the claim's id, so exactly one contender wins it; a
key whose answer is past the idempotency window is freed (its answer row deleted) in the claim's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from clarion.store import tables as t
from clarion.store.db import Conn, Database

_R = t.send_requests


@dataclass(frozen=True, slots=True)
class Claim:
    """A request's claim on an idempotency key: ``id`` is the claim row's own, not the request's."""

    id: str
    kind: str
    key: str
    fingerprint: str
    now: datetime


@dataclass(frozen=True, slots=True)
class Found:
    """What the database holds for a key: its answer (None: not answered yet) and its claim (None: not claimed)."""

    answer: Any
    claim: Any


async def find(db: Database, key: str) -> Found:
    async with db.read() as conn:
        query = sa.select(_R).where(sa.or_(_R.c.idempotency_key == key, _R.c.claimed_key == key))
        rows = (await conn.execute(query)).all()
    answer = next((r for r in rows if r.idempotency_key == key), None)
    return Found(answer, next((r for r in rows if r.claimed_key == key), None))


async def claim(db: Database, claim: Claim, *, expired: str | None = None) -> bool:
    """Write ``claim`` on an unclaimed key, deleting the ``expired`` answer (past the window) it replaces; False if
    another request claimed the key first (nothing is written then)."""
    row = {
        "id": claim.id,
        "kind": claim.kind,
        "claimed_key": claim.key,
        "fingerprint": claim.fingerprint,
        "created_at": claim.now,
    }
    statement = db.insert(_R).values(response=sa.null(), **row)  # SQL NULL, not JSON null
    statement = statement.on_conflict_do_nothing(index_elements=[_R.c.claimed_key])

    async def job(conn: Conn) -> bool:
        if not (await conn.execute(statement)).rowcount:
            return False
        await _free(conn, claim.key, expired)
        return True

    return await db.write(job)


async def take_over(db: Database, seen: str, claim: Claim, *, expired: str | None = None) -> bool:
    """Replace the key's claim ``seen``, whose holder died, by ``claim`` (deleting the ``expired`` answer it
    replaces); False if another request took it over first."""
    statement = (
        _R.update()
        .where(_R.c.claimed_key == claim.key, _R.c.id == seen)
        .values(id=claim.id, kind=claim.kind, fingerprint=claim.fingerprint, created_at=claim.now)
    )

    async def job(conn: Conn) -> bool:
        if not (await conn.execute(statement)).rowcount:
            return False
        await _free(conn, claim.key, expired)
        return True

    return await db.write(job)


async def _free(conn: Conn, key: str, expired: str | None) -> None:
    if expired is not None:
        await conn.execute(_R.delete().where(_R.c.id == expired, _R.c.idempotency_key == key))


async def release(db: Database, claim_id: str) -> None:
    """Delete a claim once its answer is written, or its request failed (so a retry need not wait for the
    lease); a claim taken over by another request is that request's, and stays."""
    statement = _R.delete().where(_R.c.id == claim_id, _R.c.claimed_key.is_not(None))

    async def job(conn: Conn) -> None:
        await conn.execute(statement)

    await db.write(job)
