"""Reads and writes of the things operators and business systems configure: users, templates, rules,
providers, API keys. Thin: SQL in, domain values out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import model
from clarion.domain.policy import config
from clarion.store import tables as t
from clarion.store.db import Database, ListStatement, fetch


def user_from_row(row: Any, suppressions: tuple[config.Suppression, ...] | None = None) -> model.User:
    return model.User(
        user_id=row.user_id,
        attributes=row.attributes or {},
        tags=tuple(row.tags or ()),
        timezone=row.timezone,
        locale=row.locale,
        addresses=row.addresses or {},
        preferences=config.Preferences.from_json(row.preferences) if row.preferences else None,
        suppressions=suppressions,
    )


def template_from_row(row: Any) -> model.Template:
    """The stored ``channels`` hold the channel contents and, under ``default``, the content the channels stored
    as ``{}`` are adapted from; ``variants`` is a list of ``{name, weight, channels}`` in the same shape."""
    channels, default = _contents(row.channels)
    return model.Template(
        key=row.key,
        name=row.name,
        category=model.Category(row.category),
        priority=model.Priority(row.priority),
        channels=channels,
        department=row.department,
        owner=row.owner,
        version=row.version,
        policy=config.TemplatePolicy.from_json(row.policy) if row.policy else None,
        default=default,
        variants=tuple(
            model.Variant(v["name"], int(v["weight"]), *_contents(v.get("channels") or {}))
            for v in getattr(row, "variants", None) or ()
        ),
        ttl_seconds=getattr(row, "ttl_seconds", None),
        fallback=tuple(getattr(row, "fallback", None) or ()),
    )


def _contents(stored: dict[str, Any]) -> tuple[dict[model.Channel, dict[str, Any]], dict[str, Any] | None]:
    return {model.Channel(k): v for k, v in stored.items() if k != "default"}, stored.get("default")


def rule_from_row(row: Any) -> model.Rule:
    return model.Rule(
        key=row.key,
        event=row.event,
        template=row.template_key,
        condition=row.condition,
        channels=tuple(model.Channel(c) for c in row.channels) if row.channels else None,
        enabled=row.enabled,
    )


async def upsert(
    db: Database, conn: AsyncConnection, table: sa.Table, key: str, values: dict[str, Any], now: datetime
) -> bool:
    """Insert or update by primary key; returns True when the row was created."""
    pk = next(iter(table.primary_key.columns)).name
    existing = (await conn.execute(sa.select(table.c[pk]).where(table.c[pk] == key))).first()
    if existing is None:
        await conn.execute(table.insert().values({pk: key, **values, "created_at": now, "updated_at": now}))
        return True
    await conn.execute(table.update().where(table.c[pk] == key).values({**values, "updated_at": now}))
    return False


async def get_one(db: Database, table: sa.Table, key: str) -> Any:
    pk = next(iter(table.primary_key.columns))
    async with db.read() as conn:
        return (await conn.execute(sa.select(table).where(pk == key))).first()


async def list_all(db: Database, table: sa.Table, *, limit: int = 1000, after: str | None = None) -> list[Any]:
    pk = next(iter(table.primary_key.columns))
    query = sa.select(table).order_by(pk).limit(limit)
    if after is not None:
        query = query.where(pk > after)
    async with db.read() as conn:
        return list((await conn.execute(query)).all())


async def delete_one(db: Database, table: sa.Table, key: str) -> bool:
    pk = next(iter(table.primary_key.columns))

    async def job(conn: AsyncConnection) -> bool:
        return bool((await conn.execute(table.delete().where(pk == key))).rowcount)

    return await db.write(job)


_PROFILE = sa.select(
    *(t.users.c[name] for name in ("user_id", "attributes", "tags", "timezone", "locale", "addresses", "preferences"))
)
_USERS_BY_ID = ListStatement(lambda in_list: _PROFILE.where(in_list(t.users.c.user_id, "ids")))
_USER_BY_ID = _PROFILE.where(t.users.c.user_id == sa.bindparam("id"))


async def users_by_id(conn: AsyncConnection, user_ids: Iterable[str]) -> dict[str, model.User]:
    return {row.user_id: user_from_row(row) for row in await user_rows(conn, user_ids)}


async def user_rows(conn: AsyncConnection, user_ids: Iterable[str]) -> Sequence[Any]:
    """The profile rows of ``user_ids`` that exist (for ``user_from_row``)."""
    ids = list(set(user_ids))
    if not ids:
        return []
    if len(ids) == 1:  # the common case, and a statement that needs no per-call expansion
        return await fetch(conn, _USER_BY_ID, {"id": ids[0]})
    return await fetch(conn, _USERS_BY_ID.on(conn), {"ids": ids})


async def rules_for_event(conn: AsyncConnection, event: str) -> list[model.Rule]:
    rows = (
        await conn.execute(
            sa.select(t.rules).where(t.rules.c.event == event, t.rules.c.enabled.is_(True)).order_by(t.rules.c.key)
        )
    ).all()
    return [rule_from_row(r) for r in rows]


_TEMPLATE_OF = ListStatement(
    lambda in_list: sa.select(t.messages.c.id, t.messages.c.template_key).where(in_list(t.messages.c.id, "ids"))
)


async def message_templates(conn: AsyncConnection, message_ids: Iterable[str]) -> dict[str, str]:
    """Each message's template key."""
    ids = list(set(message_ids))
    if not ids:
        return {}
    return {row.id: row.template_key for row in await fetch(conn, _TEMPLATE_OF.on(conn), {"ids": ids})}
