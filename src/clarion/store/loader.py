"""Coalesced look-ups: concurrent requests that each need a few rows share one query.

Under load many send requests are in flight at once, and each needs its recipients' profiles and their
suppressions. Asking the database once per request costs more in statement overhead than the look-up itself;
a ``Coalescing`` loader gathers the keys requested during one turn of the event loop and fetches them with one
``IN`` query. A caller waits at most that one turn."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Generic, TypeVar

from clarion.domain import model
from clarion.domain.policy import config
from clarion.domain.policy.decision import addresses_of
from clarion.store import policies, records
from clarion.store.db import Database

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Coalescing(Generic[K, V]):
    """``load_many(keys)`` → the values found for those keys; ``fetch(keys)`` answers a whole turn's keys."""

    def __init__(self, fetch: Callable[[list[K]], Awaitable[dict[K, V]]], *, max_batch: int = 1000) -> None:
        self.fetch = fetch
        self.max_batch = max_batch
        self._pending: dict[K, list[asyncio.Future[V | None]]] = {}
        self._scheduled = False

    async def load_many(self, keys: Iterable[K]) -> dict[K, V]:
        """The values of ``keys`` that exist (keys without one are simply absent)."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        if len(wanted) >= self.max_batch:  # a big request is a batch by itself
            return await self.fetch(wanted)
        loop = asyncio.get_running_loop()
        futures = []
        for key in wanted:
            future: asyncio.Future[V | None] = loop.create_future()
            self._pending.setdefault(key, []).append(future)
            futures.append(future)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(lambda: asyncio.ensure_future(self._flush()))
        found = await asyncio.gather(*futures)
        return {key: value for key, value in zip(wanted, found, strict=True) if value is not None}

    async def _flush(self) -> None:
        pending, self._pending, self._scheduled = self._pending, {}, False
        try:
            values = await self.fetch(list(pending))
        except Exception as exc:
            for futures in pending.values():
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
            return
        for key, futures in pending.items():
            for future in futures:
                if not future.done():
                    future.set_result(values.get(key))


class UserLoader(Coalescing[str, model.User]):
    """Profiles with their suppressions (by user id and by any of their addresses): the policy stage needs
    both for every recipient, and one read answers both for a whole turn's recipients."""

    def __init__(
        self,
        db: Database,
        *,
        max_batch: int = 1000,
        any_suppression: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        async def fetch(ids: list[str]) -> dict[str, model.User]:
            # most deployments have no suppression at all most of the time: then there is nothing to read
            skip = any_suppression is not None and not await any_suppression()
            async with db.read() as conn:
                users = await records.users_by_id(conn, ids)
                if not users or skip:
                    return {k: dataclasses.replace(u, suppressions=()) for k, u in users.items()}
                addresses = {u.user_id: _addresses(u) for u in users.values()}
                everyone = sorted({a for found in addresses.values() for a in found})
                suppressions = await policies.suppressions_for(conn, list(users), everyone)
            if not suppressions:
                return {k: dataclasses.replace(u, suppressions=()) for k, u in users.items()}
            return {
                k: dataclasses.replace(
                    u,
                    suppressions=tuple(
                        s for s in suppressions if s.user_id == k or (s.user_id is None and s.address in addresses[k])
                    ),
                )
                for k, u in users.items()
            }

        super().__init__(fetch, max_batch=max_batch)


def _addresses(user: model.User) -> set[str]:
    return {config.normalize_address(a) for value in user.addresses.values() for a in addresses_of(value)}
