"""Operator accounts: a name, a password stored as an argon2 hash, one role (``roles.ROLES``), and a disabled flag.

Accounts are disabled, never deleted, so that the audit log's ``operator:<name>`` always names somebody. Every
change is audited in its own transaction (``operator.create``, ``operator.disable``), never with the password.
Hashing and verifying take tens of milliseconds of CPU on purpose, so they run in a thread, off the event loop."""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import argon2
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.console import roles
from clarion.domain import errors
from clarion.store import audit
from clarion.store import tables as t
from clarion.store.db import Database

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 10
MAX_PASSWORD = 1000
OPS = t.operators


@dataclass(frozen=True, slots=True)
class Operator:
    name: str
    role: str
    disabled: bool
    created_at: datetime
    last_login_at: datetime | None

    @property
    def actor(self) -> str:
        """How the audit log and the timelines name what this operator did."""
        return actor(self.name)


def actor(name: str) -> str:
    return f"operator:{name}"


def _operator(row: Any) -> Operator:
    return Operator(row.name, row.role, row.disabled, row.created_at, row.last_login_at)


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise errors.InvalidInput(
            "name: 1 to 64 letters, digits or _ . @ -, starting with a letter or digit", details={"field": "name"}
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD or len(password) > MAX_PASSWORD:
        raise errors.InvalidInput(
            f"password: between {MIN_PASSWORD} and {MAX_PASSWORD} characters", details={"field": "password"}
        )
    return password


class Operators:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._hasher = argon2.PasswordHasher()
        self._dummy: str | None = None  # verified against for unknown names, so they take as long as known ones

    async def create(self, name: str, role: str, password: str, *, actor: str | None) -> Operator:
        """A new enabled operator; ``InvalidInput`` for a bad name, role or password, ``Conflict`` for a name
        that is taken (disabled accounts included)."""
        check_name(name)
        roles.check(role)
        digest = await asyncio.to_thread(self._hasher.hash, check_password(password))
        now = datetime.now(UTC)

        async def job(conn: AsyncConnection) -> Operator:
            if (await conn.execute(sa.select(OPS.c.name).where(OPS.c.name == name))).first() is not None:
                raise errors.Conflict(f"operator {name!r} exists already", details={"field": "name"})
            await conn.execute(
                OPS.insert().values(
                    name=name, password_hash=digest, role=role, disabled=False, created_at=now, updated_at=now
                )
            )
            detail = {"name": name, "role": role}
            await audit.record(
                conn, actor=actor, action="operator.create", subject=f"operator:{name}", at=now, detail=detail
            )
            return Operator(name, role, False, now, None)

        return await self.db.write(job)

    async def disable(self, name: str, *, actor: str | None) -> Operator:
        """Refuse the operator's logins and sessions from now on (``NotFound`` for an unknown name). Disabling a
        disabled operator changes nothing and is not audited again."""
        now = datetime.now(UTC)

        async def job(conn: AsyncConnection) -> Operator:
            row = (await conn.execute(sa.select(OPS).where(OPS.c.name == name))).first()
            if row is None:
                raise errors.NotFound("operator", name)
            if not row.disabled:
                await conn.execute(OPS.update().where(OPS.c.name == name).values(disabled=True, updated_at=now))
                await audit.record(
                    conn, actor=actor, action="operator.disable", subject=f"operator:{name}", at=now, detail=None
                )
            return Operator(row.name, row.role, True, row.created_at, row.last_login_at)

        return await self.db.write(job)

    async def change_password(self, name: str, old: str, new: str) -> None:
        """Replace the operator's own password, proven by the current one: ``InvalidInput`` naming
        ``old_password`` when it is wrong (or the account is disabled or gone), naming ``password`` when the new
        one is too short or too long. Audited as ``operator.password`` by the operator, never with a password."""
        try:
            check_password(new)
        except errors.InvalidInput as exc:
            raise errors.InvalidInput(exc.message, code="weak_password", details={"field": "password"}) from None
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(OPS).where(OPS.c.name == name))).first()
        if row is None or row.disabled or not await asyncio.to_thread(self._verify, row.password_hash, old):
            raise errors.InvalidInput(
                "old_password: the current password is wrong", code="wrong_password", details={"field": "old_password"}
            )
        digest = await asyncio.to_thread(self._hasher.hash, new)
        now = datetime.now(UTC)

        async def job(conn: AsyncConnection) -> None:
            await conn.execute(OPS.update().where(OPS.c.name == name).values(password_hash=digest, updated_at=now))
            await audit.record(
                conn, actor=actor(name), action="operator.password", subject=f"operator:{name}", at=now, detail=None
            )

        await self.db.write(job)

    async def get(self, name: str) -> Operator | None:
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(OPS).where(OPS.c.name == name))).first()
        return _operator(row) if row is not None else None

    async def listed(self) -> list[Operator]:
        async with self.db.read() as conn:
            rows = (await conn.execute(sa.select(OPS).order_by(OPS.c.name))).all()
        return [_operator(r) for r in rows]

    async def authenticate(self, name: str, password: str) -> Operator | None:
        """The enabled operator whose password this is, its last login recorded; None otherwise (an unknown name
        costs a verification too, so the answer's timing does not tell which names exist)."""
        async with self.db.read() as conn:
            row = (await conn.execute(sa.select(OPS).where(OPS.c.name == name))).first()
        if row is None:
            if self._dummy is None:
                self._dummy = await asyncio.to_thread(self._hasher.hash, secrets.token_urlsafe(16))
            await asyncio.to_thread(self._verify, self._dummy, password)
            return None
        if not await asyncio.to_thread(self._verify, row.password_hash, password) or row.disabled:
            return None
        now = datetime.now(UTC)

        async def job(conn: AsyncConnection) -> None:
            await conn.execute(OPS.update().where(OPS.c.name == name).values(last_login_at=now))

        await self.db.write(job)
        return Operator(row.name, row.role, row.disabled, row.created_at, now)

    def _verify(self, digest: str, password: str) -> bool:
        try:
            return self._hasher.verify(digest, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return False

    async def first_admin(self) -> str | None:
        """With no operator at all, create ``admin`` with a random one-time password and return it (to be shown
        once, by ``clarion serve``); None when operators exist."""
        async with self.db.read() as conn:
            if (await conn.execute(sa.select(sa.func.count()).select_from(OPS))).scalar_one():
                return None
        password = secrets.token_urlsafe(12)
        try:
            await self.create("admin", "admin", password, actor="clarion:first-start")
        except errors.Conflict:  # another process made it meanwhile: its password is the one shown
            return None
        return password
