"""Reads and writes for audiences: saved segments, ID lists and their members, and the paged reads that build and
refresh the in-memory segment index.

Big reads are keyset-paged (``WHERE key > last ORDER BY key LIMIT n``) rather than held open as one cursor: each
page is a short query on a primary key or index, on SQLite and PostgreSQL alike, and no transaction stays open
while the index is built."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.store import tables as t
from clarion.store.db import Database, executemany, insert_of

PAGE = 10_000
_IN_CHUNK = 500
#: uploads with more addresses than this are matched by one pass over the users instead of IN queries
_SCAN_ABOVE = 2_000


@dataclass(frozen=True, slots=True)
class IndexedUser:
    user_id: str
    attributes: dict[str, Any]
    tags: list[str]
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class TrackedEvent:
    id: int
    user_id: str
    event: str
    at: datetime


# -- segments ------------------------------------------------------------------------------------------------


async def get_segment(conn: AsyncConnection, key: str) -> Any:
    return (await conn.execute(sa.select(t.segments).where(t.segments.c.key == key))).first()


async def list_segments(conn: AsyncConnection) -> list[Any]:
    return list((await conn.execute(sa.select(t.segments).order_by(t.segments.c.key))).all())


async def put_segment(conn: AsyncConnection, key: str, name: str | None, definition: Any, now: datetime) -> bool:
    """Insert or replace; True when created."""
    table = t.segments
    updated = await conn.execute(
        table.update().where(table.c.key == key).values(name=name, definition=definition, updated_at=now)
    )
    if updated.rowcount:
        return False
    await conn.execute(table.insert().values(key=key, name=name, definition=definition, created_at=now, updated_at=now))
    return True


async def delete_segment(conn: AsyncConnection, key: str) -> bool:
    return bool((await conn.execute(t.segments.delete().where(t.segments.c.key == key))).rowcount)


# -- ID lists ------------------------------------------------------------------------------------------------


async def get_id_list(conn: AsyncConnection, key: str) -> Any:
    return (await conn.execute(sa.select(t.id_lists).where(t.id_lists.c.key == key))).first()


async def list_id_lists(conn: AsyncConnection) -> list[Any]:
    return list((await conn.execute(sa.select(t.id_lists).order_by(t.id_lists.c.key))).all())


async def id_list_versions(conn: AsyncConnection) -> dict[str, datetime]:
    """key → updated_at of every list: enough to tell which lists another process replaced or deleted."""
    query = sa.select(t.id_lists.c.key, t.id_lists.c.updated_at)
    return {row.key: row.updated_at for row in (await conn.execute(query)).all()}


async def put_id_list(
    conn: AsyncConnection,
    key: str,
    *,
    name: str | None,
    kind: str,
    members: Iterable[str],
    unknown: int,
    now: datetime,
) -> bool:
    """Create or replace a list and all its members; True when created."""
    members = sorted(set(members))
    table = t.id_lists
    values = {"name": name, "kind": kind, "size": len(members), "unknown": unknown, "updated_at": now}
    updated = await conn.execute(table.update().where(table.c.key == key).values(values))
    created = not updated.rowcount
    if created:
        await conn.execute(table.insert().values(key=key, created_at=now, **values))
    else:
        await conn.execute(t.id_list_members.delete().where(t.id_list_members.c.list_key == key))
    for start in range(0, len(members), PAGE):
        page = members[start : start + PAGE]
        await executemany(conn, insert_of(t.id_list_members), [{"list_key": key, "user_id": u} for u in page])
    return created


async def delete_id_list(conn: AsyncConnection, key: str) -> bool:
    await conn.execute(t.id_list_members.delete().where(t.id_list_members.c.list_key == key))
    return bool((await conn.execute(t.id_lists.delete().where(t.id_lists.c.key == key))).rowcount)


async def list_members(db: Database, key: str) -> list[str]:
    """Every member of one list, paged by user id."""
    members: list[str] = []
    table = t.id_list_members
    last = ""
    while True:
        query = (
            sa.select(table.c.user_id)
            .where(table.c.list_key == key, table.c.user_id > last)
            .order_by(table.c.user_id)
            .limit(PAGE)
        )
        async with db.read() as conn:
            page = [row.user_id for row in (await conn.execute(query)).all()]
        members += page
        if len(page) < PAGE:
            return members
        last = page[-1]


# -- resolving uploads to users ------------------------------------------------------------------------------


async def existing_user_ids(db: Database, user_ids: Sequence[str]) -> set[str]:
    """Those of ``user_ids`` that are users (primary-key look-ups in chunks)."""
    found: set[str] = set()
    for start in range(0, len(user_ids), _IN_CHUNK):
        chunk = list(user_ids[start : start + _IN_CHUNK])
        async with db.read() as conn:
            rows = await conn.execute(sa.select(t.users.c.user_id).where(t.users.c.user_id.in_(chunk)))
            found.update(row.user_id for row in rows.all())
    return found


def _address(channel: str) -> Any:
    value = t.users.c.addresses[channel].as_string()
    return sa.func.lower(value) if channel == "email" else value


async def users_by_address(db: Database, channel: str, addresses: set[str]) -> dict[str, list[str]]:
    """Address (as stored under ``users.addresses[channel]``; e-mail lower-cased) → the users that have it.

    Addresses are not indexed, so a large upload is matched in one paged pass over the users rather than one
    table scan per chunk of an IN list."""
    found: dict[str, list[str]] = {}
    column = _address(channel).label("address")
    if len(addresses) <= _SCAN_ABOVE:
        wanted = sorted(addresses)
        for start in range(0, len(wanted), _IN_CHUNK):
            query = sa.select(t.users.c.user_id, column).where(column.in_(wanted[start : start + _IN_CHUNK]))
            async with db.read() as conn:
                for row in (await conn.execute(query)).all():
                    found.setdefault(row.address, []).append(row.user_id)
        return found
    last = ""
    while True:
        query = (
            sa.select(t.users.c.user_id, column).where(t.users.c.user_id > last).order_by(t.users.c.user_id).limit(PAGE)
        )
        async with db.read() as conn:
            page = (await conn.execute(query)).all()
        for row in page:
            if row.address in addresses:
                found.setdefault(row.address, []).append(row.user_id)
        if len(page) < PAGE:
            return found
        last = page[-1].user_id


# -- reads for the index -------------------------------------------------------------------------------------


def _by_bytes(conn: Any, column: Any) -> Any:
    """Order by the UTF-8 bytes of a key, as the index's bulk loader wants (SQLite's BINARY already does)."""
    return column.collate("C") if conn.dialect.name == "postgresql" else column


async def user_pages(db: Database, page_size: int = PAGE) -> AsyncIterator[list[IndexedUser]]:
    """Every user, in pages ordered by the UTF-8 bytes of the user id."""
    column = t.users.c.user_id
    last: str | None = None
    while True:
        async with db.read() as conn:
            query = sa.select(column, t.users.c.attributes, t.users.c.tags, t.users.c.updated_at)
            if last is not None:
                query = query.where(_by_bytes(conn, column) > last)
            query = query.order_by(_by_bytes(conn, column)).limit(page_size)
            page = [
                IndexedUser(r.user_id, r.attributes or {}, r.tags or [], r.updated_at) for r in await _all(conn, query)
            ]
        if page:
            yield page
        if len(page) < page_size:
            return
        last = page[-1].user_id


async def user_ids_page(db: Database, after: str | None, page_size: int = PAGE) -> list[str]:
    """One page of user ids (primary key only), in the same order as ``user_pages``."""
    column = t.users.c.user_id
    async with db.read() as conn:
        query = sa.select(column)
        if after is not None:
            query = query.where(_by_bytes(conn, column) > after)
        query = query.order_by(_by_bytes(conn, column)).limit(page_size)
        return [row.user_id for row in await _all(conn, query)]


async def users(db: Database, user_ids: Sequence[str]) -> list[IndexedUser]:
    """The given users that exist."""
    found: list[IndexedUser] = []
    table = t.users
    for start in range(0, len(user_ids), _IN_CHUNK):
        query = sa.select(table.c.user_id, table.c.attributes, table.c.tags, table.c.updated_at).where(
            table.c.user_id.in_(list(user_ids[start : start + _IN_CHUNK]))
        )
        async with db.read() as conn:
            found += [
                IndexedUser(r.user_id, r.attributes or {}, r.tags or [], r.updated_at) for r in await _all(conn, query)
            ]
    return found


async def users_updated_since(db: Database, since: datetime, after_user: str | None, limit: int) -> list[IndexedUser]:
    """Users changed at or after ``since`` (after ``after_user`` among those changed exactly at ``since``), oldest
    change first, at most ``limit``: keyset pages over (updated_at, user_id)."""
    table = t.users
    condition = table.c.updated_at >= since
    if after_user is not None:
        condition = sa.or_(
            table.c.updated_at > since, sa.and_(table.c.updated_at == since, table.c.user_id > after_user)
        )
    query = (
        sa.select(table.c.user_id, table.c.attributes, table.c.tags, table.c.updated_at)
        .where(condition)
        .order_by(table.c.updated_at, table.c.user_id)
        .limit(limit)
    )
    async with db.read() as conn:
        return [IndexedUser(r.user_id, r.attributes or {}, r.tags or [], r.updated_at) for r in await _all(conn, query)]


async def last_event_id(db: Database) -> int:
    async with db.read() as conn:
        return int((await conn.execute(sa.select(sa.func.max(t.user_events.c.id)))).scalar() or 0)


async def last_events(
    db: Database, after: str | None, through: str | None, up_to_id: int
) -> list[tuple[str, str, datetime]]:
    """(user_id, event, last time) of the users with ids in (after, through] (unbounded when None), counting
    events with id ≤ ``up_to_id``."""
    table = t.user_events
    async with db.read() as conn:
        column = _by_bytes(conn, table.c.user_id)
        query = sa.select(table.c.user_id, table.c.event, sa.func.max(table.c.at).label("at")).where(
            table.c.id <= up_to_id
        )
        if after is not None:
            query = query.where(column > after)
        if through is not None:
            query = query.where(column <= through)
        query = query.group_by(table.c.user_id, table.c.event)
        rows = await _all(conn, query)
    return [(row.user_id, row.event, _aware(row.at)) for row in rows]


async def events_between_users(
    db: Database, after: str | None, through: str | None, since: datetime, up_to_id: int
) -> list[tuple[str, str, datetime]]:
    """(user_id, event, at) of every event at or after ``since`` with id ≤ ``up_to_id``, of the users with ids in
    (after, through]."""
    table = t.user_events
    async with db.read() as conn:
        column = _by_bytes(conn, table.c.user_id)
        query = sa.select(table.c.user_id, table.c.event, table.c.at).where(table.c.at >= since, table.c.id <= up_to_id)
        if after is not None:
            query = query.where(column > after)
        if through is not None:
            query = query.where(column <= through)
        rows = await _all(conn, query)
    return [(row.user_id, row.event, row.at) for row in rows]


async def events_after(db: Database, after_id: int, also: Sequence[int], limit: int) -> list[TrackedEvent]:
    """Events with id > ``after_id`` (or among ``also``: ids seen missing earlier), by id, at most ``limit``."""
    table = t.user_events
    condition = table.c.id > after_id
    if also:
        condition = sa.or_(condition, table.c.id.in_(list(also)))
    query = (
        sa.select(table.c.id, table.c.user_id, table.c.event, table.c.at)
        .where(condition)
        .order_by(table.c.id)
        .limit(limit)
    )
    async with db.read() as conn:
        return [TrackedEvent(r.id, r.user_id, r.event, r.at) for r in await _all(conn, query)]


async def member_pages(db: Database) -> AsyncIterator[tuple[str, list[str]]]:
    """(list key, all its members) for every ID list."""
    async with db.read() as conn:
        keys = [row.key for row in (await conn.execute(sa.select(t.id_lists.c.key).order_by(t.id_lists.c.key))).all()]
    for key in keys:
        yield key, await list_members(db, key)


async def _all(conn: Any, query: Any) -> list[Any]:
    return list((await conn.execute(query)).all())


def _aware(value: Any) -> datetime:
    """``max(at)`` as an aware datetime, whatever the driver hands back for an aggregate."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
