"""API keys: random, shown once, stored as a SHA-256 hash (a key has 256 bits of entropy, so a fast hash is
enough; no salt or slow KDF is needed as it is for passwords). Verified keys are remembered briefly so the hot
path does not read the table on every request.

A key carries roles (``clarion.domain.approval.ROLES``): ``admin`` may do everything, ``editor`` writes
templates, rules and segments, ``approver`` reviews template versions, ``sender`` sends and writes user data
(``approval.PERMISSIONS`` has the whole table). A key's name is the identity
approvals are compared by: whoever wrote a version cannot approve it under the same name."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import approval, ids
from clarion.store import tables as t
from clarion.store.db import Database

PREFIX = "clk_"
ALL_ROLES = ("admin",)  # what a key gets when no roles are given: everything
ROLES = approval.ROLES


@dataclass(frozen=True, slots=True)
class Caller:
    key_id: str
    name: str
    roles: tuple[str, ...]


def roles_from(names: Sequence[str] | None) -> tuple[str, ...]:
    """The roles named (``ALL_ROLES`` for none); raises ``InvalidInput`` (``unknown_role``) for an unknown one."""
    return approval.check_roles(names) if names else ALL_ROLES


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    def __init__(self, db: Database, *, cache_seconds: float = 10.0) -> None:
        self.db = db
        self.cache_seconds = cache_seconds
        self._verified: dict[str, tuple[float, Caller | None]] = {}

    async def create(self, name: str, roles: tuple[str, ...] = ALL_ROLES, *, key: str | None = None) -> str:
        """Store a new key (or the given one) under ``name`` and return it in clear — the only time it is.
        Raises ``InvalidInput`` (``unknown_role``) for a role not in ``ROLES``."""
        roles = approval.check_roles(roles)
        key = key or PREFIX + secrets.token_urlsafe(32)
        digest = hash_key(key)

        async def job(conn: AsyncConnection) -> None:
            exists = (await conn.execute(sa.select(t.api_keys.c.id).where(t.api_keys.c.key_hash == digest))).first()
            if exists is None:
                await conn.execute(
                    t.api_keys.insert().values(
                        id=ids.new_id(),
                        name=name,
                        prefix=key[:8],
                        key_hash=digest,
                        roles=list(roles),
                        created_at=datetime.now(UTC),
                    )
                )

        await self.db.write(job)
        return key

    async def verify(self, key: str) -> Caller | None:
        digest = hash_key(key)
        hit = self._verified.get(digest)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        k = t.api_keys
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(k.c.id, k.c.name, k.c.roles).where(k.c.key_hash == digest, k.c.revoked_at.is_(None))
                )
            ).first()
        caller = Caller(row.id, row.name, tuple(row.roles)) if row else None
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[digest] = (now + self.cache_seconds, caller)
        return caller

    async def described(self) -> list[dict[str, Any]]:
        """Every key as an operator may see it: never the key, only its first characters."""
        k = t.api_keys
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(k.c.id, k.c.name, k.c.prefix, k.c.roles, k.c.created_at, k.c.revoked_at).order_by(
                        k.c.created_at, k.c.id
                    )
                )
            ).all()
        return [
            {
                "id": r.id,
                "name": r.name,
                "prefix": r.prefix,
                "roles": list(r.roles),
                "created_at": r.created_at.isoformat(),
                "revoked_at": r.revoked_at.isoformat() if r.revoked_at else None,
            }
            for r in rows
        ]
