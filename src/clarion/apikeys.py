"""API keys: random, shown once, stored as a SHA-256 hash (a key has 256 bits of entropy, so a fast hash is
enough; no salt or slow KDF is needed as it is for passwords).

A key carries roles (``clarion.domain.approval.ROLES``): ``admin`` may do everything, ``editor`` writes
templates, rules and segments, ``approver`` reviews template versions, ``sender`` sends and writes user data
(``approval.PERMISSIONS`` has the whole table). A key's name is the identity
approvals are compared by: whoever wrote a version cannot approve it under the same name.

``verify`` runs on every request, so in the common case it is a dictionary hit and touches no database:

- **Revocation** is seen at once by the revoking process (it forgets every verified key), and within
  ``revocation_check_seconds`` (0.5 s) by every other process: the first request after that interval reads a
  watermark of the table (how many keys are revoked, and the latest ``revoked_at``) and, when it moved, forgets
  every verified key. One small read per process per half second, whatever the traffic.
- **Expiry** is checked against the clock on every answer, cached or not: an expired key is refused at once.
- **Last use** is remembered in memory and written in the background, in one batch at most every
  ``flush_seconds`` (a minute), so ``last_used_at`` is at most about a minute behind (``GET /v1/api-keys`` adds
  what this process has not written yet). A failed write is logged and retried with the next batch; a request
  never waits for one. ``close`` writes what is left.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import approval, errors, ids
from clarion.store import audit as audit_log
from clarion.store import driver
from clarion.store import tables as t
from clarion.store.db import Database

log = logging.getLogger(__name__)

PREFIX = "clk_"
ALL_ROLES = ("admin",)  # what a key gets when no roles are given: everything
ROLES = approval.ROLES
_NEVER = float("inf")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True, slots=True)
class Caller:
    key_id: str
    name: str
    roles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Issued:
    """A key just created: ``key`` is its clear text, never stored."""

    id: str
    key: str
    name: str
    prefix: str
    roles: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class Revoked:
    id: str
    name: str
    prefix: str
    revoked_at: datetime
    already: bool  # revoked before this call: nothing was written


def roles_from(names: Sequence[str] | None) -> tuple[str, ...]:
    """The roles named (``ALL_ROLES`` for none); raises ``InvalidInput`` (``unknown_role``) for an unknown one."""
    return approval.check_roles(names) if names else ALL_ROLES


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def expiry_from(text: str, now: datetime) -> datetime:
    """An expiry as an operator writes it: a duration from ``now`` (``90d``, ``12h``, ``30m``, ``2w``) or an
    ISO-8601 date or time (UTC when it names no zone). Raises ``InvalidInput`` for anything else."""
    duration = _DURATION.match(text)
    if duration:
        return now + timedelta(**{_UNITS[duration[2]]: float(duration[1])})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise errors.InvalidInput(
            f"expiry {text!r} is neither a duration (90d, 12h, 30m, 2w) nor an ISO-8601 date or time",
            details={"field": "expires_at"},
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _state(expires_at: datetime | None, revoked_at: datetime | None, now: datetime) -> str:
    if revoked_at is not None:
        return "revoked"
    return "expired" if expires_at is not None and expires_at <= now else "active"


class ApiKeys:
    def __init__(
        self,
        db: Database,
        *,
        cache_seconds: float = 10.0,
        revocation_check_seconds: float = 0.5,
        flush_seconds: float = 60.0,
    ) -> None:
        self.db = db
        self.cache_seconds = cache_seconds
        self.revocation_check_seconds = revocation_check_seconds
        self.flush_seconds = flush_seconds
        # digest -> (cached until, on the monotonic clock; the caller or None; expires at, a Unix time)
        self._verified: dict[str, tuple[float, Caller | None, float]] = {}
        self._generation = 0  # moves whenever the cache is forgotten: a read begun before is not cached
        self._next_check = 0.0
        self._watermark: tuple[int, Any] | None = None
        self._used: dict[str, float] = {}  # key id -> last use (Unix time) not written yet
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[int]] = set()

    # -- the hot path ----------------------------------------------------------------------------------------

    async def verify(self, key: str) -> Caller | None:
        """The key's owner, or None for a key that is unknown, revoked or expired."""
        now = time.monotonic()
        if now >= self._next_check:
            await self._check_revocations(now)
        digest = hash_key(key)
        hit = self._verified.get(digest)
        if hit is None or hit[0] <= now:
            hit = await self._load(digest, now)
        caller = hit[1]
        if caller is None:
            return None
        wall = time.time()
        if wall >= hit[2]:
            return None
        self._used[caller.key_id] = wall
        if self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(self.flush_seconds, self._start_flush)
        return caller

    async def _load(self, digest: str, now: float) -> tuple[float, Caller | None, float]:
        generation = self._generation
        k = t.api_keys
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(k.c.id, k.c.name, k.c.roles, k.c.expires_at).where(
                        k.c.key_hash == digest, k.c.revoked_at.is_(None)
                    )
                )
            ).first()
        if row is None:
            entry: tuple[float, Caller | None, float] = (now + self.cache_seconds, None, _NEVER)
        else:
            expires = row.expires_at.timestamp() if row.expires_at else _NEVER
            entry = (now + self.cache_seconds, Caller(row.id, row.name, tuple(row.roles)), expires)
        if generation == self._generation:  # else a revocation was seen while reading: do not keep this answer
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[digest] = entry
        return entry

    async def _check_revocations(self, now: float) -> None:
        """Forget every verified key when the table's revocations moved since the last look. Concurrent requests
        meanwhile answer from the cache: the bound is the interval plus this one read."""
        self._next_check = now + self.revocation_check_seconds
        k = t.api_keys
        try:
            async with self.db.read() as conn:
                row = (await conn.execute(sa.select(sa.func.count(k.c.revoked_at), sa.func.max(k.c.revoked_at)))).one()
        except Exception:
            log.warning("could not read API key revocations; verifying keys against the table", exc_info=True)
            self.forget()
            return
        watermark = (row[0], row[1])
        if watermark != self._watermark:
            if self._watermark is not None:
                self.forget()
            self._watermark = watermark

    def forget(self) -> None:
        """Drop every verified key: the next request with each is checked against the table."""
        self._verified.clear()
        self._generation += 1

    # -- last use --------------------------------------------------------------------------------------------

    def _start_flush(self) -> None:
        self._flush_timer = None
        task = asyncio.get_running_loop().create_task(self.flush(), name="clarion-api-keys-last-use")
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def flush(self) -> int:
        """Write the last uses recorded since the previous flush, in one batch; how many keys it wrote. Never
        raises: on failure the uses are kept for the next batch."""
        used, self._used = self._used, {}
        if not used:
            return 0
        k = t.api_keys
        statement = (
            k.update()
            .where(
                k.c.id == sa.bindparam("b_id"),
                sa.or_(k.c.last_used_at.is_(None), k.c.last_used_at < sa.bindparam("b_at")),
            )
            .values(last_used_at=sa.bindparam("b_at"))
        )
        rows = [{"b_id": key_id, "b_at": datetime.fromtimestamp(at, UTC)} for key_id, at in sorted(used.items())]

        async def job(conn: AsyncConnection) -> None:
            await driver.executemany(conn, statement, rows)

        try:
            await self.db.write(job)
        except Exception:
            log.warning("could not record the last use of %d API keys; retrying later", len(rows), exc_info=True)
            for key_id, at in used.items():
                if self._used.get(key_id, 0.0) < at:
                    self._used[key_id] = at
            if self._flush_timer is None:
                self._flush_timer = asyncio.get_running_loop().call_later(self.flush_seconds, self._start_flush)
            return 0
        return len(rows)

    async def close(self) -> None:
        """Write the last uses not written yet (before the database closes)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)
        await self.flush()
        if self._flush_timer is not None:  # that flush failed: nothing will retry it now
            self._flush_timer.cancel()
            self._flush_timer = None

    # -- changes ---------------------------------------------------------------------------------------------

    async def create(self, name: str, roles: tuple[str, ...] = ALL_ROLES, *, key: str | None = None) -> str:
        """``issue`` without an expiry or an audit entry, returning only the key (the bootstrap and demo keys)."""
        return (await self.issue(name, roles, key=key)).key

    async def issue(
        self,
        name: str,
        roles: Sequence[str] = ALL_ROLES,
        *,
        expires_at: datetime | None = None,
        key: str | None = None,
        actor: str | None = None,
    ) -> Issued:
        """Store a new key (or the given one) under ``name`` and return it in clear — the only time it is.
        Given a key already stored, that key is returned as it is (a revoked one stays revoked). With ``actor``
        the creation is written to the audit log, in the same transaction. Raises ``InvalidInput``
        (``unknown_role``) for a role not in ``ROLES``, and for an expiry that is naive or not in the future."""
        roles = approval.check_roles(roles)
        now = datetime.now(UTC)
        if expires_at is not None:
            if expires_at.tzinfo is None:
                raise errors.InvalidInput("expires_at needs a time zone", details={"field": "expires_at"})
            if expires_at <= now:
                raise errors.InvalidInput(
                    "expires_at is not in the future", details={"field": "expires_at", "now": now.isoformat()}
                )
            expires_at = expires_at.astimezone(UTC)
        key = key or PREFIX + secrets.token_urlsafe(32)
        digest = hash_key(key)
        k = t.api_keys

        async def job(conn: AsyncConnection) -> Issued:
            found = (await conn.execute(sa.select(k).where(k.c.key_hash == digest))).first()
            if found is not None:
                return Issued(
                    found.id, key, found.name, found.prefix, tuple(found.roles), found.created_at, found.expires_at
                )
            made = Issued(ids.new_id(), key, name, key[:8], roles, now, expires_at)
            await conn.execute(
                k.insert().values(
                    id=made.id,
                    name=name,
                    prefix=made.prefix,
                    key_hash=digest,
                    roles=list(roles),
                    created_at=now,
                    expires_at=expires_at,
                )
            )
            if actor is not None:
                detail = {
                    "name": name,
                    "prefix": made.prefix,
                    "roles": list(roles),
                    "expires_at": expires_at.isoformat() if expires_at else None,
                }
                await audit_log.record(
                    conn, actor=actor, action="api_key.create", subject=f"api_key:{made.id}", at=now, detail=detail
                )
            return made

        issued = await self.db.write(job)
        self._verified.pop(digest, None)  # refused a moment ago, perhaps: not any longer
        return issued

    async def revoke(self, key_id: str, *, actor: str | None) -> Revoked:
        """Refuse the key from now on: at once in this process, within ``revocation_check_seconds`` in the others.
        The row stays (``GET /v1/api-keys`` and the audit log show it). Revoking a revoked key changes nothing.
        Raises ``NotFound`` for an unknown id."""
        k = t.api_keys
        now = datetime.now(UTC)

        async def job(conn: AsyncConnection) -> Revoked:
            found = (
                await conn.execute(sa.select(k.c.name, k.c.prefix, k.c.revoked_at).where(k.c.id == key_id))
            ).first()
            if found is None:
                raise errors.NotFound("api key", key_id)
            if found.revoked_at is not None:
                return Revoked(key_id, found.name, found.prefix, found.revoked_at, already=True)
            await conn.execute(k.update().where(k.c.id == key_id).values(revoked_at=now))
            await audit_log.record(
                conn,
                actor=actor,
                action="api_key.revoke",
                subject=f"api_key:{key_id}",
                at=now,
                detail={"name": found.name, "prefix": found.prefix},
            )
            return Revoked(key_id, found.name, found.prefix, now, already=False)

        revoked = await self.db.write(job)
        self.forget()
        return revoked

    # -- reading ---------------------------------------------------------------------------------------------

    async def described(self) -> list[dict[str, Any]]:
        """Every key as an operator may see it: never the key, only its first characters. ``last_used_at``
        includes this process's uses not written yet."""
        k = t.api_keys
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(
                        k.c.id,
                        k.c.name,
                        k.c.prefix,
                        k.c.roles,
                        k.c.created_at,
                        k.c.expires_at,
                        k.c.revoked_at,
                        k.c.last_used_at,
                    ).order_by(k.c.created_at, k.c.id)
                )
            ).all()
        now = datetime.now(UTC)
        described = []
        for r in rows:
            last_used = r.last_used_at
            pending = self._used.get(r.id)
            if pending is not None and (last_used is None or last_used.timestamp() < pending):
                last_used = datetime.fromtimestamp(pending, UTC)
            described.append(
                {
                    "id": r.id,
                    "name": r.name,
                    "prefix": r.prefix,
                    "roles": list(r.roles),
                    "status": _state(r.expires_at, r.revoked_at, now),
                    "created_at": r.created_at.isoformat(),
                    "expires_at": r.expires_at.isoformat() if r.expires_at else None,
                    "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
                    "last_used_at": last_used.isoformat() if last_used else None,
                }
            )
        return described
