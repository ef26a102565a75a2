"""The audit log: who changed what and when, and what the change was.

Every configuration change writes its entry with ``record`` on the connection that makes the change, inside the
same ``Database.write`` job, so the change and its entry commit together or not at all. An entry names its
``subject`` as ``kind:key`` (``cap:daily``, ``user:u1``; a template's version ``template:welcome@3``) and says in
``detail`` what changed — never a secret."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.store import tables as t

LOG = t.audit_log


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level fields that differ, as ``{"before": {field: old}, "after": {field: new}}`` (a field one side
    lacks is None there): what a settings entry keeps, rather than two whole documents."""
    fields = [f for f in dict.fromkeys([*before, *after]) if before.get(f) != after.get(f)]
    return {"before": {f: before.get(f) for f in fields}, "after": {f: after.get(f) for f in fields}}


async def record(
    conn: AsyncConnection,
    *,
    actor: str | None,
    action: str,
    subject: str,
    at: datetime,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Write one entry on ``conn``, in the transaction of the change it records."""
    await conn.execute(
        LOG.insert().values(at=at, actor=actor, action=action, subject=subject, detail=dict(detail) if detail else None)
    )


async def delete_recorded(
    conn: AsyncConnection,
    key: str,
    *,
    read: Callable[[AsyncConnection, str], Awaitable[Any | None]],
    delete: Callable[[AsyncConnection, str], Awaitable[bool]],
    summary: Callable[[Any], Mapping[str, Any] | None],
    kind: str,
    actor: str | None,
    at: datetime,
) -> bool:
    """Delete what ``read`` finds under ``key`` and record ``<kind>.delete`` with its ``summary`` as it was, on
    ``conn``; False (and no entry) when there was nothing to delete."""
    before = await read(conn, key)
    if before is None or not await delete(conn, key):
        return False
    detail = {"key": key, "before": summary(before)}
    await record(conn, actor=actor, action=f"{kind}.delete", subject=f"{kind}:{key}", at=at, detail=detail)
    return True


async def entries(
    conn: AsyncConnection,
    *,
    subject: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    limit: int = 100,
    before: int | None = None,
) -> list[Any]:
    """Newest first. A template's ``subject`` without ``@`` also matches its versions (``template:welcome`` finds
    ``template:welcome@3``); any other subject matches itself only (``user:a`` is not ``user:a@example.com``)."""
    query = sa.select(LOG).order_by(LOG.c.id.desc()).limit(limit)
    if subject is not None:
        if "@" in subject or not subject.startswith("template:"):
            query = query.where(LOG.c.subject == subject)
        else:
            pattern = subject.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "@%"
            query = query.where(sa.or_(LOG.c.subject == subject, LOG.c.subject.like(pattern, escape="\\")))
    if actor is not None:
        query = query.where(LOG.c.actor == actor)
    if action is not None:
        query = query.where(LOG.c.action == action)
    if before is not None:
        query = query.where(LOG.c.id < before)
    return list((await conn.execute(query)).all())
