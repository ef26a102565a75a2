"""What intake needs to know on every request — templates, rules, policies — read through a
short-lived cache so the hot path does not query for them each time.

Writes made through this process invalidate the cache at once; other processes see a change within
``ttl`` seconds."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from clarion.domain import approval, keywords, model
from clarion.domain.policy import config
from clarion.store import policies, records, templates
from clarion.store.db import Database


class Catalog:
    def __init__(self, db: Database, *, ttl: float = 2.0) -> None:
        self.db = db
        self.ttl = ttl
        self._cache: dict[tuple[str, str], tuple[float, Any]] = {}
        self._compiled: dict[str, keywords.KeywordList] = {}

    def invalidate(self) -> None:
        self._cache.clear()

    async def _cached(self, kind: str, key: str, read: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """The value of ``(kind, key)``: the cached one while fresh, else ``read(conn, *args)`` on a read
        connection. ``read`` is a plain function, so a hit — nearly every call — builds no closure and no second
        coroutine."""
        hit = self._cache.get((kind, key))
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        async with self.db.read() as conn:
            value = await read(conn, *args)
        if value is not None:  # a miss is not remembered: what another process just created is found at once
            self._cache[(kind, key)] = (now + self.ttl, value)
        return value

    async def template(self, key: str) -> model.Template | None:
        """What sends of ``key`` use: its live (approved) version where its category needs approval, otherwise
        its latest; None for an unknown key. Raises ``approval.NotApproved`` (409 ``not_approved``) for a template
        that needs approval and has none approved yet. One query per load."""
        found = await self._cached("template", key, self._read_template, key)
        if isinstance(found, approval.NotApproved):
            raise approval.NotApproved(key)
        return found

    async def _read_template(self, conn: Any, key: str) -> model.Template | approval.NotApproved | None:
        row = await templates.sendable_row(conn, key)
        if row is None:
            return None
        # the settings on the same connection: asking the cache could take a second connection while holding this one
        return templates.sendable(row, await templates.load_settings(conn)) or approval.NotApproved(key)

    async def templates(self, keys: Sequence[str]) -> dict[str, model.Template]:
        """The sendable templates among ``keys``; unknown and not yet approved ones are left out."""
        found = {}
        for key in set(keys):
            try:
                template = await self.template(key)
            except approval.NotApproved:
                continue
            if template is not None:
                found[key] = template
        return found

    async def approval_settings(self) -> approval.Settings:
        return await self._cached("approval", "settings", templates.load_settings)

    async def rules(self, event: str) -> list[model.Rule]:
        return await self._cached("rules", event, records.rules_for_event, event)

    async def policy_settings(self) -> config.PolicySettings:
        return await self._cached("policy", "settings", policies.load_settings)

    async def caps(self) -> list[config.Cap]:
        return await self._cached("policy", "caps", _enabled_caps)

    async def any_suppression(self) -> bool:
        """Whether any suppression exists (cached like the rest: this process's writes invalidate it)."""
        return bool(await self._cached("policy", "any_suppression", policies.any_suppression))

    async def keyword_lists(self) -> list[keywords.KeywordList]:
        """The enabled lists, compiled once per version: a refresh reads only (key, version) and compiles just the
        lists that changed, so a message only scans its text."""
        return await self._cached("policy", "keyword_lists", self._read_keyword_lists)

    async def _read_keyword_lists(self, conn: Any) -> list[keywords.KeywordList]:
        versions = await policies.keyword_list_versions(conn)
        stale = [k for k, v in versions.items() if k not in self._compiled or self._compiled[k].version != v]
        for spec in await policies.keyword_list_specs(conn, stale) if stale else []:
            self._compiled[spec.key] = spec.compile()
        self._compiled = {k: v for k, v in self._compiled.items() if k in versions}
        return [self._compiled[k] for k in sorted(versions) if k in self._compiled]


async def _enabled_caps(conn: Any) -> list[config.Cap]:
    return [cap for cap in await policies.load_caps(conn) if cap.enabled]
