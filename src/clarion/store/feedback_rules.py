"""Feedback rules and their firings in the store (``pipeline.feedback_rules`` decides; this reads and writes).

The enabled rules are read with one statement per fact batch (a click, a tracking call, an unsubscribe), never
one per event: the table holds what operators configured, a few dozen rows at most. Firings are written once per
batch with ``executemany``; whether a rule already fired for a message is one look-up per batch, narrowed by the
users' index."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from clarion.store import rollups
from clarion.store import tables as t
from clarion.store.driver import Conn, executemany, fetch

_R, _F, _M = t.feedback_rules, t.feedback_firings, t.messages


async def get(conn: Conn, key: str) -> Any | None:
    return (await conn.execute(sa.select(_R).where(_R.c.key == key))).first()


async def list_all(conn: Conn) -> list[Any]:
    return list((await conn.execute(sa.select(_R).order_by(_R.c.key))).all())


async def put(conn: Conn, key: str, definition: dict[str, Any], enabled: bool, now: datetime) -> bool:
    """Create or replace the rule ``key``; True when it was created."""
    if await get(conn, key) is None:
        values = {"key": key, "definition": definition, "enabled": enabled, "created_at": now, "updated_at": now}
        await conn.execute(_R.insert().values(values))
        return True
    await conn.execute(
        _R.update().where(_R.c.key == key).values(definition=definition, enabled=enabled, updated_at=now)
    )
    return False


async def delete(conn: Conn, key: str) -> bool:
    return bool((await conn.execute(_R.delete().where(_R.c.key == key))).rowcount)


async def enabled(conn: Conn) -> list[Any]:
    """The enabled rules' keys and definitions, by key."""
    query = sa.select(_R.c.key, _R.c.definition).where(_R.c.enabled.is_(True)).order_by(_R.c.key)
    return list(await fetch(conn, query))


async def messages(conn: Conn, message_ids: Iterable[str]) -> dict[str, tuple[str, str | None]]:
    """Each message's template and campaign (None for a triggered send)."""
    ids = sorted(set(message_ids))
    out: dict[str, tuple[str, str | None]] = {}
    for i in range(0, len(ids), rollups.CHUNK):
        query = sa.select(_M.c.id, _M.c.template_key, _M.c.campaign_key).where(_M.c.id.in_(ids[i : i + rollups.CHUNK]))
        out.update((row.id, (row.template_key, row.campaign_key)) for row in await fetch(conn, query))
    return out


async def fired(conn: Conn, rule_keys: Iterable[str], pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which ``(rule, message)`` pairs of ``rule_keys`` and the ``(user, message)`` ``pairs`` have fired before."""
    rules, users = sorted(set(rule_keys)), sorted({user for user, _ in pairs})
    wanted = {message for _, message in pairs}
    out: set[tuple[str, str]] = set()
    if not rules or not users:
        return out
    for i in range(0, len(users), rollups.CHUNK):
        query = sa.select(_F.c.rule_key, _F.c.message_id).where(
            _F.c.user_id.in_(users[i : i + rollups.CHUNK]), _F.c.rule_key.in_(rules), _F.c.message_id.is_not(None)
        )
        out.update((row.rule_key, row.message_id) for row in await fetch(conn, query) if row.message_id in wanted)
    return out


@functools.cache
def _record_of(dialect: str) -> Any:
    """The firings' insert for ``dialect``: a rule fires once per message, and of two transactions firing it for
    the same message at the same moment (two links clicked at once) the second records nothing."""
    statement = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(_F)
    return statement.on_conflict_do_nothing(index_elements=[_F.c.rule_key, _F.c.message_id])


async def record_firings(conn: Conn, rows: Sequence[dict[str, Any]]) -> None:
    """Insert firings: ``rule_key, user_id, message_id, trigger, detail, at``."""
    if rows:
        await executemany(conn, _record_of(conn.dialect.name), list(rows))


async def firings_of(conn: Conn, user_id: str, *, limit: int, before: int | None = None) -> list[Any]:
    """The user's firings, newest first (by id, so a page boundary is exact)."""
    query = sa.select(_F).where(_F.c.user_id == user_id).order_by(_F.c.id.desc()).limit(limit)
    if before is not None:
        query = query.where(_F.c.id < before)
    return list((await conn.execute(query)).all())
