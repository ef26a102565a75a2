"""User data in bulk: many profiles upserted at once, a tag added to or removed from many users, behaviour events.

Every write here is a fixed number of statements, whatever the number of users: one read of the rows that exist
(locked on PostgreSQL, so a concurrent writer cannot slip a change in between), then one ``executemany``. Profiles
are written with the dialect's ``INSERT … ON CONFLICT DO UPDATE`` (measured about twice as fast as separate
inserts and updates on both databases); merging happens in Python, so both databases run the same code."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from clarion.store import db
from clarion.store import tables as t

CHUNK = 5000
"""Ids per ``IN (…)`` look-up: well under both databases' limits on bound parameters."""

_PROFILE = ("attributes", "tags", "timezone", "locale", "addresses")


def _upsert(insert: Any) -> Any:
    return insert.on_conflict_do_update(
        index_elements=[t.users.c.user_id], set_={name: insert.excluded[name] for name in (*_PROFILE, "updated_at")}
    )


_UPSERT = {"sqlite": _upsert(sqlite.insert(t.users)), "postgresql": _upsert(postgresql.insert(t.users))}
_TAGS = (
    t.users.update()
    .where(t.users.c.user_id == sa.bindparam("b_user_id"))
    .values(tags=sa.bindparam("b_tags"), updated_at=sa.bindparam("b_updated_at"))
)


class Mode(enum.StrEnum):
    """How a bulk write treats a user that exists.

    ``replace``: the profile becomes exactly what is given, as ``PUT /v1/users/{user_id}`` does.
    ``merge``: only the fields given change: attributes and addresses key by key (a ``null`` value removes the
    key), tags, timezone and locale replaced when given. Preferences are kept either way."""

    MERGE = "merge"
    REPLACE = "replace"


@dataclass(frozen=True, slots=True)
class Profile:
    """One user's validated change: ``fields`` holds only what was given (``attributes``, ``tags``, ``timezone``,
    ``locale``, ``addresses``); in ``addresses`` a ``None`` channel means "remove it" when merging."""

    user_id: str
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    """Something a user did, kept for segments ("last time X happened", "count of X in N days")."""

    user_id: str
    event: str
    at: datetime
    properties: Mapping[str, Any] | None = None


@dataclass(slots=True)
class Upserted:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Tagged:
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)


def _chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


def _without_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def apply(current: Mapping[str, Any] | None, change: Profile, mode: Mode) -> dict[str, Any]:
    """The profile columns after ``change``; ``current`` is the stored profile (None for a new user)."""
    given = change.fields
    if mode is Mode.REPLACE or current is None:
        return {
            "attributes": dict(given.get("attributes") or {}),
            "tags": list(given.get("tags") or ()),
            "timezone": given.get("timezone"),
            "locale": given.get("locale"),
            "addresses": _without_none(given.get("addresses") or {}),
        }
    merged = {name: current[name] for name in _PROFILE}
    if "attributes" in given:
        merged["attributes"] = _without_none({**(current["attributes"] or {}), **given["attributes"]})
    if "addresses" in given:
        merged["addresses"] = _without_none({**(current["addresses"] or {}), **given["addresses"]})
    for name in ("tags", "timezone", "locale"):
        if name in given:
            merged[name] = given[name]
    return merged


async def _existing(conn: Any, ids: Sequence[str], *columns: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    query = sa.select(t.users.c.user_id, *(t.users.c[name] for name in columns)).with_for_update()
    for chunk in _chunks(ids):
        rows = await conn.execute(query.where(t.users.c.user_id.in_(chunk)))
        found.update((row.user_id, row) for row in rows)
    return found


async def upsert_users(conn: Any, changes: Sequence[Profile], mode: Mode, now: datetime) -> Upserted:
    """Create or update the users of ``changes`` in the caller's transaction. A user given twice gets both
    changes, in order."""
    ids = list(dict.fromkeys(change.user_id for change in changes))
    stored = await _existing(conn, ids, *(_PROFILE if mode is Mode.MERGE else ()))
    new: dict[str, dict[str, Any]] = {}
    changed: dict[str, dict[str, Any]] = {}
    for change in changes:
        uid = change.user_id
        if uid in stored:
            changed[uid] = apply(changed.get(uid) or stored[uid]._asdict(), change, mode)
        else:
            new[uid] = apply(new.get(uid), change, mode)
    rows = [{"user_id": uid, **values, "created_at": now, "updated_at": now} for uid, values in (new | changed).items()]
    if rows:  # one statement for both: a user created meanwhile by another process is updated, not an error
        await conn.execute(_UPSERT[conn.dialect.name], rows)
    return Upserted(created=list(new), updated=list(changed))


async def retag(conn: Any, tag: str, user_ids: Iterable[str], *, add: bool, now: datetime) -> Tagged:
    """Add ``tag`` to (or remove it from) the users in the caller's transaction; unknown ids are reported."""
    ids = list(dict.fromkeys(user_ids))
    stored = await _existing(conn, ids, "tags")
    result = Tagged()
    updates = []
    for uid in ids:
        row = stored.get(uid)
        if row is None:
            result.unknown.append(uid)
            continue
        tags = list(row.tags or ())
        if (tag in tags) == add:
            result.unchanged.append(uid)
            continue
        tags = [*tags, tag] if add else [x for x in tags if x != tag]
        updates.append({"b_user_id": uid, "b_tags": tags, "b_updated_at": now})
        result.changed.append(uid)
    if updates:
        await conn.execute(_TAGS, updates)
    return result


async def known_users(conn: Any, user_ids: Iterable[str]) -> set[str]:
    """Which of ``user_ids`` have a profile."""
    ids = list(dict.fromkeys(user_ids))
    found: set[str] = set()
    for chunk in _chunks(ids):
        rows = await conn.execute(sa.select(t.users.c.user_id).where(t.users.c.user_id.in_(chunk)))
        found.update(row.user_id for row in rows)
    return found


def record_events(events: Iterable[Event]) -> db.Inserts:
    """The write that stores ``events``: insert-only, so concurrent calls share one ``executemany``."""
    rows = [
        {"user_id": e.user_id, "event": e.event, "at": e.at, "properties": dict(e.properties) if e.properties else None}
        for e in events
    ]
    return db.Inserts({t.user_events: rows})
