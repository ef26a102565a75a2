"""What intake needs to know on every request — templates, rules, the providers per channel — read through a
short-lived cache so the hot path does not query for them each time.

Writes made through this process invalidate the cache at once; other processes see a change within
``ttl`` seconds."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from clarion.domain import approval, keywords, model, routing
from clarion.domain.policy import config
from clarion.store import policies, records, templates
from clarion.store import tables as t
from clarion.store.db import Database

_MISS = object()


class Catalog:
    def __init__(self, db: Database, *, ttl: float = 2.0) -> None:
        self.db = db
        self.ttl = ttl
        self._cache: dict[tuple[str, str], tuple[float, Any]] = {}
        self._compiled: dict[str, keywords.KeywordList] = {}

    def invalidate(self) -> None:
        self._cache.clear()

    def _fresh(self, kind: str, key: str) -> Any:
        """The cached value while it is fresh, else ``_MISS`` — checked before a loader is even built."""
        hit = self._cache.get((kind, key))
        return hit[1] if hit is not None and hit[0] > time.monotonic() else _MISS

    async def _cached(self, kind: str, key: str, load: Any) -> Any:
        hit = self._cache.get((kind, key))
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        value = await load()
        if value is not None:  # a miss is not remembered: what another process just created is found at once
            self._cache[(kind, key)] = (now + self.ttl, value)
        return value

    async def template(self, key: str) -> model.Template | None:
        """What sends of ``key`` use: its live (approved) version where its category needs approval, otherwise
        its latest; None for an unknown key. Raises ``approval.NotApproved`` (409 ``not_approved``) for a template
        that needs approval and has none approved yet. One query per load."""
        found = self._fresh("template", key)
        if found is _MISS:
            found = await self._load_template(key)
        if isinstance(found, approval.NotApproved):
            raise approval.NotApproved(key)
        return found

    async def _load_template(self, key: str) -> model.Template | approval.NotApproved | None:
        settings = await self.approval_settings()

        async def load() -> model.Template | approval.NotApproved | None:
            async with self.db.read() as conn:
                row = await templates.sendable_row(conn, key)
            if row is None:
                return None
            return templates.sendable(row, settings) or approval.NotApproved(key)

        return await self._cached("template", key, load)

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
        if (fresh := self._fresh("approval", "settings")) is not _MISS:
            return fresh

        async def load() -> approval.Settings:
            async with self.db.read() as conn:
                return await templates.load_settings(conn)

        return await self._cached("approval", "settings", load)

    async def rules(self, event: str) -> list[model.Rule]:
        async def load() -> list[model.Rule]:
            async with self.db.read() as conn:
                return await records.rules_for_event(conn, event)

        return await self._cached("rules", event, load)

    async def provider_choices(self) -> list[routing.ProviderChoice]:
        if (fresh := self._fresh("providers", "*")) is not _MISS:
            return fresh

        async def load() -> list[routing.ProviderChoice]:
            async with self.db.read() as conn:
                rows = (
                    await conn.execute(sa.select(t.providers.c.name, t.providers.c.channel, t.providers.c.enabled))
                ).all()
            return [routing.ProviderChoice(r.name, model.Channel(r.channel), r.enabled) for r in rows]

        return await self._cached("providers", "*", load)

    async def policy_settings(self) -> config.PolicySettings:
        if (fresh := self._fresh("policy", "settings")) is not _MISS:
            return fresh

        async def load() -> config.PolicySettings:
            async with self.db.read() as conn:
                return await policies.load_settings(conn)

        return await self._cached("policy", "settings", load)

    async def caps(self) -> list[config.Cap]:
        if (fresh := self._fresh("policy", "caps")) is not _MISS:
            return fresh

        async def load() -> list[config.Cap]:
            async with self.db.read() as conn:
                return [cap for cap in await policies.load_caps(conn) if cap.enabled]

        return await self._cached("policy", "caps", load)

    async def any_suppression(self) -> bool:
        """Whether any suppression exists (cached like the rest: this process's writes invalidate it)."""
        if (fresh := self._fresh("policy", "any_suppression")) is not _MISS:
            return bool(fresh)

        async def load() -> bool:
            async with self.db.read() as conn:
                return await policies.any_suppression(conn)

        return bool(await self._cached("policy", "any_suppression", load))

    async def keyword_lists(self) -> list[keywords.KeywordList]:
        """The enabled lists, compiled once per version: a refresh reads only (key, version) and compiles just the
        lists that changed, so a message only scans its text."""
        if (fresh := self._fresh("policy", "keyword_lists")) is not _MISS:
            return fresh

        async def load() -> list[keywords.KeywordList]:
            async with self.db.read() as conn:
                versions = await policies.keyword_list_versions(conn)
                stale = [k for k, v in versions.items() if k not in self._compiled or self._compiled[k].version != v]
                for spec in await policies.keyword_list_specs(conn, stale) if stale else []:
                    self._compiled[spec.key] = spec.compile()
            self._compiled = {k: v for k, v in self._compiled.items() if k in versions}
            return [self._compiled[k] for k in sorted(versions) if k in self._compiled]

        return await self._cached("policy", "keyword_lists", load)
