"""Reads and writes of the policies' configuration: the settings document, frequency caps, keyword lists and
suppressions. SQL in, ``clarion.domain.policy.config`` values out; validation happens in the domain (``from_json``)
before anything is written."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import errors, ids, keywords, model
from clarion.domain.policy import config
from clarion.store import tables as t
from clarion.store.db import ListStatement, fetch

SETTINGS_KEY = "policies"


# -- settings ------------------------------------------------------------------------------------------------


async def load_settings(conn: AsyncConnection) -> config.PolicySettings:
    row = (
        await conn.execute(sa.select(t.policy_settings.c.value).where(t.policy_settings.c.key == SETTINGS_KEY))
    ).first()
    return config.PolicySettings.from_json(row.value) if row is not None else config.PolicySettings()


async def save_settings(conn: AsyncConnection, settings: config.PolicySettings, now: datetime) -> None:
    table = t.policy_settings
    value = settings.to_json()
    updated = await conn.execute(table.update().where(table.c.key == SETTINGS_KEY).values(value=value, updated_at=now))
    if not updated.rowcount:
        await conn.execute(table.insert().values(key=SETTINGS_KEY, value=value, updated_at=now))


# -- caps ----------------------------------------------------------------------------------------------------


async def load_caps(conn: AsyncConnection) -> list[config.Cap]:
    rows = (await conn.execute(sa.select(t.caps).order_by(t.caps.c.key))).all()
    return [config.Cap.from_json(row.key, row.definition) for row in rows]


async def get_cap(conn: AsyncConnection, key: str) -> config.Cap | None:
    row = (await conn.execute(sa.select(t.caps).where(t.caps.c.key == key))).first()
    return config.Cap.from_json(row.key, row.definition) if row is not None else None


async def put_cap(conn: AsyncConnection, cap: config.Cap, now: datetime) -> bool:
    """Insert or replace; True when created."""
    definition = {k: v for k, v in cap.to_json().items() if k not in ("key", "summary")}
    updated = await conn.execute(
        t.caps.update().where(t.caps.c.key == cap.key).values(definition=definition, updated_at=now)
    )
    if updated.rowcount:
        return False
    await conn.execute(t.caps.insert().values(key=cap.key, definition=definition, created_at=now, updated_at=now))
    return True


async def delete_cap(conn: AsyncConnection, key: str) -> bool:
    return bool((await conn.execute(t.caps.delete().where(t.caps.c.key == key))).rowcount)


# -- keyword lists -------------------------------------------------------------------------------------------

_KEYWORD_FIELDS = {"action", "words", "case_sensitive", "enabled", "description"}


@dataclass(frozen=True, slots=True)
class KeywordListSpec:
    """A keyword list as operators write it (validated; ``compile`` builds the automaton)."""

    key: str
    action: keywords.Action
    words: tuple[str, ...]
    case_sensitive: bool = False
    enabled: bool = True
    description: str | None = None
    version: int = 1

    @classmethod
    def from_json(cls, key: str, value: Any) -> KeywordListSpec:
        def bad(field: str, message: str) -> errors.InvalidInput:
            return errors.InvalidInput(f"{field}: {message}", code="invalid_keyword_list", details={"field": field})

        if not key or len(key) > config.CAP_KEY_MAX:
            raise bad("key", f"must be 1 to {config.CAP_KEY_MAX} characters")
        if not isinstance(value, dict):
            raise bad("body", "must be an object")
        unknown = sorted(set(value) - _KEYWORD_FIELDS)
        if unknown:
            raise bad(unknown[0], "unknown field")
        action = value.get("action")
        if action not in ("block", "mask"):
            raise bad("action", 'must be "block" or "mask"')
        words = value.get("words")
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise bad("words", "must be a list of strings")
        for field in ("case_sensitive", "enabled"):
            if not isinstance(value.get(field, False), bool):
                raise bad(field, "must be true or false")
        description = value.get("description")
        if description is not None and not isinstance(description, str):
            raise bad("description", "must be a string")
        spec = cls(
            key,
            action,
            tuple(dict.fromkeys(w.strip() for w in words if w.strip())),
            value.get("case_sensitive", False),
            value.get("enabled", True),
            description,
        )
        try:
            spec.compile()
        except ValueError as exc:
            raise bad("words", str(exc)) from None
        return spec

    def compile(self) -> keywords.KeywordList:
        return keywords.KeywordList(
            self.key, self.words, action=self.action, version=self.version, case_sensitive=self.case_sensitive
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "action": self.action,
            "words": list(self.words),
            "case_sensitive": self.case_sensitive,
            "enabled": self.enabled,
            "description": self.description,
            "version": self.version,
        }


def _spec(row: Any) -> KeywordListSpec:
    return KeywordListSpec(
        row.key, row.action, tuple(row.words), row.case_sensitive, row.enabled, row.description, row.version
    )


async def keyword_list_specs(conn: AsyncConnection, keys: Sequence[str] | None = None) -> list[KeywordListSpec]:
    """All lists, or those named by ``keys``."""
    query = sa.select(t.keyword_lists).order_by(t.keyword_lists.c.key)
    if keys is not None:
        query = query.where(t.keyword_lists.c.key.in_(list(keys)))
    return [_spec(row) for row in (await conn.execute(query)).all()]


async def keyword_list_versions(conn: AsyncConnection) -> dict[str, int]:
    """(key → version) of the enabled lists: enough to tell whether compiled automata are still current."""
    query = sa.select(t.keyword_lists.c.key, t.keyword_lists.c.version).where(t.keyword_lists.c.enabled.is_(True))
    return {row.key: row.version for row in (await conn.execute(query)).all()}


async def get_keyword_list(conn: AsyncConnection, key: str) -> KeywordListSpec | None:
    row = (await conn.execute(sa.select(t.keyword_lists).where(t.keyword_lists.c.key == key))).first()
    return _spec(row) if row is not None else None


async def put_keyword_list(conn: AsyncConnection, spec: KeywordListSpec, now: datetime) -> KeywordListSpec:
    """Insert, or replace with the version bumped; returns what was stored."""
    table = t.keyword_lists
    current = (await conn.execute(sa.select(table.c.version).where(table.c.key == spec.key))).first()
    values = {
        "action": spec.action,
        "words": list(spec.words),
        "case_sensitive": spec.case_sensitive,
        "enabled": spec.enabled,
        "description": spec.description,
    }
    if current is None:
        await conn.execute(table.insert().values(key=spec.key, version=1, created_at=now, updated_at=now, **values))
        version = 1
    else:
        version = current.version + 1
        await conn.execute(
            table.update().where(table.c.key == spec.key).values(version=version, updated_at=now, **values)
        )
    return KeywordListSpec(
        spec.key, spec.action, spec.words, spec.case_sensitive, spec.enabled, spec.description, version
    )


async def delete_keyword_list(conn: AsyncConnection, key: str) -> bool:
    return bool((await conn.execute(t.keyword_lists.delete().where(t.keyword_lists.c.key == key))).rowcount)


# -- suppressions --------------------------------------------------------------------------------------------


def _suppression(row: Any) -> config.Suppression:
    return config.Suppression(
        id=row.id,
        user_id=row.user_id,
        address=row.address,
        channel=model.Channel(row.channel) if row.channel else None,
        category=model.Category(row.category) if row.category else None,
        reason=row.reason,
        source=row.source,
        created_at=row.created_at,
    )


_S = t.suppressions
# the suppressions of the users ``users`` or of the addresses ``addresses``
_SUPPRESSIONS_FOR = ListStatement(
    lambda in_list: sa.select(_S).where(sa.or_(in_list(_S.c.user_id, "users"), in_list(_S.c.address, "addresses")))
)


async def suppressions_for(
    conn: AsyncConnection, user_ids: Sequence[str], addresses: Sequence[str]
) -> list[config.Suppression]:
    """Every suppression of these users or these (normalized) addresses, in one query."""
    if not user_ids and not addresses:
        return []
    parameters = {"users": list(user_ids), "addresses": list(addresses)}
    rows = await fetch(conn, _SUPPRESSIONS_FOR.on(conn), parameters)
    return [_suppression(row) for row in rows]


async def any_suppression(conn: AsyncConnection) -> bool:
    return (await conn.execute(sa.select(t.suppressions.c.id).limit(1))).first() is not None


async def add_suppression(
    conn: AsyncConnection,
    *,
    user_id: str | None,
    address: str | None,
    channel: model.Channel | None,
    category: model.Category | None,
    reason: str | None,
    source: str,
    now: datetime,
) -> tuple[config.Suppression, bool]:
    """Record a suppression; an identical one (same target, channel and category) is kept, not doubled.
    Returns it and whether it was created."""
    table = t.suppressions
    address = config.normalize_address(address) if address is not None else None
    same = sa.select(table).where(
        table.c.user_id.is_(None) if user_id is None else table.c.user_id == user_id,
        table.c.address.is_(None) if address is None else table.c.address == address,
        table.c.channel.is_(None) if channel is None else table.c.channel == channel.value,
        table.c.category.is_(None) if category is None else table.c.category == category.value,
    )
    existing = (await conn.execute(same)).first()
    if existing is not None:
        return _suppression(existing), False
    row = {
        "id": ids.new_id(),
        "user_id": user_id,
        "address": address,
        "channel": channel.value if channel else None,
        "category": category.value if category else None,
        "reason": reason,
        "source": source,
        "created_at": now,
    }
    await conn.execute(table.insert().values(row))
    return _suppression(SimpleNamespace(**row)), True


async def list_suppressions(
    conn: AsyncConnection,
    *,
    user_id: str | None = None,
    address: str | None = None,
    limit: int = 100,
    after: str | None = None,
) -> list[config.Suppression]:
    table = t.suppressions
    query = sa.select(table).order_by(table.c.id).limit(limit)
    if user_id is not None:
        query = query.where(table.c.user_id == user_id)
    if address is not None:
        query = query.where(table.c.address == config.normalize_address(address))
    if after is not None:
        query = query.where(table.c.id > after)
    return [_suppression(row) for row in (await conn.execute(query)).all()]


async def delete_suppression(conn: AsyncConnection, suppression_id: str) -> bool:
    return bool((await conn.execute(t.suppressions.delete().where(t.suppressions.c.id == suppression_id))).rowcount)
